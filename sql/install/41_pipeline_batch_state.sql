-- A pipeline's state (active or paused), changed after the batch in hand:
-- the worker takes the batch lock before it reads the state, so once the
-- change commits no batch of the worker goes on under the old state.  The
-- update to 0.5.0 replaces this function in place (see Makefile).

CREATE FUNCTION sessionize.sessionize_set_pipeline_state(caller regrole, name text, new_state text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	-- after the batch in hand: the worker reads the state after that lock
	PERFORM sessionize.sessionize_read_pipeline(caller, name, true);
	UPDATE sessionize.pipelines p SET state = new_state WHERE p.name = sessionize_set_pipeline_state.name;
END $$;
