-- sessionize 0.4.0 -> 0.5.0.  This script is assembled with the install
-- fragments that define what 0.5.0 makes anew (see Makefile), so an upgraded
-- database has the objects of a fresh one.
\echo Use "ALTER EXTENSION sessionize UPDATE TO '0.5.0'" to load this file. \quit

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
