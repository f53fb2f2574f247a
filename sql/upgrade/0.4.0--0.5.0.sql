-- sessionize 0.4.0 -> 0.5.0.  This script is assembled with the install
-- fragments that define what 0.5.0 makes anew (see Makefile), so an upgraded
-- database has the objects of a fresh one.
\echo Use "ALTER EXTENSION sessionize UPDATE TO '0.5.0'" to load this file. \quit

-- pipeline_status counts a logical source's backlog from its slot, says how
-- long its oldest change has waited, and shows a reader of a pipeline's
-- results (grant_reader()) its backlog (43_pipeline_backlog.sql,
-- 44_pipeline_status.sql).
DROP VIEW sessionize.pipeline_status, sessionize.pipeline_dead_letters;
DROP FUNCTION sessionize.pipeline_backlog(text), sessionize.sessionize_pipeline_backlog(regrole, text),
	sessionize.sessionize_pipeline_service(bigint, text, integer);

-- grant_reader() also grants the views of a pipeline's profiles
-- (47_profiles.sql makes it anew).
DROP FUNCTION sessionize.sessionize_set_reader(regrole, text, regrole, boolean);

-- sessions() keeps its state as a session_set (11_session_set.sql), which
-- Citus can combine on its workers; its internal transition and final
-- functions go with the old aggregates.
DROP AGGREGATE sessionize.sessions(timestamptz, interval);
DROP AGGREGATE sessionize.sessions(timestamptz, interval, interval);
DROP AGGREGATE sessionize.sessions(timestamp, interval);
DROP AGGREGATE sessionize.sessions(timestamp, interval, interval);
DROP FUNCTION sessionize.sessionize_sessions_transition(internal, timestamptz, interval);
DROP FUNCTION sessionize.sessionize_sessions_transition(internal, timestamptz, interval, interval);
DROP FUNCTION sessionize.sessionize_sessions_transition(internal, timestamp, interval);
DROP FUNCTION sessionize.sessionize_sessions_transition(internal, timestamp, interval, interval);
DROP FUNCTION sessionize.sessionize_sessions_final(internal);
DROP FUNCTION sessionize.sessionize_local_sessions_final(internal);

-- pause_pipeline() and resume_pipeline() wait for the batch in hand, and the
-- worker reads a pipeline's state after the batch lock, so that no batch of
-- the worker takes events once pause_pipeline() has returned.  The Makefile
-- appends 41_pipeline_batch_state.sql as CREATE OR REPLACE: the function
-- keeps its dependents.
