-- sessionize 0.4.0 -> 0.5.0.  This script is assembled with the install
-- fragments that define what 0.5.0 makes anew (see Makefile), so an upgraded
-- database has the objects of a fresh one.
\echo Use "ALTER EXTENSION sessionize UPDATE TO '0.5.0'" to load this file. \quit

-- A reader of a pipeline's results (grant_reader()) sees its backlog in
-- pipeline_status: the view and what it calls are made anew from
-- 44_pipeline_status.sql.
DROP VIEW sessionize.pipeline_status, sessionize.pipeline_dead_letters;
DROP FUNCTION sessionize.sessionize_pipeline_service(bigint, text, integer),
	sessionize.sessionize_pipeline_backlog(regrole, text);
