-- sessionize 0.3.0 -> 0.4.0.  This script is assembled with the install
-- fragments that define what 0.4.0 makes anew (see Makefile), so an upgraded
-- database has the objects of a fresh one.
\echo Use "ALTER EXTENSION sessionize UPDATE TO '0.4.0'" to load this file. \quit

-- alter_pipeline() can change a pipeline's measures: measures added later
-- than a stored session's earliest event are NULL for it.
ALTER TABLE sessionize.pipeline_state ADD COLUMN measures_version integer NOT NULL DEFAULT 0;
ALTER TABLE sessionize.pipeline_measures ADD COLUMN added_in integer NOT NULL DEFAULT 0;

-- The functions that make and alter a pipeline's tables are made anew from
-- 43_pipeline_tables.sql, alter_pipeline() with a new argument.
DROP FUNCTION
	sessionize.alter_pipeline(text,interval,interval,text[],boolean,boolean),
	sessionize.sessionize_alter_pipeline(regrole,text,interval,interval,text[],boolean,boolean),
	sessionize.sessionize_make_pipeline(text,regclass,name,name,interval,interval,interval,text[],name,regrole,boolean,text,boolean,name,text,text,text),
	sessionize.sessionize_make_pipeline_views(text,regrole);

-- pipeline_status says why a pipeline waits for a worker; workers are
-- matched to pipelines by database and id (44_pipeline_status.sql).
DROP VIEW sessionize.pipeline_status, sessionize.pipeline_dead_letters;

-- create_pipeline()'s body names the publications to make when they are
-- missing (41_create_pipeline.sql).
DROP FUNCTION sessionize.sessionize_create_pipeline(regrole, text, regclass, name, name, interval, interval, interval,
													text[], name, interval, name, text, boolean, name, boolean, text, text);

-- A peek by hand goes on past changes the checkpoint has passed, so that a
-- slot whose restart point lags still gives a full batch (41_peek_changes.sql).
DROP FUNCTION sessionize.sessionize_peek_changes(sessionize.pipelines, name, pg_lsn, pg_lsn, pg_lsn, bigint, integer);

-- The sessions of a time range are read through an index, as in a pipeline
-- made by 0.4.0.
DO $$
DECLARE
	pipeline record;
BEGIN
	FOR pipeline IN SELECT p.name FROM sessionize.pipelines p LOOP
		EXECUTE pg_catalog.format('CREATE INDEX ON sessionize.%I (session_start)', pipeline.name OPERATOR(pg_catalog.||) '_stored_sessions');
	END LOOP;
END $$;
