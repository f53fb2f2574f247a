-- sessionize 0.2.0 -> 0.3.0: the batch engine in C.  This script is
-- assembled with the install fragments that define what 0.3.0 makes anew
-- (see Makefile), so an upgraded database has the objects of a fresh one.
\echo Use "ALTER EXTENSION sessionize UPDATE TO '0.3.0'" to load this file. \quit

-- Functions are made anew below, create_pipeline() with a new argument: the
-- grants of roles on them (an administrator's of create_pipeline(), say)
-- are noted here and given again at the end.
CREATE TABLE sessionize.upgrade_function_grants AS
SELECT p.proname, a.grantee::regrole::text AS grantee, a.is_grantable
FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
WHERE p.pronamespace OPERATOR(pg_catalog.=) 'sessionize'::regnamespace
  AND a.privilege_type OPERATOR(pg_catalog.=) 'EXECUTE'
  AND a.grantee OPERATOR(pg_catalog.<>) 0 AND a.grantee OPERATOR(pg_catalog.<>) p.proowner;

-- The dedup of a batch is C code that the pipelines call too.
DROP FUNCTION sessionize.first_seen_many(text, uuid[], interval),
	sessionize.sessionize_first_seen_many(text, uuid[], interval),
	sessionize.sessionize_check_user_namespace(text);

-- Every pipeline function is made anew, except those that decode a logical
-- source's rows: their owners hold grants on them.
DROP VIEW sessionize.pipeline_status, sessionize.pipeline_dead_letters;
DROP FUNCTION
	sessionize.alter_pipeline(text,interval,interval,text[],boolean,boolean),
	sessionize.create_pipeline(text,regclass,name,name,interval,interval,interval,text[],name,interval,name,text,boolean,name,boolean,text),
	sessionize.drop_pipeline(text),
	sessionize.pause_pipeline(text),
	sessionize.pipeline_backlog(text),
	sessionize.replay_late(text,integer),
	sessionize.resume_pipeline(text),
	sessionize.run_pipeline(text,integer),
	sessionize.sessionize_alter_pipeline(regrole,text,interval,interval,text[],boolean,boolean),
	sessionize.sessionize_apply_batch(sessionize.pipelines,timestamp with time zone,bigint,bigint,boolean),
	sessionize.sessionize_apply_range(sessionize.pipelines,timestamp with time zone,bigint,bigint),
	sessionize.sessionize_check_owner(sessionize.pipelines),
	sessionize.sessionize_check_pipeline_name(text),
	sessionize.sessionize_check_time_zone(text),
	sessionize.sessionize_close_sessions(sessionize.pipelines,timestamp with time zone,timestamp with time zone),
	sessionize.sessionize_create_pipeline(regrole,text,regclass,name,name,interval,interval,interval,text[],name,interval,name,text,boolean,name,boolean,text),
	sessionize.sessionize_drop_pipeline(regrole,text),
	sessionize.sessionize_event_expressions(sessionize.pipelines,text,text),
	sessionize.sessionize_fill_batch(sessionize.pipelines,text,anyelement),
	sessionize.sessionize_index_source_time(sessionize.pipelines),
	sessionize.sessionize_key_type(sessionize.pipelines),
	sessionize.sessionize_lock_pipeline_batch(text),
	sessionize.sessionize_make_pipeline(text,regclass,name,name,interval,interval,interval,text[],name,regrole,boolean,text,boolean,name,text,text),
	sessionize.sessionize_make_pipeline_views(text,regrole),
	sessionize.sessionize_pause_pipeline(regrole,text),
	sessionize.sessionize_pipeline_backlog(regrole,text),
	sessionize.sessionize_publish_source(regclass),
	sessionize.sessionize_read_pipeline(regrole,text,boolean),
	sessionize.sessionize_record_failure(text,text),
	sessionize.sessionize_replay_late(regrole,text,integer),
	sessionize.sessionize_resume_pipeline(regrole,text),
	sessionize.sessionize_rows_as(regrole,text,anyelement),
	sessionize.sessionize_run_pipeline(regrole,text,integer),
	sessionize.sessionize_set_pipeline_state(regrole,text,text),
	sessionize.sessionize_slot_name(text),
	sessionize.sessionize_untrusted_code(sessionize.pipelines),
	sessionize.sessionize_use_time_zone(sessionize.pipelines);
