
-- A batch lives in memory now: the batch tables of 0.2.0 go.
DO $$
DECLARE
	pipeline record;
BEGIN
	FOR pipeline IN SELECT p.name FROM sessionize.pipelines p LOOP
		EXECUTE pg_catalog.format('DROP TABLE IF EXISTS sessionize.%I', pipeline.name OPERATOR(pg_catalog.||) '_batch');
	END LOOP;
END $$;

