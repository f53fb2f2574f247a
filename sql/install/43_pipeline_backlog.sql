-- sessionize: what waits in a pipeline's source, for pipeline_status and for
-- those who watch a pipeline fall behind.

CREATE FUNCTION sessionize.sessionize_pgoutput_commit_time(data bytea)
RETURNS timestamptz
AS 'MODULE_PATHNAME', 'pgoutput_commit_time'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION sessionize.sessionize_pgoutput_commit_time(bytea) IS
	'when the transaction a pgoutput BEGIN message opens committed, or NULL for another message';

CREATE FUNCTION sessionize.pipeline_waiting(name text, OUT backlog bigint, OUT oldest_waiting_at timestamptz)
AS 'MODULE_PATHNAME', 'call_as_extension'
LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION sessionize.pipeline_waiting(text) IS
	'events waiting in a pipeline''s source: rows of its staging table, or changes of a logical source committed after its checkpoint (with when the oldest was committed); see README';

CREATE FUNCTION sessionize.pipeline_backlog(name text)
RETURNS bigint
AS 'MODULE_PATHNAME', 'call_as_extension'
LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION sessionize.pipeline_backlog(text) IS
	'events waiting in a pipeline''s source (pipeline_waiting()''s backlog)';

-- Most changes a count of a logical source's backlog decodes.  Peeking
-- decodes from the slot's restart point, and pipeline_status must stay cheap.
CREATE FUNCTION sessionize.sessionize_backlog_peek_limit()
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN 1000000;

-- A count holds the pipeline's batch lock while it peeks at the slot, so
-- that a batch that starts meanwhile waits instead of failing on a slot in
-- use; it lets the lock go as soon as it has counted.
CREATE FUNCTION sessionize.sessionize_try_lock_pipeline_batch_briefly(name text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'try_lock_pipeline_batch_briefly'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION sessionize.sessionize_try_lock_pipeline_batch_briefly(text) IS
	'takes a pipeline''s batch lock for the session if no one holds it, without waiting';

CREATE FUNCTION sessionize.sessionize_unlock_pipeline_batch_briefly(name text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'unlock_pipeline_batch_briefly'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION sessionize.sessionize_unlock_pipeline_batch_briefly(text) IS
	'lets go of the batch lock sessionize_try_lock_pipeline_batch_briefly() took';
COMMENT ON FUNCTION sessionize.sessionize_backlog_peek_limit() IS
	'most pgoutput messages a count of a logical source''s backlog decodes';

-- Counts as the pipeline's owner: whatever the table runs (row security,
-- a rule that made it a view) runs with the owner's rights.  For a caller
-- with those rights, or one that reads the pipeline's results
-- (grant_reader()): how many events wait says how fresh the results are,
-- and nothing of the events.  A logical source is counted from its slot,
-- which holds every change the checkpoint has not passed, while no worker
-- serves the pipeline (one that does decodes the slot itself, and keeps up)
-- and no batch runs.
CREATE FUNCTION sessionize.sessionize_pipeline_waiting(caller regrole, name text,
													   OUT backlog bigint, OUT oldest_waiting_at timestamptz)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	pipeline sessionize.pipelines;
	state sessionize.pipeline_state;
	slot name;
BEGIN
	IF coalesce(has_table_privilege(caller, to_regclass(format('sessionize.%I', name || '_sessions')), 'SELECT'), false) THEN
		SELECT * INTO pipeline FROM sessionize.pipelines p WHERE p.name = sessionize_pipeline_waiting.name;
	ELSE
		pipeline := sessionize.sessionize_read_pipeline(caller, name, false);
	END IF;
	IF pipeline.source_kind = 'table' THEN
		IF NOT EXISTS (SELECT FROM pg_class WHERE oid = pipeline.source AND relkind = 'r') THEN
			RETURN;
		END IF;
		BEGIN
			SELECT r.waiting INTO backlog
			FROM sessionize.sessionize_rows_as(pipeline.owner, format('SELECT count(*) FROM ONLY %s', pipeline.source), NULL::integer)
				 AS r(waiting bigint);
		EXCEPTION WHEN insufficient_privilege OR undefined_table OR raise_exception OR query_canceled THEN
			-- one owner's table cannot make pipeline_status fail for everyone
			RETURN;
		END;
		RETURN;
	END IF;
	SELECT * INTO state FROM sessionize.pipeline_state s WHERE s.pipeline = pipeline.name;
	IF (SELECT w.worker_pid FROM sessionize.sessionize_pipeline_service(pipeline.id, pipeline.state, state.failures) w) IS NOT NULL
	   OR NOT sessionize.sessionize_try_lock_pipeline_batch_briefly(pipeline.name) THEN
		RETURN;
	END IF;
	slot := format('sessionize_%s_%s', (SELECT d.oid FROM pg_database d WHERE d.datname = current_database()), pipeline.name);
	BEGIN
		WITH peeked AS (
			SELECT p.position, m.kind, m.relation,
				   max(m.commit_lsn) OVER (ORDER BY p.position) AS commit_lsn,
				   sessionize.sessionize_pgoutput_commit_time(p.data) AS commit_time, p.lsn
			FROM pg_logical_slot_peek_binary_changes(slot, pg_current_wal_flush_lsn(),
													 sessionize.sessionize_backlog_peek_limit(),
													 'proto_version', '1',
													 'publication_names', 'sessionize_pipelines,sessionize_pipeline_updates')
				 WITH ORDINALITY AS p(lsn, xid, data, position),
				 sessionize.sessionize_pgoutput_message(p.data) m),
		relevant AS (
			SELECT r.commit_lsn, r.lsn,
				   row_number() OVER (PARTITION BY r.commit_lsn, r.lsn ORDER BY r.position) AS lsn_row
			FROM peeked r
			WHERE r.relation = pipeline.source::oid AND (r.kind = 'I' OR (r.kind = 'U' AND pipeline.updates_as_events))),
		pending AS (
			SELECT * FROM relevant r
			WHERE (r.commit_lsn, r.lsn, r.lsn_row) > (coalesce(state.checkpoint_commit_lsn, '0/0'),
													  coalesce(state.checkpoint_lsn, '0/0'),
													  coalesce(state.checkpoint_lsn_row, 0)))
		SELECT (SELECT count(*) FROM pending),
			   (SELECT b.commit_time FROM peeked b
				WHERE b.kind = 'B' AND b.commit_lsn = (SELECT min(p.commit_lsn) FROM pending p))
		INTO backlog, oldest_waiting_at;
	EXCEPTION
		WHEN object_in_use OR undefined_object OR object_not_in_prerequisite_state
			 OR feature_not_supported OR insufficient_privilege THEN
			-- someone else decodes from the slot, or there is none to read
			backlog := NULL;
			oldest_waiting_at := NULL;
		WHEN query_canceled THEN
			PERFORM sessionize.sessionize_unlock_pipeline_batch_briefly(pipeline.name);
			RAISE;
		WHEN OTHERS THEN
			PERFORM sessionize.sessionize_unlock_pipeline_batch_briefly(pipeline.name);
			RAISE;
	END;
	PERFORM sessionize.sessionize_unlock_pipeline_batch_briefly(pipeline.name);
END $$;

CREATE FUNCTION sessionize.sessionize_pipeline_backlog(caller regrole, name text)
RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	SELECT w.backlog FROM sessionize.sessionize_pipeline_waiting(caller, name) w;
END;
