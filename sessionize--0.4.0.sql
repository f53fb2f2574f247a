-- sessionize install script, assembled from sql/install/*.sql in name order.
\echo Use "CREATE EXTENSION sessionize" to load this file. \quit

-- CREATE EXTENSION makes schema sessionize when it does not exist, and
-- otherwise installs into the one it finds: one that another role made
-- beforehand, and may still control, would be adopted.  Accepted are a
-- schema this transaction created (its row's xmin is a transaction id this
-- backend holds) and the empty schema an earlier DROP EXTENSION left
-- (PostgreSQL does not drop the schema CREATE EXTENSION made): owned by a
-- superuser, holding nothing, where no other role may create.
DO $$
BEGIN
	IF NOT EXISTS (
		SELECT FROM pg_catalog.pg_namespace n, pg_catalog.pg_locks l
		WHERE n.nspname OPERATOR(pg_catalog.=) 'sessionize'
		  AND l.locktype OPERATOR(pg_catalog.=) 'transactionid'
		  AND l.transactionid OPERATOR(pg_catalog.=) n.xmin
		  AND l.pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid()
		  AND l.granted)
	   AND NOT EXISTS (
		SELECT FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) n.nspowner
		WHERE n.nspname OPERATOR(pg_catalog.=) 'sessionize' AND r.rolsuper
		  AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d
						  WHERE d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_namespace'::pg_catalog.regclass
							AND d.refobjid OPERATOR(pg_catalog.=) n.oid
							AND d.classid OPERATOR(pg_catalog.<>) 'pg_catalog.pg_extension'::pg_catalog.regclass)
		  AND NOT EXISTS (SELECT FROM pg_catalog.aclexplode(n.nspacl) a
						  WHERE a.privilege_type OPERATOR(pg_catalog.=) 'CREATE'
							AND a.grantee OPERATOR(pg_catalog.<>) n.nspowner)) THEN
		RAISE EXCEPTION 'schema "sessionize" already exists'
			USING ERRCODE = 'duplicate_schema',
				  DETAIL = 'sessionize installs into a schema it creates itself and never adopts one that exists.',
				  HINT = 'Drop or rename schema sessionize, then create the extension.';
	END IF;
END $$;

COMMENT ON SCHEMA sessionize IS 'session windows, event dedup, idempotent slot upserts and pipelines';
-- Everyone may use what the schema offers; each object says who may do what.
GRANT USAGE ON SCHEMA sessionize TO PUBLIC;
-- Session windows: window functions session_id() and session_start(), and the
-- mergeable aggregate sessions().  All three call the one C implementation in
-- src/sessions.c.

CREATE TYPE sessionize.session AS (
	started_at timestamptz,
	ended_at timestamptz,
	events bigint
);
COMMENT ON TYPE sessionize.session IS 'one session: first event time, last event time, number of events';

CREATE TYPE sessionize.local_session AS (
	started_at timestamp,
	ended_at timestamp,
	events bigint
);
COMMENT ON TYPE sessionize.local_session IS 'one session of timestamp (without time zone) events';

-- Window functions -----------------------------------------------------------

CREATE FUNCTION sessionize.session_id(ts timestamptz, gap interval)
RETURNS bigint
AS 'MODULE_PATHNAME', 'session_id'
LANGUAGE C WINDOW IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.session_id(ts timestamptz, gap interval, max_duration interval)
RETURNS bigint
AS 'MODULE_PATHNAME', 'session_id'
LANGUAGE C WINDOW IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.session_id(ts timestamp, gap interval)
RETURNS bigint
AS 'MODULE_PATHNAME', 'session_id'
LANGUAGE C WINDOW IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.session_id(ts timestamp, gap interval, max_duration interval)
RETURNS bigint
AS 'MODULE_PATHNAME', 'session_id'
LANGUAGE C WINDOW IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.session_start(ts timestamptz, gap interval)
RETURNS timestamptz
AS 'MODULE_PATHNAME', 'session_start'
LANGUAGE C WINDOW IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.session_start(ts timestamptz, gap interval, max_duration interval)
RETURNS timestamptz
AS 'MODULE_PATHNAME', 'session_start'
LANGUAGE C WINDOW IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.session_start(ts timestamp, gap interval)
RETURNS timestamp
AS 'MODULE_PATHNAME', 'session_start'
LANGUAGE C WINDOW IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.session_start(ts timestamp, gap interval, max_duration interval)
RETURNS timestamp
AS 'MODULE_PATHNAME', 'session_start'
LANGUAGE C WINDOW IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION sessionize.session_id(timestamptz, interval) IS
	'window function: 1-based number of the row''s session within the partition';
COMMENT ON FUNCTION sessionize.session_id(timestamptz, interval, interval) IS
	'window function: 1-based number of the row''s session, sessions cut at max_duration';
COMMENT ON FUNCTION sessionize.session_id(timestamp, interval) IS
	'window function: 1-based number of the row''s session within the partition';
COMMENT ON FUNCTION sessionize.session_id(timestamp, interval, interval) IS
	'window function: 1-based number of the row''s session, sessions cut at max_duration';
COMMENT ON FUNCTION sessionize.session_start(timestamptz, interval) IS
	'window function: first event time of the row''s session';
COMMENT ON FUNCTION sessionize.session_start(timestamptz, interval, interval) IS
	'window function: first event time of the row''s session, sessions cut at max_duration';
COMMENT ON FUNCTION sessionize.session_start(timestamp, interval) IS
	'window function: first event time of the row''s session';
COMMENT ON FUNCTION sessionize.session_start(timestamp, interval, interval) IS
	'window function: first event time of the row''s session, sessions cut at max_duration';

-- The sessions() aggregate ---------------------------------------------------

CREATE FUNCTION sessionize.sessionize_sessions_transition(internal, timestamptz, interval)
RETURNS internal
AS 'MODULE_PATHNAME', 'sessions_transition'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_sessions_transition(internal, timestamptz, interval, interval)
RETURNS internal
AS 'MODULE_PATHNAME', 'sessions_transition'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_sessions_transition(internal, timestamp, interval)
RETURNS internal
AS 'MODULE_PATHNAME', 'sessions_transition'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_sessions_transition(internal, timestamp, interval, interval)
RETURNS internal
AS 'MODULE_PATHNAME', 'sessions_transition'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_sessions_combine(internal, internal)
RETURNS internal
AS 'MODULE_PATHNAME', 'sessions_combine'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_sessions_serialize(internal)
RETURNS bytea
AS 'MODULE_PATHNAME', 'sessions_serialize'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_sessions_deserialize(bytea, internal)
RETURNS internal
AS 'MODULE_PATHNAME', 'sessions_deserialize'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_sessions_final(internal)
RETURNS sessionize.session[]
AS 'MODULE_PATHNAME', 'sessions_final'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_local_sessions_final(internal)
RETURNS sessionize.local_session[]
AS 'MODULE_PATHNAME', 'sessions_final'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE AGGREGATE sessionize.sessions(ts timestamptz, gap interval) (
	SFUNC = sessionize.sessionize_sessions_transition,
	STYPE = internal,
	FINALFUNC = sessionize.sessionize_sessions_final,
	COMBINEFUNC = sessionize.sessionize_sessions_combine,
	SERIALFUNC = sessionize.sessionize_sessions_serialize,
	DESERIALFUNC = sessionize.sessionize_sessions_deserialize,
	PARALLEL = SAFE
);

CREATE AGGREGATE sessionize.sessions(ts timestamptz, gap interval, max_duration interval) (
	SFUNC = sessionize.sessionize_sessions_transition,
	STYPE = internal,
	FINALFUNC = sessionize.sessionize_sessions_final,
	COMBINEFUNC = sessionize.sessionize_sessions_combine,
	SERIALFUNC = sessionize.sessionize_sessions_serialize,
	DESERIALFUNC = sessionize.sessionize_sessions_deserialize,
	PARALLEL = SAFE
);

CREATE AGGREGATE sessionize.sessions(ts timestamp, gap interval) (
	SFUNC = sessionize.sessionize_sessions_transition,
	STYPE = internal,
	FINALFUNC = sessionize.sessionize_local_sessions_final,
	COMBINEFUNC = sessionize.sessionize_sessions_combine,
	SERIALFUNC = sessionize.sessionize_sessions_serialize,
	DESERIALFUNC = sessionize.sessionize_sessions_deserialize,
	PARALLEL = SAFE
);

CREATE AGGREGATE sessionize.sessions(ts timestamp, gap interval, max_duration interval) (
	SFUNC = sessionize.sessionize_sessions_transition,
	STYPE = internal,
	FINALFUNC = sessionize.sessionize_local_sessions_final,
	COMBINEFUNC = sessionize.sessionize_sessions_combine,
	SERIALFUNC = sessionize.sessionize_sessions_serialize,
	DESERIALFUNC = sessionize.sessionize_sessions_deserialize,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE sessionize.sessions(timestamptz, interval) IS
	'sessions of the group''s events, ordered by start; input order does not matter';
COMMENT ON AGGREGATE sessionize.sessions(timestamptz, interval, interval) IS
	'sessions of the group''s events cut at max_duration, ordered by start';
COMMENT ON AGGREGATE sessionize.sessions(timestamp, interval) IS
	'sessions of the group''s events, ordered by start; input order does not matter';
COMMENT ON AGGREGATE sessionize.sessions(timestamp, interval, interval) IS
	'sessions of the group''s events cut at max_duration, ordered by start';
-- Measures a session can carry that PostgreSQL has no aggregate for: the
-- value at the first (last) event, and an approximate distinct count.  The
-- states are those the pipelines keep (src/measures.c), so that a pipeline's
-- measures equal these aggregates over its events.

CREATE FUNCTION sessionize.sessionize_first_transition(internal, anyelement, timestamptz)
RETURNS internal
AS 'MODULE_PATHNAME', 'first_transition'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_last_transition(internal, anyelement, timestamptz)
RETURNS internal
AS 'MODULE_PATHNAME', 'last_transition'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_timed_value_combine(internal, internal)
RETURNS internal
AS 'MODULE_PATHNAME', 'timed_value_combine'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_timed_value_serialize(internal)
RETURNS bytea
AS 'MODULE_PATHNAME', 'timed_value_serialize'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_timed_value_deserialize(bytea, internal)
RETURNS internal
AS 'MODULE_PATHNAME', 'timed_value_deserialize'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_timed_value_final(internal, anyelement, timestamptz)
RETURNS anyelement
AS 'MODULE_PATHNAME', 'timed_value_final'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE AGGREGATE sessionize.first(value anyelement, ts timestamptz) (
	SFUNC = sessionize.sessionize_first_transition,
	STYPE = internal,
	FINALFUNC = sessionize.sessionize_timed_value_final,
	FINALFUNC_EXTRA,
	COMBINEFUNC = sessionize.sessionize_timed_value_combine,
	SERIALFUNC = sessionize.sessionize_timed_value_serialize,
	DESERIALFUNC = sessionize.sessionize_timed_value_deserialize,
	PARALLEL = SAFE
);
COMMENT ON AGGREGATE sessionize.first(anyelement, timestamptz) IS
	'the value at the earliest time (nulls ignored); among values of that time, the least';

CREATE AGGREGATE sessionize.last(value anyelement, ts timestamptz) (
	SFUNC = sessionize.sessionize_last_transition,
	STYPE = internal,
	FINALFUNC = sessionize.sessionize_timed_value_final,
	FINALFUNC_EXTRA,
	COMBINEFUNC = sessionize.sessionize_timed_value_combine,
	SERIALFUNC = sessionize.sessionize_timed_value_serialize,
	DESERIALFUNC = sessionize.sessionize_timed_value_deserialize,
	PARALLEL = SAFE
);
COMMENT ON AGGREGATE sessionize.last(anyelement, timestamptz) IS
	'the value at the latest time (nulls ignored); among values of that time, the greatest';

CREATE FUNCTION sessionize.sessionize_distinct_transition(internal, anyelement)
RETURNS internal
AS 'MODULE_PATHNAME', 'distinct_transition'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_distinct_combine(internal, internal)
RETURNS internal
AS 'MODULE_PATHNAME', 'distinct_combine'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_distinct_serialize(internal)
RETURNS bytea
AS 'MODULE_PATHNAME', 'distinct_serialize'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_distinct_deserialize(bytea, internal)
RETURNS internal
AS 'MODULE_PATHNAME', 'distinct_deserialize'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_distinct_final(internal)
RETURNS bigint
AS 'MODULE_PATHNAME', 'distinct_final'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE AGGREGATE sessionize.approx_count_distinct(value anyelement) (
	SFUNC = sessionize.sessionize_distinct_transition,
	STYPE = internal,
	FINALFUNC = sessionize.sessionize_distinct_final,
	COMBINEFUNC = sessionize.sessionize_distinct_combine,
	SERIALFUNC = sessionize.sessionize_distinct_serialize,
	DESERIALFUNC = sessionize.sessionize_distinct_deserialize,
	PARALLEL = SAFE
);
COMMENT ON AGGREGATE sessionize.approx_count_distinct(anyelement) IS
	'distinct non-null values: exact up to 128, then a HyperLogLog estimate of 4,096 registers (standard error 1.6%)';
-- Behavioral analytics: ClickHouse's windowFunnel, retention, sequenceMatch,
-- sequenceCount and sequenceNextNode as mergeable aggregates (src/funnels.c,
-- src/sequences.c).  Their states are the events of a group
-- (src/behavior_events.c); results are computed over the events in a total
-- order, so they never depend on input order or parallel workers.

CREATE FUNCTION sessionize.sessionize_behavior_combine(internal, internal)
RETURNS internal
AS 'MODULE_PATHNAME', 'behavior_combine'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_behavior_serialize(internal)
RETURNS bytea
AS 'MODULE_PATHNAME', 'behavior_serialize'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- window_funnel, window_funnel_events -------------------------------------

CREATE FUNCTION sessionize.sessionize_funnel_transition(internal, interval, timestamptz, boolean[])
RETURNS internal
AS 'MODULE_PATHNAME', 'funnel_transition'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_funnel_transition(internal, interval, text, timestamptz, boolean[])
RETURNS internal
AS 'MODULE_PATHNAME', 'funnel_transition'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_funnel_transition(internal, interval, timestamp, boolean[])
RETURNS internal
AS 'MODULE_PATHNAME', 'funnel_transition'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_funnel_transition(internal, interval, text, timestamp, boolean[])
RETURNS internal
AS 'MODULE_PATHNAME', 'funnel_transition'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_funnel_final(internal)
RETURNS integer
AS 'MODULE_PATHNAME', 'funnel_final'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_funnel_events_final(internal)
RETURNS timestamptz[]
AS 'MODULE_PATHNAME', 'funnel_events_final'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_funnel_local_events_final(internal)
RETURNS timestamp[]
AS 'MODULE_PATHNAME', 'funnel_events_final'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_funnel_deserialize(bytea, internal)
RETURNS internal
AS 'MODULE_PATHNAME', 'funnel_deserialize'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE AGGREGATE sessionize.window_funnel("window" interval, ts timestamptz, VARIADIC steps boolean[]) (
	SFUNC = sessionize.sessionize_funnel_transition,
	STYPE = internal,
	FINALFUNC = sessionize.sessionize_funnel_final,
	COMBINEFUNC = sessionize.sessionize_behavior_combine,
	SERIALFUNC = sessionize.sessionize_behavior_serialize,
	DESERIALFUNC = sessionize.sessionize_funnel_deserialize,
	PARALLEL = SAFE
);
COMMENT ON AGGREGATE sessionize.window_funnel(interval, timestamptz, boolean[]) IS
	'the deepest step reached by a chain of events satisfying steps 1, 2, ... within window of its first event (ClickHouse windowFunnel)';

CREATE AGGREGATE sessionize.window_funnel("window" interval, mode text, ts timestamptz, VARIADIC steps boolean[]) (
	SFUNC = sessionize.sessionize_funnel_transition,
	STYPE = internal,
	FINALFUNC = sessionize.sessionize_funnel_final,
	COMBINEFUNC = sessionize.sessionize_behavior_combine,
	SERIALFUNC = sessionize.sessionize_behavior_serialize,
	DESERIALFUNC = sessionize.sessionize_funnel_deserialize,
	PARALLEL = SAFE
);
COMMENT ON AGGREGATE sessionize.window_funnel(interval, text, timestamptz, boolean[]) IS
	'window_funnel with modes: a comma-separated list of strict_order, strict_deduplication, strict_increase, strict_once, allow_reentry';

CREATE AGGREGATE sessionize.window_funnel("window" interval, ts timestamp, VARIADIC steps boolean[]) (
	SFUNC = sessionize.sessionize_funnel_transition,
	STYPE = internal,
	FINALFUNC = sessionize.sessionize_funnel_final,
	COMBINEFUNC = sessionize.sessionize_behavior_combine,
	SERIALFUNC = sessionize.sessionize_behavior_serialize,
	DESERIALFUNC = sessionize.sessionize_funnel_deserialize,
	PARALLEL = SAFE
);
COMMENT ON AGGREGATE sessionize.window_funnel(interval, timestamp, boolean[]) IS
	'the deepest step reached by a chain of events satisfying steps 1, 2, ... within window of its first event (ClickHouse windowFunnel)';

CREATE AGGREGATE sessionize.window_funnel("window" interval, mode text, ts timestamp, VARIADIC steps boolean[]) (
	SFUNC = sessionize.sessionize_funnel_transition,
	STYPE = internal,
	FINALFUNC = sessionize.sessionize_funnel_final,
	COMBINEFUNC = sessionize.sessionize_behavior_combine,
	SERIALFUNC = sessionize.sessionize_behavior_serialize,
	DESERIALFUNC = sessionize.sessionize_funnel_deserialize,
	PARALLEL = SAFE
);
COMMENT ON AGGREGATE sessionize.window_funnel(interval, text, timestamp, boolean[]) IS
	'window_funnel with modes: a comma-separated list of strict_order, strict_deduplication, strict_increase, strict_once, allow_reentry';

CREATE AGGREGATE sessionize.window_funnel_events("window" interval, mode text, ts timestamptz, VARIADIC steps boolean[]) (
	SFUNC = sessionize.sessionize_funnel_transition,
	STYPE = internal,
	FINALFUNC = sessionize.sessionize_funnel_events_final,
	COMBINEFUNC = sessionize.sessionize_behavior_combine,
	SERIALFUNC = sessionize.sessionize_behavior_serialize,
	DESERIALFUNC = sessionize.sessionize_funnel_deserialize,
	PARALLEL = SAFE
);
COMMENT ON AGGREGATE sessionize.window_funnel_events(interval, text, timestamptz, boolean[]) IS
	'the times of the steps of the chain window_funnel reports';

CREATE AGGREGATE sessionize.window_funnel_events("window" interval, mode text, ts timestamp, VARIADIC steps boolean[]) (
	SFUNC = sessionize.sessionize_funnel_transition,
	STYPE = internal,
	FINALFUNC = sessionize.sessionize_funnel_local_events_final,
	COMBINEFUNC = sessionize.sessionize_behavior_combine,
	SERIALFUNC = sessionize.sessionize_behavior_serialize,
	DESERIALFUNC = sessionize.sessionize_funnel_deserialize,
	PARALLEL = SAFE
);
COMMENT ON AGGREGATE sessionize.window_funnel_events(interval, text, timestamp, boolean[]) IS
	'the times of the steps of the chain window_funnel reports';

-- retention -----------------------------------------------------------------

CREATE FUNCTION sessionize.sessionize_retention_transition(internal, boolean[])
RETURNS internal
AS 'MODULE_PATHNAME', 'retention_transition'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_retention_final(internal)
RETURNS boolean[]
AS 'MODULE_PATHNAME', 'retention_final'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_retention_deserialize(bytea, internal)
RETURNS internal
AS 'MODULE_PATHNAME', 'retention_deserialize'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE AGGREGATE sessionize.retention(VARIADIC conditions boolean[]) (
	SFUNC = sessionize.sessionize_retention_transition,
	STYPE = internal,
	FINALFUNC = sessionize.sessionize_retention_final,
	COMBINEFUNC = sessionize.sessionize_behavior_combine,
	SERIALFUNC = sessionize.sessionize_behavior_serialize,
	DESERIALFUNC = sessionize.sessionize_retention_deserialize,
	PARALLEL = SAFE
);
COMMENT ON AGGREGATE sessionize.retention(boolean[]) IS
	'element 1: condition 1 held in some row; element i: conditions 1 and i each held in some row (ClickHouse retention)';

-- sequence_match, sequence_count, sequence_match_events ---------------------

CREATE FUNCTION sessionize.sessionize_sequence_transition(internal, text, timestamptz, boolean[])
RETURNS internal
AS 'MODULE_PATHNAME', 'sequence_transition'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_sequence_transition(internal, text, timestamp, boolean[])
RETURNS internal
AS 'MODULE_PATHNAME', 'sequence_transition'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_sequence_match_final(internal)
RETURNS boolean
AS 'MODULE_PATHNAME', 'sequence_match_final'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_sequence_count_final(internal)
RETURNS bigint
AS 'MODULE_PATHNAME', 'sequence_count_final'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_sequence_events_final(internal)
RETURNS timestamptz[]
AS 'MODULE_PATHNAME', 'sequence_events_final'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_sequence_local_events_final(internal)
RETURNS timestamp[]
AS 'MODULE_PATHNAME', 'sequence_events_final'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_sequence_deserialize(bytea, internal)
RETURNS internal
AS 'MODULE_PATHNAME', 'sequence_deserialize'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE AGGREGATE sessionize.sequence_match(pattern text, ts timestamptz, VARIADIC conditions boolean[]) (
	SFUNC = sessionize.sessionize_sequence_transition,
	STYPE = internal,
	FINALFUNC = sessionize.sessionize_sequence_match_final,
	COMBINEFUNC = sessionize.sessionize_behavior_combine,
	SERIALFUNC = sessionize.sessionize_behavior_serialize,
	DESERIALFUNC = sessionize.sessionize_sequence_deserialize,
	PARALLEL = SAFE
);
COMMENT ON AGGREGATE sessionize.sequence_match(text, timestamptz, boolean[]) IS
	'whether the events match the pattern: (?N), ., .*, (?t op seconds) (ClickHouse sequenceMatch)';

CREATE AGGREGATE sessionize.sequence_count(pattern text, ts timestamptz, VARIADIC conditions boolean[]) (
	SFUNC = sessionize.sessionize_sequence_transition,
	STYPE = internal,
	FINALFUNC = sessionize.sessionize_sequence_count_final,
	COMBINEFUNC = sessionize.sessionize_behavior_combine,
	SERIALFUNC = sessionize.sessionize_behavior_serialize,
	DESERIALFUNC = sessionize.sessionize_sequence_deserialize,
	PARALLEL = SAFE
);
COMMENT ON AGGREGATE sessionize.sequence_count(text, timestamptz, boolean[]) IS
	'the number of matches of the pattern, one after the other (ClickHouse sequenceCount)';

CREATE AGGREGATE sessionize.sequence_match(pattern text, ts timestamp, VARIADIC conditions boolean[]) (
	SFUNC = sessionize.sessionize_sequence_transition,
	STYPE = internal,
	FINALFUNC = sessionize.sessionize_sequence_match_final,
	COMBINEFUNC = sessionize.sessionize_behavior_combine,
	SERIALFUNC = sessionize.sessionize_behavior_serialize,
	DESERIALFUNC = sessionize.sessionize_sequence_deserialize,
	PARALLEL = SAFE
);
COMMENT ON AGGREGATE sessionize.sequence_match(text, timestamp, boolean[]) IS
	'whether the events match the pattern: (?N), ., .*, (?t op seconds) (ClickHouse sequenceMatch)';

CREATE AGGREGATE sessionize.sequence_count(pattern text, ts timestamp, VARIADIC conditions boolean[]) (
	SFUNC = sessionize.sessionize_sequence_transition,
	STYPE = internal,
	FINALFUNC = sessionize.sessionize_sequence_count_final,
	COMBINEFUNC = sessionize.sessionize_behavior_combine,
	SERIALFUNC = sessionize.sessionize_behavior_serialize,
	DESERIALFUNC = sessionize.sessionize_sequence_deserialize,
	PARALLEL = SAFE
);
COMMENT ON AGGREGATE sessionize.sequence_count(text, timestamp, boolean[]) IS
	'the number of matches of the pattern, one after the other (ClickHouse sequenceCount)';

CREATE AGGREGATE sessionize.sequence_match_events(pattern text, ts timestamptz, VARIADIC conditions boolean[]) (
	SFUNC = sessionize.sessionize_sequence_transition,
	STYPE = internal,
	FINALFUNC = sessionize.sessionize_sequence_events_final,
	COMBINEFUNC = sessionize.sessionize_behavior_combine,
	SERIALFUNC = sessionize.sessionize_behavior_serialize,
	DESERIALFUNC = sessionize.sessionize_sequence_deserialize,
	PARALLEL = SAFE
);
COMMENT ON AGGREGATE sessionize.sequence_match_events(text, timestamptz, boolean[]) IS
	'the times of the events matched by the (?N) steps of the first match of the pattern';

CREATE AGGREGATE sessionize.sequence_match_events(pattern text, ts timestamp, VARIADIC conditions boolean[]) (
	SFUNC = sessionize.sessionize_sequence_transition,
	STYPE = internal,
	FINALFUNC = sessionize.sessionize_sequence_local_events_final,
	COMBINEFUNC = sessionize.sessionize_behavior_combine,
	SERIALFUNC = sessionize.sessionize_behavior_serialize,
	DESERIALFUNC = sessionize.sessionize_sequence_deserialize,
	PARALLEL = SAFE
);
COMMENT ON AGGREGATE sessionize.sequence_match_events(text, timestamp, boolean[]) IS
	'the times of the events matched by the (?N) steps of the first match of the pattern';

-- sequence_next_node ---------------------------------------------------------

CREATE FUNCTION sessionize.sessionize_next_node_transition(internal, text, text, timestamptz, text, boolean, boolean[])
RETURNS internal
AS 'MODULE_PATHNAME', 'next_node_transition'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_next_node_transition(internal, text, text, timestamp, text, boolean, boolean[])
RETURNS internal
AS 'MODULE_PATHNAME', 'next_node_transition'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_next_node_final(internal)
RETURNS text
AS 'MODULE_PATHNAME', 'next_node_final'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_next_node_deserialize(bytea, internal)
RETURNS internal
AS 'MODULE_PATHNAME', 'next_node_deserialize'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE AGGREGATE sessionize.sequence_next_node(direction text, base text, ts timestamptz, value text, base_condition boolean, VARIADIC steps boolean[]) (
	SFUNC = sessionize.sessionize_next_node_transition,
	STYPE = internal,
	FINALFUNC = sessionize.sessionize_next_node_final,
	COMBINEFUNC = sessionize.sessionize_behavior_combine,
	SERIALFUNC = sessionize.sessionize_behavior_serialize,
	DESERIALFUNC = sessionize.sessionize_next_node_deserialize,
	PARALLEL = SAFE
);
COMMENT ON AGGREGATE sessionize.sequence_next_node(text, text, timestamptz, text, boolean, boolean[]) IS
	'the value of the event after (forward) or before (backward) a chain of consecutive events satisfying the steps from the base (ClickHouse sequenceNextNode)';

CREATE AGGREGATE sessionize.sequence_next_node(direction text, base text, ts timestamp, value text, base_condition boolean, VARIADIC steps boolean[]) (
	SFUNC = sessionize.sessionize_next_node_transition,
	STYPE = internal,
	FINALFUNC = sessionize.sessionize_next_node_final,
	COMBINEFUNC = sessionize.sessionize_behavior_combine,
	SERIALFUNC = sessionize.sessionize_behavior_serialize,
	DESERIALFUNC = sessionize.sessionize_next_node_deserialize,
	PARALLEL = SAFE
);
COMMENT ON AGGREGATE sessionize.sequence_next_node(text, text, timestamp, text, boolean, boolean[]) IS
	'the value of the event after (forward) or before (backward) a chain of consecutive events satisfying the steps from the base (ClickHouse sequenceNextNode)';
-- Fingerprints and the dedup memory.  fingerprint() and fingerprint_bytes()
-- call the one C implementation in src/fingerprint.c; the dedup functions
-- are in src/dedup.c.

CREATE FUNCTION sessionize.fingerprint(event jsonb, exclude text[] DEFAULT '{}', algorithm text DEFAULT 'md5')
RETURNS text
AS 'MODULE_PATHNAME', 'fingerprint_text'
LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION sessionize.fingerprint(jsonb, text[], text) IS
	'content fingerprint (lowercase hex), equal to Snowplow''s event fingerprint for flat objects of strings';

-- The settings that change how values are written as text are pinned, so
-- that a row's fingerprint never depends on the session: times in UTC.
CREATE FUNCTION sessionize.fingerprint(event record, exclude text[] DEFAULT '{}', algorithm text DEFAULT 'md5')
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
SET DateStyle = 'ISO, MDY'
SET IntervalStyle = 'postgres'
SET extra_float_digits = 1
SET bytea_output = 'hex'
AS $$
BEGIN
	RETURN sessionize.fingerprint(to_jsonb(event), exclude, algorithm);
END $$;
COMMENT ON FUNCTION sessionize.fingerprint(record, text[], text) IS
	'content fingerprint of a table row, its columns taken as the keys of an object';

-- A JSON literal written as a string resolves here rather than being
-- ambiguous between jsonb and record.
CREATE FUNCTION sessionize.fingerprint(event text, exclude text[] DEFAULT '{}', algorithm text DEFAULT 'md5')
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN sessionize.fingerprint(pg_catalog.jsonb(event), exclude, algorithm);
COMMENT ON FUNCTION sessionize.fingerprint(text, text[], text) IS
	'content fingerprint of JSON given as text';

CREATE FUNCTION sessionize.fingerprint_bytes(event jsonb, exclude text[] DEFAULT '{}')
RETURNS uuid
AS 'MODULE_PATHNAME', 'fingerprint_uuid'
LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION sessionize.fingerprint_bytes(jsonb, text[]) IS
	'the 16 bytes of the MD5 fingerprint as a uuid, compact for storage and indexes';

-- The dedup memory ------------------------------------------------------------
-- Its tables are written only through the functions below, which run as the
-- extension's owner; namespaces starting with "pipeline:" are the pipelines'.

CREATE TABLE sessionize.seen_fingerprints (
	namespace text NOT NULL,
	fingerprint uuid NOT NULL,
	first_seen_at timestamptz NOT NULL,
	expires_at timestamptz,
	PRIMARY KEY (namespace, fingerprint)
);
CREATE INDEX seen_fingerprints_expires_at ON sessionize.seen_fingerprints (expires_at)
	WHERE expires_at IS NOT NULL;
COMMENT ON TABLE sessionize.seen_fingerprints IS
	'dedup memory: fingerprints seen per namespace, until expires_at (NULL: forever)';
SELECT pg_catalog.pg_extension_config_dump('sessionize.seen_fingerprints', '');

CREATE TABLE sessionize.seen_event_ids (
	namespace text NOT NULL,
	event_id text NOT NULL,
	fingerprint uuid NOT NULL,
	first_seen_at timestamptz NOT NULL,
	expires_at timestamptz,
	PRIMARY KEY (namespace, event_id)
);
CREATE INDEX seen_event_ids_expires_at ON sessionize.seen_event_ids (expires_at)
	WHERE expires_at IS NOT NULL;
COMMENT ON TABLE sessionize.seen_event_ids IS
	'first fingerprint seen per event id, to tell natural from synthetic duplicates';
SELECT pg_catalog.pg_extension_config_dump('sessionize.seen_event_ids', '');

CREATE FUNCTION sessionize.sessionize_check_interval(value interval, what text)
RETURNS interval
AS 'MODULE_PATHNAME', 'check_interval'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_check_namespace(namespace text)
RETURNS text
AS 'MODULE_PATHNAME', 'check_namespace'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.first_seen(namespace text, fingerprint uuid, ttl interval DEFAULT '1 hour')
RETURNS boolean
AS 'MODULE_PATHNAME', 'first_seen'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION sessionize.first_seen(text, uuid, interval) IS
	'true exactly once per fingerprint and namespace within ttl (NULL ttl: forever)';

CREATE FUNCTION sessionize.first_seen(namespace text, fingerprint text, ttl interval DEFAULT '1 hour')
RETURNS boolean
LANGUAGE sql VOLATILE PARALLEL UNSAFE
RETURN sessionize.first_seen(namespace, pg_catalog.uuid(fingerprint), ttl);
COMMENT ON FUNCTION sessionize.first_seen(text, text, interval) IS
	'first_seen() for an MD5 fingerprint in hex, as fingerprint() returns it';

CREATE FUNCTION sessionize.classify_duplicate(namespace text, event_id text, fingerprint uuid,
											  ttl interval DEFAULT '1 hour')
RETURNS text
AS 'MODULE_PATHNAME', 'classify_duplicate'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION sessionize.classify_duplicate(text, text, uuid, interval) IS
	'new, natural_duplicate (same id, same content) or synthetic_duplicate (same id, other content)';

-- Removes at most batch_size expired entries from each memory and returns how
-- many it removed; schedule it (for example with pg_cron) to keep them small.
CREATE FUNCTION sessionize.prune_seen(batch_size integer DEFAULT 10000)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	removed bigint;
	removed_ids bigint;
BEGIN
	IF batch_size IS NULL OR batch_size < 1 THEN
		RAISE EXCEPTION 'batch_size must be positive'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	DELETE FROM sessionize.seen_fingerprints
	WHERE ctid = ANY (ARRAY(SELECT ctid FROM sessionize.seen_fingerprints
							WHERE expires_at <= statement_timestamp()
							LIMIT batch_size FOR UPDATE SKIP LOCKED));
	GET DIAGNOSTICS removed = ROW_COUNT;
	DELETE FROM sessionize.seen_event_ids
	WHERE ctid = ANY (ARRAY(SELECT ctid FROM sessionize.seen_event_ids
							WHERE expires_at <= statement_timestamp()
							LIMIT batch_size FOR UPDATE SKIP LOCKED));
	GET DIAGNOSTICS removed_ids = ROW_COUNT;
	RETURN removed + removed_ids;
END $$;
COMMENT ON FUNCTION sessionize.prune_seen(integer) IS
	'removes up to batch_size expired entries from the dedup memories; returns how many';
REVOKE ALL ON FUNCTION sessionize.prune_seen(integer) FROM PUBLIC;
-- Dedup of a whole batch in one statement: first_seen_many() for users, and
-- the same function under it for pipelines, whose namespaces users may not
-- name.

CREATE FUNCTION sessionize.sessionize_check_user_namespace(namespace text)
RETURNS text
AS 'MODULE_PATHNAME', 'check_user_namespace'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

-- One statement for a whole batch (src/dedup.c, which the pipelines' batches
-- call too).  Element i of the result says whether fingerprint i is new; of
-- repeated fingerprints in the batch only the first is.
CREATE FUNCTION sessionize.sessionize_first_seen_many(namespace text, fingerprints uuid[], ttl interval)
RETURNS boolean[]
AS 'MODULE_PATHNAME', 'first_seen_many'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION sessionize.sessionize_first_seen_many(text, uuid[], interval) IS
	'first_seen_many() for users and pipelines alike';

CREATE FUNCTION sessionize.first_seen_many(namespace text, fingerprints uuid[], ttl interval DEFAULT '1 hour')
RETURNS boolean[]
LANGUAGE sql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
RETURN sessionize.sessionize_first_seen_many(sessionize.sessionize_check_user_namespace(namespace), fingerprints, ttl);
COMMENT ON FUNCTION sessionize.first_seen_many(text, uuid[], interval) IS
	'first_seen() for a batch in one statement: element i is true iff fingerprint i is new';
-- Idempotent multi-slot upserts.  A slot table keeps each contributing message
-- in its own slot (slot key and value), ordered by slot key, plus a computed
-- total, so re-delivered or reordered messages can never count twice.  The
-- slot logic is in src/slots.c; this file creates the tables it works on.

CREATE TABLE sessionize.slot_tables (
	table_id regclass PRIMARY KEY,
	overflow_table regclass NOT NULL,
	conflicts_table regclass NOT NULL,
	key_columns name[] NOT NULL,
	slot_key_name name NOT NULL,
	value_name name NOT NULL,
	slots integer NOT NULL CHECK (slots >= 1),
	combine text NOT NULL CHECK (combine IN ('sum', 'min', 'max', 'last')),
	on_conflict text NOT NULL CHECK (on_conflict IN ('error', 'record'))
);
COMMENT ON TABLE sessionize.slot_tables IS 'the slot tables made by create_slot_table() and their shape';
SELECT pg_catalog.pg_extension_config_dump('sessionize.slot_tables', '');
-- slot_upsert() reads it as its caller; only create_slot_table() writes it
GRANT SELECT ON sessionize.slot_tables TO PUBLIC;

CREATE FUNCTION sessionize.sessionize_check_combine(value_type regtype, combine text)
RETURNS void
AS 'MODULE_PATHNAME', 'slot_check_combine'
LANGUAGE C STABLE STRICT;

CREATE FUNCTION sessionize.slot_upsert(target regclass, key "any", slot_key "any", value "any")
RETURNS text
AS 'MODULE_PATHNAME', 'slot_upsert'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION sessionize.slot_upsert(regclass, "any", "any", "any") IS
	'applies one message to a slot table: added, unchanged (a re-delivery) or conflict; key is a value or a ROW() of values';

CREATE FUNCTION sessionize.slot_upsert_many(target regclass, keys "any", slot_keys "any", vals "any",
											OUT added bigint, OUT unchanged bigint, OUT conflicts bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'slot_upsert_many'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION sessionize.slot_upsert_many(regclass, "any", "any", "any") IS
	'applies arrays of messages (keys, slot keys, values) to a slot table in one call';
-- Creating slot tables: the tables belong to the caller, their row in
-- sessionize.slot_tables to the extension.

CREATE FUNCTION sessionize.create_slot_table(
	table_name text,
	key_columns text[],
	key_types regtype[],
	slot_key_type regtype,
	value_type regtype,
	slots integer DEFAULT 2,
	combine text DEFAULT 'sum',
	value_name text DEFAULT 'value',
	slot_key_name text DEFAULT 'slot_key',
	on_conflict text DEFAULT 'error')
RETURNS regclass
AS 'MODULE_PATHNAME', 'call_as_extension_in_schema'
LANGUAGE C;
COMMENT ON FUNCTION sessionize.create_slot_table(text, text[], regtype[], regtype, regtype, integer, text, text, text, text) IS
	'creates a slot table (key columns, slot_key_1, value_1, ..., computed) with its overflow and conflicts tables';

-- The body of create_slot_table(), run as the extension's owner: the caller
-- gets the three tables, made in its current schema (caller_schema) unless
-- the name has one, and their row in the catalog, which it cannot write.
CREATE FUNCTION sessionize.sessionize_create_slot_table(
	caller regrole, caller_schema text, table_name text, key_columns text[], key_types regtype[],
	slot_key_type regtype, value_type regtype, slots integer, combine text, value_name text,
	slot_key_name text, on_conflict text)
RETURNS regclass
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	name_parts text[];
	schema_name text;
	base_name text;
	qualified text;
	keys_sql text;
	keys_nullable_sql text;
	key_list text;
	slot_columns text := '';
	created regclass;
	overflow regclass;
	conflicts regclass;
	unusable regtype;
BEGIN
	IF table_name IS NULL OR key_columns IS NULL OR key_types IS NULL OR slot_key_type IS NULL
	   OR value_type IS NULL OR slots IS NULL OR combine IS NULL OR value_name IS NULL
	   OR slot_key_name IS NULL OR on_conflict IS NULL THEN
		RAISE EXCEPTION 'arguments of create_slot_table must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF slots < 1 THEN
		RAISE EXCEPTION 'slots must be at least 1'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('The table would have %s slots.', slots);
	END IF;
	IF combine NOT IN ('sum', 'min', 'max', 'last') THEN
		RAISE EXCEPTION 'unknown combine "%"', combine
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use sum, min, max or last.';
	END IF;
	IF on_conflict NOT IN ('error', 'record') THEN
		RAISE EXCEPTION 'unknown on_conflict "%"', on_conflict
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use error or record.';
	END IF;
	IF cardinality(key_columns) < 1 OR cardinality(key_columns) <> cardinality(key_types) THEN
		RAISE EXCEPTION 'key_columns and key_types must name the same, non-zero number of columns'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	PERFORM sessionize.sessionize_check_combine(value_type, combine);

	name_parts := parse_ident(table_name);
	IF cardinality(name_parts) = 2 THEN
		schema_name := name_parts[1];
		base_name := name_parts[2];
	ELSIF cardinality(name_parts) = 1 THEN
		schema_name := caller_schema;
		base_name := name_parts[1];
	ELSE
		RAISE EXCEPTION 'invalid table name "%"', table_name
			USING ERRCODE = 'invalid_name', HINT = 'Use table or schema.table.';
	END IF;
	IF schema_name IS NULL THEN
		RAISE EXCEPTION 'no schema has been selected to create in'
			USING ERRCODE = 'invalid_schema_name', HINT = 'Qualify the table name with a schema.';
	END IF;
	IF to_regnamespace(quote_ident(schema_name)) IS NULL THEN
		RAISE EXCEPTION 'schema "%" does not exist', schema_name USING ERRCODE = 'invalid_schema_name';
	END IF;
	IF caller IS NULL OR NOT has_schema_privilege(caller, to_regnamespace(quote_ident(schema_name)), 'CREATE') THEN
		RAISE EXCEPTION 'permission denied for schema %', schema_name USING ERRCODE = 'insufficient_privilege';
	END IF;
	SELECT t INTO unusable
	FROM unnest(key_types || slot_key_type || value_type) t
	WHERE NOT coalesce(has_type_privilege(caller, t, 'USAGE'), false)
	LIMIT 1;
	IF unusable IS NOT NULL THEN
		RAISE EXCEPTION 'permission denied for type %', unusable USING ERRCODE = 'insufficient_privilege';
	END IF;
	qualified := format('%I.%I', schema_name, base_name);

	SELECT string_agg(format('%I %s NOT NULL', k.column_name, format_type(k.type_id, NULL)), ', ' ORDER BY k.position),
		   string_agg(format('%I %s', k.column_name, format_type(k.type_id, NULL)), ', ' ORDER BY k.position),
		   string_agg(format('%I', k.column_name), ', ' ORDER BY k.position)
	INTO keys_sql, keys_nullable_sql, key_list
	FROM ROWS FROM (unnest(key_columns), unnest(key_types::oid[]))
		 WITH ORDINALITY AS k(column_name, type_id, position);

	FOR i IN 1..slots LOOP
		slot_columns := slot_columns || format(', %I %s, %I %s',
			slot_key_name || '_' || i, format_type(slot_key_type, NULL),
			value_name || '_' || i, format_type(value_type, NULL));
	END LOOP;

	EXECUTE format('CREATE TABLE %s (%s%s, computed %s, PRIMARY KEY (%s))',
				   qualified, keys_sql, slot_columns, format_type(value_type, NULL), key_list);
	created := qualified::regclass;
	EXECUTE format('CREATE TABLE %I.%I (%s, %I %s NOT NULL, %I %s, PRIMARY KEY (%s, %I))',
				   schema_name, base_name || '_overflow', keys_sql,
				   slot_key_name, format_type(slot_key_type, NULL),
				   value_name, format_type(value_type, NULL), key_list, slot_key_name);
	overflow := format('%I.%I', schema_name, base_name || '_overflow')::regclass;
	EXECUTE format('CREATE TABLE %I.%I (%s, %I %s NOT NULL, stored_value %s, offered_value %s,'
				   ' reported_at timestamptz NOT NULL DEFAULT pg_catalog.now())',
				   schema_name, base_name || '_conflicts', keys_nullable_sql,
				   slot_key_name, format_type(slot_key_type, NULL),
				   format_type(value_type, NULL), format_type(value_type, NULL));
	conflicts := format('%I.%I', schema_name, base_name || '_conflicts')::regclass;
	EXECUTE format('ALTER TABLE %s OWNER TO %s', created, caller);
	EXECUTE format('ALTER TABLE %s OWNER TO %s', overflow, caller);
	EXECUTE format('ALTER TABLE %s OWNER TO %s', conflicts, caller);

	INSERT INTO sessionize.slot_tables
	VALUES (created, overflow, conflicts, key_columns::name[], slot_key_name, value_name,
			slots, combine, on_conflict);
	RETURN created;
END $$;
-- Pipelines: events land in a staging table; run_pipeline() consumes a batch,
-- dead-letters what cannot be used, drops duplicates, sets late events aside
-- and merges the rest into the pipeline's sessions, all in the caller's one
-- transaction, so that a batch is applied entirely or not at all.  The
-- background worker (src/worker.c) calls run_pipeline() like any user or
-- pg_cron job can.  Session merging is the C code of sessions(), through the
-- aggregate sessionize_merge_sessions().

CREATE TYPE sessionize.pipeline_session AS (
	started_at timestamptz,
	ended_at timestamptz,
	expires_at timestamptz,
	events bigint
);
COMMENT ON TYPE sessionize.pipeline_session IS 'a session as pipelines store it, with the time it expires';

CREATE FUNCTION sessionize.sessionize_sessions_merge_transition(internal, timestamptz, timestamptz, timestamptz, bigint)
RETURNS internal
AS 'MODULE_PATHNAME', 'sessions_merge_transition'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_pipeline_sessions_final(internal)
RETURNS sessionize.pipeline_session[]
AS 'MODULE_PATHNAME', 'sessions_final'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE AGGREGATE sessionize.sessionize_merge_sessions(timestamptz, timestamptz, timestamptz, bigint) (
	SFUNC = sessionize.sessionize_sessions_merge_transition,
	STYPE = internal,
	FINALFUNC = sessionize.sessionize_pipeline_sessions_final,
	COMBINEFUNC = sessionize.sessionize_sessions_combine,
	SERIALFUNC = sessionize.sessionize_sessions_serialize,
	DESERIALFUNC = sessionize.sessionize_sessions_deserialize,
	PARALLEL = SAFE
);
COMMENT ON AGGREGATE sessionize.sessionize_merge_sessions(timestamptz, timestamptz, timestamptz, bigint) IS
	'merges stored sessions and new events (as one-event sessions) of a key';

-- Logical sources --------------------------------------------------------------

CREATE FUNCTION sessionize.sessionize_pgoutput_message(data bytea, OUT kind "char", OUT relation oid,
														OUT commit_lsn pg_lsn, OUT missing_values boolean)
AS 'MODULE_PATHNAME', 'pgoutput_message'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION sessionize.sessionize_pgoutput_message(bytea) IS
	'type, relation and (for BEGIN) commit LSN of a pgoutput message; whether an UPDATE''s new row misses values';

-- Decoding a logical source's rows: as the pipeline's owner, whose rights
-- the input functions and domain checks of its columns get.
CREATE FUNCTION sessionize.sessionize_pgoutput_row(data bytea, template anyelement, relation bytea)
RETURNS anyelement
AS 'MODULE_PATHNAME', 'pgoutput_row_by_name'
LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION sessionize.sessionize_pgoutput_row(bytea, anyelement, bytea) IS
	'the new tuple of a pgoutput INSERT or UPDATE message as a row of the template''s type, columns matched by name to the relation message';

CREATE FUNCTION sessionize.sessionize_pgoutput_problem(data bytea, template anyelement, relation bytea)
RETURNS text
AS 'MODULE_PATHNAME', 'pgoutput_problem'
LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION sessionize.sessionize_pgoutput_problem(bytea, anyelement, bytea) IS
	'why a pgoutput change cannot be read as a row of the template''s type (its columns do not match), or NULL';

-- The source tables of logical pipelines are in two publications: one that
-- publishes inserts, and one that also publishes updates, for pipelines that
-- take updates as events.  Publishing updates makes PostgreSQL refuse UPDATE
-- and DELETE on a table without a replica identity, so a table is in the
-- second only when a pipeline asks for it.  Both must exist before any
-- pipeline's slot: pgoutput looks publications up as of the transaction it
-- decodes, and fails on one created after the slot.  A publication of these
-- names that exists already belongs to someone else: it is never adopted.
DO $$
DECLARE
	messages text := pg_catalog.current_setting('client_min_messages');
	publication record;
BEGIN
	FOR publication IN
		SELECT * FROM (VALUES ('sessionize_pipelines', 'insert'),
							  ('sessionize_pipeline_updates', 'insert, update')) p(name, publish)
	LOOP
		IF EXISTS (SELECT FROM pg_catalog.pg_publication WHERE pubname OPERATOR(pg_catalog.=) publication.name) THEN
			RAISE EXCEPTION 'publication "%" already exists', publication.name
				USING ERRCODE = 'duplicate_object',
					  DETAIL = 'sessionize creates its publications itself and never adopts one that exists.',
					  HINT = 'Drop the publication (it may be left from an earlier installation of sessionize), then create the extension.';
		END IF;
		-- without wal_level = logical PostgreSQL warns; that is for create_pipeline() to say
		PERFORM pg_catalog.set_config('client_min_messages', 'error', true);
		EXECUTE pg_catalog.format('CREATE PUBLICATION %I WITH (publish = %L)', publication.name, publication.publish);
		PERFORM pg_catalog.set_config('client_min_messages', messages, true);
	END LOOP;
END $$;

-- Catalog ---------------------------------------------------------------------

CREATE TABLE sessionize.pipelines (
	name text PRIMARY KEY,
	source regclass NOT NULL,
	key_column name NOT NULL,
	time_column name NOT NULL,
	gap interval NOT NULL,
	allowed_lateness interval,
	dedup_window interval,
	fingerprint_exclude text[] NOT NULL DEFAULT '{}',
	type_column name,
	source_kind text NOT NULL DEFAULT 'table' CHECK (source_kind IN ('table', 'logical')),
	updates_as_events boolean NOT NULL DEFAULT false,
	-- a jsonb column of the source: key, time and type columns name its fields
	payload_column name,
	state text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'paused')),
	created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
	-- a pipeline's incarnation: a pipeline dropped and created again is another
	id bigint GENERATED BY DEFAULT AS IDENTITY UNIQUE NOT NULL,
	-- the role whose rights every batch runs with
	owner regrole NOT NULL,
	-- the owner may be a superuser although the source's owner is not
	allow_superuser boolean NOT NULL DEFAULT false,
	-- the zone of times read without an offset and of the days of intervals
	time_zone text NOT NULL DEFAULT 'UTC'
);
COMMENT ON TABLE sessionize.pipelines IS 'pipelines: where their events come from and how they are sessionized';
SELECT pg_catalog.pg_extension_config_dump('sessionize.pipelines', '');
SELECT pg_catalog.pg_extension_config_dump('sessionize.pipelines_id_seq', '');

CREATE TABLE sessionize.pipeline_state (
	pipeline text PRIMARY KEY REFERENCES sessionize.pipelines ON DELETE CASCADE ON UPDATE CASCADE,
	max_event_time timestamptz,
	watermark timestamptz,
	last_event_time timestamptz,
	consumed bigint NOT NULL DEFAULT 0,
	merged bigint NOT NULL DEFAULT 0,
	duplicates bigint NOT NULL DEFAULT 0,
	late bigint NOT NULL DEFAULT 0,
	dead_lettered bigint NOT NULL DEFAULT 0,
	batches bigint NOT NULL DEFAULT 0,
	last_batch_at timestamptz,
	last_error text,
	last_error_at timestamptz,
	failures integer NOT NULL DEFAULT 0,
	-- logical sources: the last change applied, as (commit LSN of its
	-- transaction, LSN of the change), and how far the slot may be advanced
	checkpoint_commit_lsn pg_lsn,
	checkpoint_lsn pg_lsn,
	-- the rows of one COPY share an LSN: how many at checkpoint_lsn are applied
	checkpoint_lsn_row bigint,
	slot_advance_to pg_lsn,
	-- how many times alter_pipeline() added measures: a stored session keeps
	-- the version its earliest event came under (measured_since), and a
	-- measure added later than that is NULL for it
	measures_version integer NOT NULL DEFAULT 0
);
COMMENT ON TABLE sessionize.pipeline_state IS 'progress of each pipeline, updated in the transaction of each batch';
SELECT pg_catalog.pg_extension_config_dump('sessionize.pipeline_state', '');

CREATE TABLE sessionize.dead_letter (
	id bigserial PRIMARY KEY,
	pipeline text NOT NULL,
	event jsonb NOT NULL,
	error text NOT NULL,
	failed_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX dead_letter_pipeline ON sessionize.dead_letter (pipeline, failed_at);
COMMENT ON TABLE sessionize.dead_letter IS 'events a pipeline could not use, with the reason';
SELECT pg_catalog.pg_extension_config_dump('sessionize.dead_letter', '');

-- sessionize: create_pipeline()'s body, which checks what it is asked for
-- and makes a pipeline (its tables are made in 43_pipeline_tables.sql).

-- The owner of a pipeline is the owner of its source, or run_as; the caller
-- must be a member of it.  A superuser owner over a table a non-superuser
-- owns must be asked for with allow_superuser.
CREATE FUNCTION sessionize.sessionize_create_pipeline(
	caller regrole, name text, source regclass, key_column name, time_column name, gap interval,
	allowed_lateness interval, dedup_window interval, fingerprint_exclude text[], type_column name,
	max_duration interval, run_as name, source_kind text, updates_as_events boolean, payload_column name,
	allow_superuser boolean, time_zone text, measures text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	key_type text;
	time_type oid;
	payload_type oid;
	taken_names text;
	owner regrole;
	needed_rights text;
BEGIN
	IF source_kind IS NULL OR source_kind NOT IN ('table', 'logical') THEN
		RAISE EXCEPTION 'unknown source kind "%"', source_kind
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'A pipeline''s source is a staging table (''table'') or a table followed through a logical replication slot (''logical'').';
	END IF;
	IF updates_as_events AND source_kind <> 'logical' THEN
		RAISE EXCEPTION 'updates_as_events needs a logical source'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'A staging table''s rows are consumed when they are inserted.';
	END IF;
	PERFORM sessionize.sessionize_check_pipeline_name(name);
	PERFORM sessionize.sessionize_check_time_zone(time_zone);
	IF EXISTS (SELECT FROM sessionize.pipelines p WHERE p.name = sessionize_create_pipeline.name) THEN
		RAISE EXCEPTION 'pipeline "%" already exists', name USING ERRCODE = 'duplicate_object';
	END IF;
	IF source IS NULL OR key_column IS NULL OR time_column IS NULL THEN
		RAISE EXCEPTION 'source, key_column and time_column must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF gap IS NULL THEN
		RAISE EXCEPTION 'gap must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM sessionize.sessionize_check_interval(gap, 'gap');
	IF allowed_lateness IS NOT NULL AND allowed_lateness <> interval '0' THEN
		PERFORM sessionize.sessionize_check_interval(allowed_lateness, 'allowed_lateness');
	END IF;
	IF dedup_window IS NOT NULL THEN
		PERFORM sessionize.sessionize_check_interval(dedup_window, 'dedup_window');
	END IF;
	IF max_duration IS NOT NULL THEN
		RAISE EXCEPTION 'pipelines do not support max_duration'
			USING ERRCODE = 'feature_not_supported',
				  DETAIL = 'With max_duration a session''s end depends on where it started, so merging a late event would need every stored event.',
				  HINT = 'Use sessionize.sessions(ts, gap, max_duration) over the events in SQL.';
	END IF;
	IF (SELECT relkind FROM pg_class WHERE oid = source) <> 'r' THEN
		RAISE EXCEPTION '"%" is not a table', source
			USING ERRCODE = 'wrong_object_type',
				  HINT = 'A pipeline consumes a plain table; partitioned tables and views are not supported.';
	END IF;
	IF payload_column IS NOT NULL THEN
		-- Events are jsonb documents: key, time and type are fields of them,
		-- checked for each event (a wrong one is a dead letter), and the key
		-- is text.
		SELECT atttypid INTO payload_type
		FROM pg_attribute WHERE attrelid = source AND attname = payload_column AND attnum > 0 AND NOT attisdropped;
		IF payload_type IS NULL THEN
			RAISE EXCEPTION 'column "%" of "%" does not exist', payload_column, source USING ERRCODE = 'undefined_column';
		ELSIF payload_type <> 'jsonb'::regtype THEN
			RAISE EXCEPTION 'payload column "%" must be of type jsonb', payload_column
				USING ERRCODE = 'datatype_mismatch',
					  DETAIL = format('It is of type %s.', payload_type::regtype);
		END IF;
		key_type := 'text';
	ELSE
		-- a domain's base type: the extension's tables run no domain checks
		-- and the column's collation: keys compare as in the source
		SELECT format_type(CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END,
						   CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END)
			   || CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation
					   THEN format(' COLLATE %I.%I', cn.nspname, c.collname) ELSE '' END
		INTO key_type
		FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
		LEFT JOIN pg_collation c ON c.oid = a.attcollation
		LEFT JOIN pg_namespace cn ON cn.oid = c.collnamespace
		WHERE a.attrelid = source AND a.attname = key_column AND a.attnum > 0 AND NOT a.attisdropped;
		IF key_type IS NULL THEN
			RAISE EXCEPTION 'column "%" of "%" does not exist', key_column, source USING ERRCODE = 'undefined_column';
		END IF;
		SELECT atttypid INTO time_type
		FROM pg_attribute WHERE attrelid = source AND attname = time_column AND attnum > 0 AND NOT attisdropped;
		IF time_type IS NULL THEN
			RAISE EXCEPTION 'column "%" of "%" does not exist', time_column, source USING ERRCODE = 'undefined_column';
		ELSIF time_type NOT IN ('timestamptz'::regtype, 'timestamp'::regtype) THEN
			RAISE EXCEPTION 'time column "%" must be of type timestamp with time zone or timestamp', time_column
				USING ERRCODE = 'datatype_mismatch',
					  DETAIL = format('It is of type %s.', time_type::regtype),
					  HINT = 'A timestamp without time zone is read in the pipeline''s time_zone.';
		END IF;
		IF type_column IS NOT NULL AND NOT EXISTS (
			SELECT FROM pg_attribute WHERE attrelid = source AND attname = type_column AND attnum > 0 AND NOT attisdropped) THEN
			RAISE EXCEPTION 'column "%" of "%" does not exist', type_column, source USING ERRCODE = 'undefined_column';
		END IF;
	END IF;
	IF run_as IS NULL THEN
		SELECT relowner INTO owner FROM pg_class WHERE oid = source;
	ELSIF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = run_as) THEN
		RAISE EXCEPTION 'role "%" does not exist', run_as USING ERRCODE = 'undefined_object';
	ELSE
		SELECT oid INTO owner FROM pg_roles WHERE rolname = run_as;
	END IF;
	IF caller IS NULL OR NOT pg_has_role(caller, owner, 'MEMBER') THEN
		RAISE EXCEPTION 'must be a member of role "%" to create a pipeline that runs as it', owner
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = 'A pipeline runs as the owner of its source table, or as the role run_as names.';
	END IF;
	needed_rights := CASE source_kind WHEN 'table' THEN 'SELECT, UPDATE, DELETE' ELSE 'SELECT' END;
	IF NOT has_table_privilege(owner, source, needed_rights) THEN
		RAISE EXCEPTION 'role "%" cannot consume table %', owner, source
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = format('A pipeline''s owner needs %s on its source.', needed_rights),
				  HINT = format('GRANT %s ON %s TO %s', needed_rights, source, owner);
	END IF;
	IF NOT coalesce(allow_superuser, false)
	   AND (SELECT rolsuper FROM pg_roles WHERE oid = owner)
	   AND NOT (SELECT r.rolsuper FROM pg_roles r JOIN pg_class c ON c.relowner = r.oid WHERE c.oid = source) THEN
		RAISE EXCEPTION 'pipeline "%" would run with superuser rights over table %, which % owns', name, source,
						(SELECT relowner::regrole FROM pg_class WHERE oid = source)
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = 'The owner of the table could run any code as a superuser through its triggers.',
				  HINT = 'Let the pipeline run as the table''s owner (leave out run_as), or pass allow_superuser => true if every role that can change the table is trusted.';
	END IF;
	-- every name the pipeline will take, before anything (a slot) is made
	SELECT string_agg(format('%I', name || suffix), ', ') INTO taken_names
	FROM unnest(ARRAY['_stored_sessions', '_sessions', '_sessions_live', '_sessions_final', '_late',
					  '_changes', '_late_id_seq', '_changes_change_id_seq']) suffix
	WHERE to_regclass(format('sessionize.%I', name || suffix)) IS NOT NULL;
	IF taken_names IS NOT NULL THEN
		RAISE EXCEPTION 'pipeline "%" cannot have the names it needs', name
			USING ERRCODE = 'duplicate_table',
				  DETAIL = format('Schema sessionize already has %s.', taken_names),
				  HINT = 'Choose another pipeline name.';
	END IF;

	-- A logical source: the slot is made first, while this transaction has
	-- written nothing (PostgreSQL requires it).  Changes committed after this
	-- transaction are the pipeline's events; rows already in the table are not.
	IF source_kind = 'logical' THEN
		IF txid_current_if_assigned() IS NOT NULL THEN
			RAISE EXCEPTION 'a logical pipeline must be created before its transaction writes anything'
				USING ERRCODE = 'active_sql_transaction',
					  HINT = 'Call create_pipeline() in a transaction of its own.';
		END IF;
		IF current_setting('wal_level') <> 'logical' THEN
			RAISE EXCEPTION 'a logical pipeline needs wal_level = logical'
				USING ERRCODE = 'object_not_in_prerequisite_state',
					  DETAIL = format('wal_level is %s.', current_setting('wal_level')),
					  HINT = 'Set wal_level = logical in postgresql.conf and restart the server.';
		END IF;
		IF EXISTS (SELECT FROM pg_attribute
				   WHERE attrelid = source AND attgenerated <> ''
					 AND attname IN (key_column, time_column, type_column, payload_column)) THEN
			RAISE EXCEPTION 'a logical pipeline cannot read generated columns'
				USING ERRCODE = 'feature_not_supported',
					  DETAIL = 'Logical replication does not send the values of generated columns.';
		END IF;
		IF updates_as_events AND (SELECT relreplident FROM pg_class WHERE oid = source) <> 'f' THEN
			RAISE EXCEPTION 'updates_as_events needs REPLICA IDENTITY FULL on "%"', source
				USING ERRCODE = 'object_not_in_prerequisite_state',
					  DETAIL = 'An UPDATE does not write to the WAL a value stored out of line that it leaves unchanged; only the whole old row, logged under REPLICA IDENTITY FULL, has it.',
					  HINT = format('ALTER TABLE %s REPLICA IDENTITY FULL', source);
		END IF;
		IF (SELECT count(*) FROM pg_publication
			WHERE pubname IN ('sessionize_pipelines', 'sessionize_pipeline_updates')) < 2 THEN
			RAISE EXCEPTION 'the publications of sessionize are missing'
				USING ERRCODE = 'undefined_object',
					  HINT = 'Create them as sessionize does: CREATE PUBLICATION sessionize_pipelines WITH (publish = ''insert''); CREATE PUBLICATION sessionize_pipeline_updates WITH (publish = ''insert, update'');';
		END IF;
		PERFORM pg_create_logical_replication_slot(sessionize.sessionize_slot_name(name), 'pgoutput');
		-- A slot is not undone by a rollback: should anything below fail, drop it.
		BEGIN
			PERFORM sessionize.sessionize_make_pipeline(name, source, key_column, time_column, gap, allowed_lateness, dedup_window, fingerprint_exclude, type_column, owner, coalesce(allow_superuser, false), source_kind, updates_as_events, payload_column, key_type,
														 time_zone, measures);
		EXCEPTION WHEN OTHERS THEN
			PERFORM pg_drop_replication_slot(sessionize.sessionize_slot_name(name));
			RAISE;
		END;
	ELSE
		PERFORM sessionize.sessionize_make_pipeline(name, source, key_column, time_column, gap, allowed_lateness, dedup_window, fingerprint_exclude, type_column, owner, coalesce(allow_superuser, false), source_kind, updates_as_events, payload_column, key_type,
														 time_zone, measures);
	END IF;
END $$;
-- sessionize: the changes run_pipeline() peeks from a logical source's slot
-- when it runs outside the pipeline's worker.

-- The next changes of a logical source after its checkpoint, peeked from
-- its slot: what run_pipeline() takes anywhere but in the pipeline's worker,
-- which streams them (src/source_logical.c).  Each peek decodes from the
-- slot's restart point (the slot does not move), up to the WAL flushed now
-- and a bounded number of changes; pgoutput sends whole transactions in
-- commit order, so (commit LSN, change LSN, row at that LSN) orders the
-- stream, and a large transaction is taken over several batches.  Returns
-- [relation message, change] pairs, the positions of updates that miss
-- values, the place of the last change taken, and how far the slot may pass
-- once the batch commits: past every transaction whose changes are all
-- taken, or past all the WAL peeked when the peek reached its end and left
-- nothing.
CREATE FUNCTION sessionize.sessionize_peek_changes(pipeline sessionize.pipelines, slot name,
												   slot_advance_to pg_lsn, checkpoint_commit_lsn pg_lsn,
												   checkpoint_lsn pg_lsn, checkpoint_lsn_row bigint,
												   max_events integer,
												   OUT messages bytea[], OUT incomplete bigint[],
												   OUT commit_lsn pg_lsn, OUT lsn pg_lsn, OUT lsn_row bigint,
												   OUT advance pg_lsn, OUT restart_lsn pg_lsn, OUT peek_full boolean)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
	peek_end pg_lsn;
	peek_limit bigint := 3 * max_events::bigint + 3;
	peeked bigint;
	taken_count bigint;
BEGIN
	-- Only now that earlier batches are committed may the slot pass them.
	PERFORM pg_replication_slot_advance(s.slot_name, slot_advance_to) FROM pg_replication_slots s
	WHERE s.slot_name = slot AND s.confirmed_flush_lsn < slot_advance_to;
	SELECT s.restart_lsn INTO restart_lsn FROM pg_replication_slots s WHERE s.slot_name = slot;
	peek_end := pg_current_wal_flush_lsn();
	-- Changes the slot still holds but the checkpoint has passed can fill a
	-- peek (its restart point lags behind what earlier batches took): peek
	-- further until the batch is full or the WAL flushed now is reached.
	LOOP
		WITH peeked AS (
			SELECT p.position, p.lsn, p.data, m.kind, m.relation, m.missing_values,
				   max(m.commit_lsn) OVER (ORDER BY p.position) AS commit_lsn,
				   -- the relation message that gives the change its columns
				   max(p.position) FILTER (WHERE m.kind = 'R' AND m.relation = pipeline.source::oid)
					   OVER (ORDER BY p.position) AS relation_position
			FROM pg_logical_slot_peek_binary_changes(slot, peek_end, least(peek_limit, 2147483647)::integer,
													 'proto_version', '1',
													 'publication_names', 'sessionize_pipelines,sessionize_pipeline_updates')
				 WITH ORDINALITY AS p(lsn, xid, data, position),
				 sessionize.sessionize_pgoutput_message(p.data) m),
		relevant AS (
			SELECT *, row_number() OVER (PARTITION BY peeked.commit_lsn, peeked.lsn ORDER BY position) AS lsn_row
			FROM peeked
			WHERE relation = pipeline.source::oid AND (kind = 'I' OR (kind = 'U' AND pipeline.updates_as_events))),
		pending AS (
			SELECT * FROM relevant r
			WHERE (r.commit_lsn, r.lsn, r.lsn_row) > (coalesce(checkpoint_commit_lsn, '0/0'),
													  coalesce(checkpoint_lsn, '0/0'),
													  coalesce(checkpoint_lsn_row, 0))),
		taken AS (
			SELECT *, row_number() OVER (ORDER BY position) AS taken_row FROM pending ORDER BY position LIMIT max_events),
		last_taken AS (
			SELECT t.commit_lsn, t.lsn, t.lsn_row FROM taken t ORDER BY position DESC LIMIT 1),
		first_left AS (
			SELECT min(p.commit_lsn) AS commit_lsn FROM pending p
			WHERE position > coalesce((SELECT max(position) FROM taken), 0))
		SELECT (SELECT array_agg(ARRAY[r.data, t.data] ORDER BY t.position)
				FROM taken t LEFT JOIN peeked r ON r.position = t.relation_position),
			   (SELECT array_agg(t.taken_row ORDER BY t.position) FILTER (WHERE t.missing_values) FROM taken t),
			   (SELECT l.commit_lsn FROM last_taken l),
			   (SELECT l.lsn FROM last_taken l),
			   (SELECT l.lsn_row FROM last_taken l),
			   (SELECT count(*) FROM peeked),
			   CASE WHEN (SELECT count(*) FROM peeked) < peek_limit AND (SELECT f.commit_lsn FROM first_left f) IS NULL
					THEN peek_end
					ELSE (SELECT max(p.lsn) FROM peeked p, first_left f
						  WHERE p.kind = 'C' AND (f.commit_lsn IS NULL OR p.commit_lsn < f.commit_lsn)) END,
			   (SELECT count(*) FROM taken)
		INTO messages, incomplete, commit_lsn, lsn, lsn_row, peeked, advance, taken_count;
		peek_full := peeked >= peek_limit;
		EXIT WHEN NOT peek_full OR taken_count >= max_events OR peek_limit >= 2147483647;
		peek_limit := least(peek_limit * 4, 2147483647);
	END LOOP;
END $$;
-- Pipeline functions.  Every function through which a role acts on a
-- pipeline is a front door (C, call_as_extension in src/privileges.c) that
-- calls its body, sessionize_<name>(caller, ...), as the extension's owner
-- with the calling role as first argument.  Bodies check that the caller has
-- the rights of the pipeline's owner; the owner's own rights are what the
-- batch has when it touches the source (sessionize_rows_as()).

-- Set-up ----------------------------------------------------------------------

-- Checks a pipeline name: it becomes part of table names.
CREATE FUNCTION sessionize.sessionize_check_pipeline_name(name text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF name IS NULL OR name !~ '^[a-z_][a-z0-9_]{0,39}$' THEN
		RAISE EXCEPTION 'invalid pipeline name "%"', name
			USING ERRCODE = 'invalid_name',
				  DETAIL = 'A pipeline name names its tables, so it must be 1 to 40 lowercase letters, digits or underscores, not starting with a digit.';
	END IF;
	RETURN name;
END $$;

-- Checks a pipeline's time zone: times a pipeline reads without an offset,
-- and the days of its intervals, are in it, whoever runs the batch.
CREATE FUNCTION sessionize.sessionize_check_time_zone(time_zone text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
BEGIN
	IF time_zone IS NULL THEN
		RAISE EXCEPTION 'time_zone must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	-- what a batch does with it: the function's SET undoes it on return
	PERFORM set_config('TimeZone', time_zone, true);
	RETURN time_zone;
EXCEPTION WHEN invalid_parameter_value THEN
	RAISE EXCEPTION 'invalid time zone "%"', time_zone
		USING ERRCODE = 'invalid_parameter_value',
			  HINT = 'Use a name from pg_timezone_names, such as ''UTC'' or ''Europe/Paris''.';
END $$;

-- Makes the pipeline's time zone the one of this transaction's batch: the
-- functions that call it reset the setting when they return.
CREATE FUNCTION sessionize.sessionize_use_time_zone(pipeline sessionize.pipelines)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	SELECT set_config('TimeZone', (pipeline).time_zone, true);
END;

CREATE FUNCTION sessionize.sessionize_lock_pipeline_batch(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'lock_pipeline_batch'
LANGUAGE C;
COMMENT ON FUNCTION sessionize.sessionize_lock_pipeline_batch(text) IS
	'waits for the lock that serializes a pipeline''s batches, alter and drop; held until the transaction ends';

CREATE FUNCTION sessionize.sessionize_rows_as(role regrole, query text, argument anyelement)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'rows_as'
LANGUAGE C;
COMMENT ON FUNCTION sessionize.sessionize_rows_as(regrole, text, anyelement) IS
	'rows of a query run as a role, in a security-restricted operation with a pinned search_path';

-- Reads a pipeline for a caller, who must have the rights of its owner; with
-- lock, takes the pipeline's lock first.  One batch at a time per pipeline,
-- and no alter or drop while a batch runs (a batch of a logical source holds
-- its slot).  The rights are checked before the lock is taken, so that a
-- role with no rights on a pipeline cannot hold it up, and the pipeline is
-- read again once the lock is held, so that a drop or an alter that
-- committed meanwhile is seen.
CREATE FUNCTION sessionize.sessionize_read_pipeline(caller regrole, name text, lock boolean)
RETURNS sessionize.pipelines
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	pipeline sessionize.pipelines;
BEGIN
	FOR attempt IN 1..2 LOOP
		SELECT * INTO pipeline FROM sessionize.pipelines p WHERE p.name = sessionize_read_pipeline.name;
		IF NOT FOUND THEN
			RAISE EXCEPTION 'pipeline "%" does not exist', name USING ERRCODE = 'undefined_object';
		END IF;
		IF caller IS NULL OR NOT pg_has_role(caller, pipeline.owner, 'USAGE') THEN
			RAISE EXCEPTION 'permission denied for pipeline "%"', name
				USING ERRCODE = 'insufficient_privilege',
					  DETAIL = format('Only roles with the rights of its owner, %s, may use it.', pipeline.owner);
		END IF;
		EXIT WHEN NOT lock OR attempt = 2;
		PERFORM sessionize.sessionize_lock_pipeline_batch(name);
	END LOOP;
	RETURN pipeline;
END $$;

-- The replication slot of a logical source; slots belong to the whole
-- server, so the name carries the database.
CREATE FUNCTION sessionize.sessionize_slot_name(name text)
RETURNS name
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
RETURN pg_catalog.format('sessionize_%s_%s',
						 (SELECT oid FROM pg_catalog.pg_database WHERE datname OPERATOR(pg_catalog.=) pg_catalog.current_database()),
						 name);

-- Puts a source table into the publications its logical pipelines need, and
-- takes it out of those no pipeline needs any more.
CREATE FUNCTION sessionize.sessionize_publish_source(source regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	publication record;
BEGIN
	FOR publication IN
		SELECT p.pubname,
			   EXISTS (SELECT FROM pg_publication_rel pr WHERE pr.prpubid = p.oid AND pr.prrelid = source) AS member,
			   EXISTS (SELECT FROM sessionize.pipelines pl
					   WHERE pl.source = sessionize_publish_source.source AND pl.source_kind = 'logical'
						 AND (pl.updates_as_events OR p.pubname = 'sessionize_pipelines')) AS needed
		FROM pg_publication p
		WHERE p.pubname IN ('sessionize_pipelines', 'sessionize_pipeline_updates')
	LOOP
		IF publication.needed AND NOT publication.member THEN
			EXECUTE format('ALTER PUBLICATION %I ADD TABLE %s', publication.pubname, source);
		ELSIF publication.member AND NOT publication.needed THEN
			EXECUTE format('ALTER PUBLICATION %I DROP TABLE %s', publication.pubname, source);
		END IF;
	END LOOP;
END $$;

-- Privileges ------------------------------------------------------------------

-- The first piece of code that a batch of the pipeline would run as its
-- owner although another role wrote it, and that role lacks the owner's
-- rights; NULL when there is none.  A batch runs the code of others when it
-- claims from a staging table (DELETE triggers, rules and row security
-- policies, written by the table's owner or, for triggers, a role granted
-- TRIGGER, and the functions they call), when it reads a logical change or a
-- late event (domain checks and input functions of the source's column
-- types, through arrays, composites and ranges) and when it reads the type
-- column as text (a cast, written by the owner of the type).  Code is safe
-- to run when it is SECURITY DEFINER or its author has the owner's rights.
CREATE FUNCTION sessionize.sessionize_untrusted_code(pipeline sessionize.pipelines)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	WITH RECURSIVE column_types(type_id) AS (
		SELECT a.atttypid FROM pg_attribute a
		WHERE a.attrelid = (pipeline).source AND a.attnum > 0 AND NOT a.attisdropped
		UNION
		SELECT n.type_id
		FROM column_types c
		JOIN pg_type t ON t.oid = c.type_id
		CROSS JOIN LATERAL (
			SELECT t.typbasetype WHERE t.typtype = 'd'
			UNION ALL
			SELECT t.typelem WHERE t.typelem <> 0
			UNION ALL
			SELECT a.atttypid FROM pg_attribute a
			WHERE a.attrelid = t.typrelid AND t.typrelid <> 0 AND a.attnum > 0 AND NOT a.attisdropped
			UNION ALL
			SELECT r.rngsubtype FROM pg_range r WHERE r.rngtypid = t.oid
			UNION ALL
			SELECT r.rngtypid FROM pg_range r WHERE r.rngmultitypid = t.oid) n(type_id)),
	claim_objects(classid, objid) AS (
		SELECT 'pg_trigger'::regclass, tg.oid FROM pg_trigger tg
		WHERE tg.tgrelid = (pipeline).source AND NOT tg.tgisinternal AND (tg.tgtype::integer & 8) <> 0
		UNION ALL
		SELECT 'pg_rewrite'::regclass, r.oid FROM pg_rewrite r
		WHERE r.ev_class = (pipeline).source AND r.ev_type = '4'
		UNION ALL
		SELECT 'pg_policy'::regclass, po.oid FROM pg_policy po
		WHERE po.polrelid = (pipeline).source),
	code(author, object) AS (
		SELECT w.author, pg_describe_object(o.classid, o.objid, 0)
		FROM claim_objects o
		CROSS JOIN LATERAL (
			SELECT c.relowner FROM pg_class c WHERE c.oid = (pipeline).source
			UNION ALL
			SELECT a.grantee FROM pg_class c, aclexplode(c.relacl) a
			WHERE c.oid = (pipeline).source AND o.classid = 'pg_trigger'::regclass
			  AND a.privilege_type = 'TRIGGER') w(author)
		WHERE (pipeline).source_kind = 'table'
		UNION ALL
		SELECT CASE WHEN p.prosecdef THEN NULL ELSE p.proowner END,
			   format('function %s, called by %s', p.oid::regprocedure, pg_describe_object(o.classid, o.objid, 0))
		FROM claim_objects o
		JOIN pg_depend d ON d.classid = o.classid AND d.objid = o.objid AND d.refclassid = 'pg_proc'::regclass
		JOIN pg_proc p ON p.oid = d.refobjid
		WHERE (pipeline).source_kind = 'table'
		UNION ALL
		SELECT t.typowner, format('constraint %s on domain %s', co.conname, t.oid::regtype)
		FROM column_types ct
		JOIN pg_type t ON t.oid = ct.type_id
		JOIN pg_constraint co ON co.contypid = t.oid
		UNION ALL
		SELECT CASE WHEN p.prosecdef THEN NULL ELSE p.proowner END,
			   format('function %s, called by constraint %s on domain %s', p.oid::regprocedure, co.conname, co.contypid::regtype)
		FROM column_types ct
		JOIN pg_constraint co ON co.contypid = ct.type_id
		JOIN pg_depend d ON d.classid = 'pg_constraint'::regclass AND d.objid = co.oid AND d.refclassid = 'pg_proc'::regclass
		JOIN pg_proc p ON p.oid = d.refobjid
		UNION ALL
		SELECT p.proowner, format('function %s, input of type %s', p.oid::regprocedure, t.oid::regtype)
		FROM column_types ct
		JOIN pg_type t ON t.oid = ct.type_id
		JOIN pg_proc p ON p.oid IN (t.typinput, t.typreceive)
		UNION ALL
		-- casts that reading an event runs: to text (the type column), to
		-- json (a row made jsonb); a cast is written by its type's owner
		SELECT x.author, format('%s', pg_describe_object('pg_cast'::regclass, ca.oid, 0))
		FROM column_types ct
		JOIN pg_type t ON t.oid = ct.type_id
		JOIN pg_cast ca ON ca.castsource = t.oid AND ca.casttarget IN ('text'::regtype, 'json'::regtype, 'jsonb'::regtype)
		LEFT JOIN pg_proc p ON p.oid = ca.castfunc
		CROSS JOIN LATERAL (VALUES (t.typowner), (CASE WHEN p.prosecdef THEN NULL ELSE p.proowner END)) x(author))
	SELECT format('%s was written by %s, who lacks the rights of the pipeline''s owner %s',
				  c.object, CASE WHEN c.author = 0 THEN 'PUBLIC' ELSE c.author::regrole::text END, (pipeline).owner)
	FROM code c
	WHERE c.author IS NOT NULL AND (c.author = 0 OR NOT pg_has_role(c.author, (pipeline).owner, 'USAGE'))
	ORDER BY c.object
	LIMIT 1;
END;

-- Refuses to run a batch that would give someone rights they do not have:
-- the owner is gone, or a superuser over a table a non-superuser owns
-- (unless allowed when the pipeline was made), or code another role wrote.
CREATE FUNCTION sessionize.sessionize_check_owner(pipeline sessionize.pipelines)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	source_owner oid;
	untrusted text;
BEGIN
	IF NOT EXISTS (SELECT FROM pg_roles WHERE oid = pipeline.owner) THEN
		RAISE EXCEPTION 'the owner of pipeline "%" does not exist', pipeline.name
			USING ERRCODE = 'undefined_object',
				  HINT = 'Drop the pipeline and create it again.';
	END IF;
	SELECT relowner INTO source_owner FROM pg_class WHERE oid = pipeline.source;
	IF NOT pipeline.allow_superuser
	   AND (SELECT rolsuper FROM pg_roles WHERE oid = pipeline.owner)
	   AND NOT (SELECT rolsuper FROM pg_roles WHERE oid = source_owner) THEN
		RAISE EXCEPTION 'pipeline "%" would run with superuser rights over table %, which % owns',
						pipeline.name, pipeline.source, source_owner::regrole
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = 'The owner of the table could run any code as a superuser through its triggers.',
				  HINT = 'Let the pipeline run as the table''s owner (the default), or create it with allow_superuser => true if every role that can change the table is trusted.';
	END IF;
	-- Changes decoded from WAL know nothing of row security: a logical
	-- pipeline may only read a table whose rows its owner sees whole.
	IF pipeline.source_kind = 'logical'
	   AND (SELECT relrowsecurity FROM pg_class WHERE oid = pipeline.source)
	   AND NOT (SELECT rolbypassrls OR rolsuper FROM pg_roles WHERE oid = pipeline.owner)
	   AND NOT (pg_has_role(pipeline.owner, source_owner, 'USAGE')
				AND NOT (SELECT relforcerowsecurity FROM pg_class WHERE oid = pipeline.source)) THEN
		RAISE EXCEPTION 'pipeline "%" cannot follow table % through its WAL: the table has row security', pipeline.name, pipeline.source
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = format('Decoded changes hold every row, and %s may not see every row.', pipeline.owner),
				  HINT = 'Use a staging table, or a role that owns the table or bypasses row security.';
	END IF;
	-- The key is stored as the type it had when the pipeline was made: a
	-- changed key column would be cut to that type or fail every batch.
	IF pipeline.payload_column IS NULL AND (
		SELECT format_type(CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END,
						   CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END)
		FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
		WHERE a.attrelid = pipeline.source AND a.attname = pipeline.key_column AND NOT a.attisdropped)
	   IS DISTINCT FROM sessionize.sessionize_key_type(pipeline) THEN
		RAISE EXCEPTION 'the key column "%" of pipeline "%" changed type', pipeline.key_column, pipeline.name
			USING ERRCODE = 'datatype_mismatch',
				  DETAIL = format('The pipeline stores keys as %s.', sessionize.sessionize_key_type(pipeline)),
				  HINT = 'Drop the pipeline and create it again, or give the column its type back.';
	END IF;
	untrusted := sessionize.sessionize_untrusted_code(pipeline);
	IF untrusted IS NOT NULL THEN
		RAISE EXCEPTION 'pipeline "%" refuses to run code that another role wrote', pipeline.name
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = untrusted || '.',
				  HINT = 'A batch runs as the pipeline''s owner: make the code SECURITY DEFINER, or owned by a role with the owner''s rights, or run the pipeline as a role that wrote it.';
	END IF;
END $$;

-- Creating, changing and dropping pipelines -------------------------------------

-- sessionize_check_owner(), skipped while nothing it reads has changed since
-- it passed in this backend (src/privileges.c): what each batch calls.
CREATE FUNCTION sessionize.sessionize_check_owner_cached(pipeline sessionize.pipelines)
RETURNS void
AS 'MODULE_PATHNAME', 'check_owner_cached'
LANGUAGE C
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION sessionize.create_pipeline(
	name text,
	source regclass,
	key_column name,
	time_column name,
	gap interval,
	allowed_lateness interval DEFAULT NULL,
	dedup_window interval DEFAULT '1 hour',
	fingerprint_exclude text[] DEFAULT '{}',
	type_column name DEFAULT NULL,
	max_duration interval DEFAULT NULL,
	run_as name DEFAULT NULL,
	source_kind text DEFAULT 'table',
	updates_as_events boolean DEFAULT false,
	payload_column name DEFAULT NULL,
	allow_superuser boolean DEFAULT false,
	time_zone text DEFAULT 'UTC',
	measures text DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'call_as_extension'
LANGUAGE C;
COMMENT ON FUNCTION sessionize.create_pipeline(text, regclass, name, name, interval, interval, interval, text[], name, interval, name, text, boolean, name, boolean, text, text) IS
	'creates a pipeline that sessionizes the events landing in a staging table, or inserted into a table it follows through a logical replication slot';

-- A batch claims a staging table's oldest events first: an index on the
-- time column serves it.  Made, in the source's schema and for its owner,
-- when no index of the table starts with that column and the pipeline's
-- owner has the rights of the table's owner (who alone may index it).
CREATE FUNCTION sessionize.sessionize_index_source_time(pipeline sessionize.pipelines)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF pipeline.source_kind = 'table' AND pipeline.payload_column IS NULL
	   AND pg_has_role(pipeline.owner, (SELECT relowner FROM pg_class WHERE oid = pipeline.source), 'USAGE')
	   AND NOT EXISTS (
		SELECT FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
		WHERE i.indrelid = pipeline.source AND a.attname = pipeline.time_column AND i.indpred IS NULL) THEN
		EXECUTE format('CREATE INDEX ON %s (%I)', pipeline.source, pipeline.time_column);
	END IF;
END $$;

-- Writes one "closed" change for each session that a watermark moving from
-- old_watermark to new_watermark makes final: it can no longer change.
CREATE FUNCTION sessionize.sessionize_close_sessions(pipeline sessionize.pipelines, old_watermark timestamptz,
													 new_watermark timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	measure_columns text;
BEGIN
	IF new_watermark > old_watermark OR (old_watermark IS NULL AND new_watermark IS NOT NULL) THEN
		SELECT coalesce(string_agg(format(', %I', m.name), '' ORDER BY m.position), '') INTO measure_columns
		FROM sessionize.pipeline_measures m WHERE m.pipeline = (sessionize_close_sessions.pipeline).name;
		EXECUTE format($q$
			INSERT INTO sessionize.%1$I (key, session_start, change, revision, last_event_at, events%3$s)
			SELECT key, session_start, 'closed', revision, last_event_at, events%3$s FROM sessionize.%2$I
			WHERE expires_at < $2 AND ($1 IS NULL OR expires_at >= $1)
			ORDER BY key, session_start$q$,
			pipeline.name || '_changes', pipeline.name || '_stored_sessions', measure_columns)
		USING old_watermark, new_watermark;
	END IF;
END $$;

CREATE FUNCTION sessionize.sessionize_set_pipeline_state(caller regrole, name text, new_state text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM sessionize.sessionize_read_pipeline(caller, name, false);
	UPDATE sessionize.pipelines p SET state = new_state WHERE p.name = sessionize_set_pipeline_state.name;
END $$;

CREATE FUNCTION sessionize.pause_pipeline(name text) RETURNS void
AS 'MODULE_PATHNAME', 'call_as_extension'
LANGUAGE C;
COMMENT ON FUNCTION sessionize.pause_pipeline(text) IS 'stops the worker of a pipeline; events wait in the staging table';

CREATE FUNCTION sessionize.sessionize_pause_pipeline(caller regrole, name text) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	SELECT sessionize.sessionize_set_pipeline_state(caller, name, 'paused');
END;

CREATE FUNCTION sessionize.resume_pipeline(name text) RETURNS void
AS 'MODULE_PATHNAME', 'call_as_extension'
LANGUAGE C;
COMMENT ON FUNCTION sessionize.resume_pipeline(text) IS 'lets the worker run a paused pipeline again';

CREATE FUNCTION sessionize.sessionize_resume_pipeline(caller regrole, name text) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	SELECT sessionize.sessionize_set_pipeline_state(caller, name, 'active');
END;

CREATE FUNCTION sessionize.drop_pipeline(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'call_as_extension'
LANGUAGE C;
COMMENT ON FUNCTION sessionize.drop_pipeline(text) IS
	'drops a pipeline and its tables (and the replication slot of a logical source); the source table stays';

CREATE FUNCTION sessionize.sessionize_drop_pipeline(caller regrole, name text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	dropped sessionize.pipelines;
BEGIN
	-- after a batch in progress (it holds the slot of a logical source)
	dropped := sessionize.sessionize_read_pipeline(caller, name, true);
	DELETE FROM sessionize.pipelines p WHERE p.name = sessionize_drop_pipeline.name;
	-- IF EXISTS: dropping the key's type with CASCADE takes the views along
	EXECUTE format('DROP VIEW IF EXISTS sessionize.%I, sessionize.%I, sessionize.%I',
				   name || '_sessions', name || '_sessions_live', name || '_sessions_final');
	EXECUTE format('DROP TABLE IF EXISTS sessionize.%I, sessionize.%I, sessionize.%I',
				   name || '_stored_sessions', name || '_late', name || '_changes');
	DELETE FROM sessionize.seen_fingerprints WHERE namespace = 'pipeline:' || name;
	-- a pipeline made later under this name belongs to someone else perhaps
	DELETE FROM sessionize.dead_letter d WHERE d.pipeline = sessionize_drop_pipeline.name;
	-- the grants the tables took with them; the owner's right to decode
	-- goes with its last logical pipeline
	IF dropped.source_kind = 'logical' AND NOT EXISTS (
		SELECT FROM sessionize.pipelines p WHERE p.owner = dropped.owner AND p.source_kind = 'logical') THEN
		EXECUTE format('REVOKE EXECUTE ON FUNCTION sessionize.sessionize_pgoutput_row(bytea, anyelement, bytea),'
					   ' sessionize.sessionize_pgoutput_problem(bytea, anyelement, bytea) FROM %s', dropped.owner);
	END IF;
	IF dropped.source_kind = 'logical' THEN
		PERFORM sessionize.sessionize_publish_source(dropped.source);
		-- last: dropping a slot cannot be rolled back
		PERFORM pg_drop_replication_slot(slot_name) FROM pg_replication_slots
		WHERE slot_name = sessionize.sessionize_slot_name(name);
	END IF;
END $$;
-- One batch -------------------------------------------------------------------

-- The type of the key in a pipeline's tables.
CREATE FUNCTION sessionize.sessionize_key_type(pipeline sessionize.pipelines)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
	WHERE a.attrelid = to_regclass(format('sessionize.%I', (pipeline).name || '_stored_sessions')) AND a.attname = 'key';
END;

CREATE FUNCTION sessionize.run_pipeline(name text, max_events integer DEFAULT 10000,
										OUT consumed bigint, OUT merged bigint, OUT duplicates bigint,
										OUT late bigint, OUT dead_lettered bigint)
AS 'MODULE_PATHNAME', 'call_as_extension'
LANGUAGE C;
COMMENT ON FUNCTION sessionize.run_pipeline(text, integer) IS
	'consumes one batch of a pipeline''s staging table in the calling transaction, with the rights of the pipeline''s owner; what the worker and pg_cron call';

-- One batch, in C (src/pipeline.c), with the settings that make the text of
-- times and values the same whatever the caller's.
CREATE FUNCTION sessionize.sessionize_run_pipeline(caller regrole, name text, max_events integer,
												   OUT consumed bigint, OUT merged bigint, OUT duplicates bigint,
												   OUT late bigint, OUT dead_lettered bigint)
AS 'MODULE_PATHNAME', 'run_pipeline_batch'
LANGUAGE C SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
SET DateStyle = 'ISO, MDY'
SET IntervalStyle = 'postgres'
SET extra_float_digits = 1
SET bytea_output = 'hex'
SET timezone_abbreviations = 'Default';
COMMENT ON FUNCTION sessionize.sessionize_run_pipeline(regrole, text, integer) IS
	'body of run_pipeline(), called with the calling role';

-- Late events are kept, not dropped: once allowed_lateness is raised (or to
-- accept them anyway), an operator merges them into the sessions.
CREATE FUNCTION sessionize.replay_late(name text, max_events integer DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'call_as_extension'
LANGUAGE C;
COMMENT ON FUNCTION sessionize.replay_late(text, integer) IS
	'merges events of a pipeline''s late table into its sessions, whatever the watermark (all, or the oldest max_events)';

CREATE FUNCTION sessionize.sessionize_replay_late(caller regrole, name text, max_events integer)
RETURNS bigint
AS 'MODULE_PATHNAME', 'replay_late_events'
LANGUAGE C SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
SET DateStyle = 'ISO, MDY'
SET IntervalStyle = 'postgres'
SET extra_float_digits = 1
SET bytea_output = 'hex'
SET timezone_abbreviations = 'Default';
COMMENT ON FUNCTION sessionize.sessionize_replay_late(regrole, text, integer) IS
	'body of replay_late(), called with the calling role';

-- Records a failed batch; the worker calls it in a fresh transaction.
CREATE FUNCTION sessionize.sessionize_record_failure(name text, error text)
RETURNS integer
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	UPDATE sessionize.pipeline_state
	SET last_error = error, last_error_at = clock_timestamp(), failures = failures + 1
	WHERE pipeline = name
	RETURNING failures;
END;

-- Observability ---------------------------------------------------------------

CREATE FUNCTION sessionize.pipeline_backlog(name text)
RETURNS bigint
AS 'MODULE_PATHNAME', 'call_as_extension'
LANGUAGE C STABLE;
COMMENT ON FUNCTION sessionize.pipeline_backlog(text) IS
	'events waiting in the staging table of a pipeline (counts them); NULL for a logical source';

-- Counts as the pipeline's owner: whatever the table runs (row security,
-- a rule that made it a view) runs with the owner's rights.
CREATE FUNCTION sessionize.sessionize_pipeline_backlog(caller regrole, name text)
RETURNS bigint
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	pipeline sessionize.pipelines;
	waiting bigint;
BEGIN
	pipeline := sessionize.sessionize_read_pipeline(caller, name, false);
	IF pipeline.source_kind IS DISTINCT FROM 'table'
	   OR NOT EXISTS (SELECT FROM pg_class WHERE oid = pipeline.source AND relkind = 'r') THEN
		RETURN NULL;
	END IF;
	BEGIN
		SELECT r.waiting INTO waiting
		FROM sessionize.sessionize_rows_as(pipeline.owner, format('SELECT count(*) FROM ONLY %s', pipeline.source), NULL::integer)
			 AS r(waiting bigint);
	EXCEPTION WHEN insufficient_privilege OR undefined_table OR raise_exception OR query_canceled THEN
		-- one owner's table cannot make pipeline_status fail for everyone
		RETURN NULL;
	END;
	RETURN waiting;
END $$;
-- Session measures: aggregate calls a pipeline declares over its events
-- ("first(url) AS landing_page").  src/measure_list.c reads and checks the
-- list; src/measures.c keeps each measure's state in the pipeline's tables:
-- a column of the measure's name holds its value, and first/last keep the
-- time of the value in <name>__at, approx_count_distinct its sketch in
-- <name>__sketch.

CREATE TABLE sessionize.pipeline_measures (
	pipeline text NOT NULL REFERENCES sessionize.pipelines ON DELETE CASCADE ON UPDATE CASCADE,
	position integer NOT NULL,
	name name NOT NULL,
	aggregate text NOT NULL,
	-- SQL over the event's row, measure_row; NULL for count(*)
	argument text,
	filter text,
	argument_type regtype,
	result_type regtype NOT NULL,
	-- the pipeline's measures_version that added it; 0: created with it
	added_in integer NOT NULL DEFAULT 0,
	PRIMARY KEY (pipeline, name),
	UNIQUE (pipeline, position)
);
COMMENT ON TABLE sessionize.pipeline_measures IS 'the measures each pipeline keeps per session';
SELECT pg_catalog.pg_extension_config_dump('sessionize.pipeline_measures', '');

CREATE FUNCTION sessionize.sessionize_parse_measures(source regclass, payload_column name, owner regrole, measures text,
													 OUT names text[], OUT aggregates text[], OUT arguments text[],
													 OUT filters text[], OUT argument_types regtype[],
													 OUT result_types regtype[])
AS 'MODULE_PATHNAME', 'parse_measures'
LANGUAGE C
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION sessionize.sessionize_parse_measures(regclass, name, regrole, text) IS
	'the measures of a list of aggregate calls, checked against the source as its owner';
-- What a pipeline's tables and views are made of, and alter_pipeline(),
-- which changes them: the stored sessions, late events and change log of
-- a pipeline, its measures' columns, the views over its sessions, and the
-- grants on them.  create_pipeline() (41_pipeline_functions.sql) checks
-- what it is given and calls sessionize_make_pipeline().

CREATE FUNCTION sessionize.sessionize_run_as(role regrole, statement text)
RETURNS void
AS 'MODULE_PATHNAME', 'run_as'
LANGUAGE C;
COMMENT ON FUNCTION sessionize.sessionize_run_as(regrole, text) IS
	'runs a statement of sessionize as a role, as sessionize_rows_as() runs a query';

-- The columns a pipeline's measures take in its tables: the value, and
-- first/last's time or approx_count_distinct's sketch beside it (is_state;
-- the change log and the views show values only).
CREATE FUNCTION sessionize.sessionize_measure_columns(pipeline text)
RETURNS TABLE (measure name, measure_position integer, added_in integer, column_name text, column_type text, is_state boolean)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT m.name, m.position, m.added_in, c.column_name, c.column_type, c.is_state
	FROM sessionize.pipeline_measures m
	CROSS JOIN LATERAL (SELECT m.name::text, m.result_type::text, false
						UNION ALL
						SELECT m.name || '__at', 'timestamptz', true WHERE m.aggregate IN ('first', 'last')
						UNION ALL
						SELECT m.name || '__sketch', 'bytea', true WHERE m.aggregate = 'approx_count_distinct')
		 AS c(column_name, column_type, is_state)
	WHERE m.pipeline = sessionize_measure_columns.pipeline
$$;

-- The views of a pipeline's sessions, readable by its owner, who may let
-- others read them.
CREATE FUNCTION sessionize.sessionize_make_pipeline_views(name text, owner regrole)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	measure_columns text;
BEGIN
	SELECT coalesce(string_agg(format(', s.%I', m.name), '' ORDER BY m.position), '') INTO measure_columns
	FROM sessionize.pipeline_measures m WHERE m.pipeline = sessionize_make_pipeline_views.name;
	-- A session's status follows the pipeline's progress, not its own writes,
	-- so it is computed when read: open while it expires at or after the
	-- greatest event time, idle after that, final once it expires before the
	-- watermark.  The live and final views filter on expires_at, which the
	-- index serves.
	EXECUTE format($view$
		CREATE VIEW sessionize.%1$I AS
		SELECT s.key, s.session_start, s.last_event_at, s.expires_at, s.events, s.type_counts, s.revision, s.updated_at%4$s,
			   CASE WHEN s.expires_at < st.watermark THEN 'final'
					WHEN s.expires_at >= st.max_event_time THEN 'open' ELSE 'idle' END AS status
		FROM sessionize.%2$I s, sessionize.pipeline_state st
		WHERE st.pipeline = %3$L$view$,
		name || '_sessions', name || '_stored_sessions', name, measure_columns);
	EXECUTE format($view$
		CREATE VIEW sessionize.%1$I AS
		SELECT s.key, s.session_start, s.last_event_at, s.expires_at, s.events, s.type_counts, s.revision, s.updated_at%4$s,
			   CASE WHEN s.expires_at >= st.max_event_time THEN 'open' ELSE 'idle' END AS status
		FROM sessionize.%2$I s, sessionize.pipeline_state st
		WHERE st.pipeline = %3$L AND (st.watermark IS NULL OR s.expires_at >= st.watermark)$view$,
		name || '_sessions_live', name || '_stored_sessions', name, measure_columns);
	EXECUTE format($view$
		CREATE VIEW sessionize.%1$I AS
		SELECT s.key, s.session_start, s.last_event_at, s.expires_at, s.events, s.type_counts, s.revision, s.updated_at%4$s,
			   'final'::text AS status
		FROM sessionize.%2$I s, sessionize.pipeline_state st
		WHERE st.pipeline = %3$L AND s.expires_at < st.watermark$view$,
		name || '_sessions_final', name || '_stored_sessions', name, measure_columns);
	EXECUTE format('COMMENT ON VIEW sessionize.%I IS %L', name || '_sessions', 'sessions of pipeline ' || name || ' with their status: open, idle or final');
	EXECUTE format('COMMENT ON VIEW sessionize.%I IS %L', name || '_sessions_live', 'open and idle sessions of pipeline ' || name);
	EXECUTE format('COMMENT ON VIEW sessionize.%I IS %L', name || '_sessions_final', 'sessions of pipeline ' || name || ' that can no longer change');
	EXECUTE format('GRANT SELECT ON sessionize.%I, sessionize.%I, sessionize.%I TO %s WITH GRANT OPTION',
				   name || '_sessions', name || '_sessions_live', name || '_sessions_final', owner);
	PERFORM sessionize.sessionize_comment_session_views(name);
END $$;

-- The catalog rows, tables, views and grants of a pipeline that
-- create_pipeline() has checked.
CREATE FUNCTION sessionize.sessionize_make_pipeline(name text, source regclass, key_column name, time_column name,
													gap interval, allowed_lateness interval, dedup_window interval,
													fingerprint_exclude text[], type_column name, owner regrole,
													allow_superuser boolean, source_kind text, updates_as_events boolean,
													payload_column name, key_type text, time_zone text, measures text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	made sessionize.pipelines;
	parsed record;
	stored_columns text := '';
	change_columns text := '';
BEGIN
	INSERT INTO sessionize.pipelines (name, source, key_column, time_column, gap, allowed_lateness,
									  dedup_window, fingerprint_exclude, type_column, owner, allow_superuser,
									  source_kind, updates_as_events, payload_column, time_zone)
	VALUES (name, source, key_column, time_column, gap, allowed_lateness, dedup_window,
			coalesce(fingerprint_exclude, '{}'), type_column, owner, allow_superuser, source_kind,
			coalesce(updates_as_events, false), payload_column, time_zone)
	RETURNING * INTO made;
	INSERT INTO sessionize.pipeline_state (pipeline) VALUES (name);
	IF measures IS NOT NULL THEN
		parsed := sessionize.sessionize_parse_measures(source, payload_column, owner, measures);
		INSERT INTO sessionize.pipeline_measures (pipeline, position, name, aggregate, argument, filter,
												  argument_type, result_type)
		SELECT sessionize_make_pipeline.name, m.position, m.name, m.aggregate, m.argument, m.filter,
			   m.argument_type, m.result_type
		FROM unnest(parsed.names, parsed.aggregates, parsed.arguments, parsed.filters, parsed.argument_types,
					parsed.result_types) WITH ORDINALITY
			 AS m(name, aggregate, argument, filter, argument_type, result_type, position);
		SELECT coalesce(string_agg(format(', %I %s', c.column_name, c.column_type), '' ORDER BY c.measure_position, c.is_state), ''),
			   coalesce(string_agg(format(', %I %s', c.column_name, c.column_type), '' ORDER BY c.measure_position)
						FILTER (WHERE NOT c.is_state), '')
		INTO stored_columns, change_columns
		FROM sessionize.sessionize_measure_columns(sessionize_make_pipeline.name) c;
	END IF;
	IF source_kind = 'logical' THEN
		PERFORM sessionize.sessionize_publish_source(source);
	ELSE
		PERFORM sessionize.sessionize_index_source_time(made);
	END IF;
	EXECUTE format('CREATE TABLE sessionize.%I (key %s NOT NULL, session_start timestamptz NOT NULL,'
				   ' last_event_at timestamptz NOT NULL, expires_at timestamptz NOT NULL, events bigint NOT NULL,'
				   ' type_counts jsonb, revision integer NOT NULL, updated_at timestamptz NOT NULL%s,'
				   ' PRIMARY KEY (key, session_start))', name || '_stored_sessions', key_type, stored_columns);
	EXECUTE format('CREATE INDEX ON sessionize.%I (expires_at)', name || '_stored_sessions');
	-- a dashboard reads the sessions of a time range
	EXECUTE format('CREATE INDEX ON sessionize.%I (session_start)', name || '_stored_sessions');
	EXECUTE format('CREATE TABLE sessionize.%I (id bigserial PRIMARY KEY, event jsonb NOT NULL, reason text NOT NULL,'
				   ' received_at timestamptz NOT NULL DEFAULT now())', name || '_late');
	EXECUTE format('CREATE TABLE sessionize.%I (change_id bigserial PRIMARY KEY, key %s NOT NULL,'
				   ' session_start timestamptz NOT NULL, change text NOT NULL, revision integer NOT NULL,'
				   ' last_event_at timestamptz NOT NULL, events bigint NOT NULL%s,'
				   ' changed_at timestamptz NOT NULL DEFAULT now())', name || '_changes', key_type, change_columns);
	PERFORM sessionize.sessionize_make_pipeline_views(name, owner);
	PERFORM sessionize.sessionize_add_rollups(made);
	-- what a batch would refuse is refused now: row security, code another role wrote
	PERFORM sessionize.sessionize_check_owner(made);
	-- a pipeline no worker will run says so now, not by waiting forever
	IF NOT (SELECT w.can_run FROM sessionize.sessionize_pipeline_service(made.id, 'active', 0) w) THEN
		RAISE WARNING 'no worker will run pipeline "%" as things stand: %', name,
			(SELECT w.waiting_reason FROM sessionize.sessionize_pipeline_service(made.id, 'active', 0) w)
			USING HINT = 'run_pipeline() runs its batches by hand or from pg_cron; pipeline_status says why it waits.';
	END IF;
	EXECUTE format('COMMENT ON TABLE sessionize.%I IS %L', name || '_stored_sessions',
				   'sessions of pipeline ' || name || ', as the pipeline writes them; read them through the views');
	EXECUTE format('COMMENT ON TABLE sessionize.%I IS %L', name || '_late', 'events that came later than the allowed lateness of pipeline ' || name);
	EXECUTE format('COMMENT ON TABLE sessionize.%I IS %L', name || '_changes', 'session changes made by pipeline ' || name);

	-- The owner reads the pipeline's results and may let others read them;
	-- only the extension writes them.  A logical pipeline's owner decodes
	-- its source's rows.
	EXECUTE format('GRANT SELECT ON sessionize.%I, sessionize.%I TO %s WITH GRANT OPTION',
				   name || '_late', name || '_changes', owner);
	IF source_kind = 'logical' THEN
		EXECUTE format('GRANT EXECUTE ON FUNCTION sessionize.sessionize_pgoutput_row(bytea, anyelement, bytea),'
					   ' sessionize.sessionize_pgoutput_problem(bytea, anyelement, bytea) TO %s', owner);
	END IF;
END $$;

CREATE FUNCTION sessionize.alter_pipeline(
	name text,
	allowed_lateness interval DEFAULT NULL,
	dedup_window interval DEFAULT NULL,
	fingerprint_exclude text[] DEFAULT NULL,
	reset_allowed_lateness boolean DEFAULT false,
	reset_dedup_window boolean DEFAULT false,
	measures text DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'call_as_extension'
LANGUAGE C;
COMMENT ON FUNCTION sessionize.alter_pipeline(text, interval, interval, text[], boolean, boolean, text) IS
	'changes the lateness, dedup window, fingerprint exclusions or measures of a pipeline (reset_* back to unbounded)';

CREATE FUNCTION sessionize.sessionize_alter_pipeline(caller regrole, name text, allowed_lateness interval,
													 dedup_window interval, fingerprint_exclude text[],
													 reset_allowed_lateness boolean, reset_dedup_window boolean,
													 measures text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
SET DateStyle = 'ISO, MDY'
SET IntervalStyle = 'postgres'
SET extra_float_digits = 1
SET bytea_output = 'hex'
SET timezone_abbreviations = 'Default'
AS $$
DECLARE
	pipeline sessionize.pipelines;
	old_watermark timestamptz;
	new_watermark timestamptz;
BEGIN
	IF allowed_lateness IS NOT NULL AND allowed_lateness <> interval '0' THEN
		PERFORM sessionize.sessionize_check_interval(allowed_lateness, 'allowed_lateness');
	END IF;
	IF dedup_window IS NOT NULL THEN
		PERFORM sessionize.sessionize_check_interval(dedup_window, 'dedup_window');
	END IF;
	-- between batches, so that a batch never commits the watermark of the old lateness
	pipeline := sessionize.sessionize_read_pipeline(caller, name, true);
	PERFORM sessionize.sessionize_use_time_zone(pipeline);
	SELECT s.watermark INTO old_watermark FROM sessionize.pipeline_state s WHERE s.pipeline = pipeline.name;
	UPDATE sessionize.pipelines p
	SET allowed_lateness = CASE WHEN reset_allowed_lateness THEN NULL
								ELSE coalesce(sessionize_alter_pipeline.allowed_lateness, p.allowed_lateness) END,
		dedup_window = CASE WHEN reset_dedup_window THEN NULL
							ELSE coalesce(sessionize_alter_pipeline.dedup_window, p.dedup_window) END,
		fingerprint_exclude = coalesce(sessionize_alter_pipeline.fingerprint_exclude, p.fingerprint_exclude)
	WHERE p.name = sessionize_alter_pipeline.name;
	-- the watermark follows the new lateness at once
	UPDATE sessionize.pipeline_state s
	SET watermark = s.max_event_time - p.allowed_lateness
	FROM sessionize.pipelines p
	WHERE p.name = sessionize_alter_pipeline.name AND s.pipeline = p.name
	RETURNING s.watermark INTO new_watermark;
	PERFORM sessionize.sessionize_close_sessions(pipeline, old_watermark, new_watermark);
	IF measures IS NOT NULL THEN
		PERFORM sessionize.sessionize_alter_measures(pipeline, measures);
	END IF;
END $$;

-- Sets a pipeline's measures to a new list.  A measure of the same name and
-- definition is kept as it is; one no longer listed is dropped with its
-- columns; one new (or redefined) is added, NULL for the sessions stored
-- before, whose earlier events are gone.  The views are made again with the
-- new columns, and the grants on them are given again by their grantors.
CREATE FUNCTION sessionize.sessionize_alter_measures(pipeline sessionize.pipelines, measures text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	stored text := pipeline.name || '_stored_sessions';
	changes text := pipeline.name || '_changes';
	-- with the KPI views, whose measure columns change too
	views text[] := sessionize.sessionize_result_views(pipeline.name);
	parsed record;
	dropped text[];
	added text[];
	version integer;
	stored_columns text;
	change_columns text;
	view_owner oid;
	saved record;
	granted_views text[];
	privileges text[];
	grantors oid[];
	grantees oid[];
	grantable boolean[];
	done boolean[];
	progress boolean;
	statement text;
BEGIN
	IF btrim(measures) = '' THEN
		SELECT NULL::text[] AS names, NULL::text[] AS aggregates, NULL::text[] AS arguments, NULL::text[] AS filters,
			   NULL::regtype[] AS argument_types, NULL::regtype[] AS result_types
		INTO parsed;
	ELSE
		parsed := sessionize.sessionize_parse_measures(pipeline.source, pipeline.payload_column, pipeline.owner,
														measures);
	END IF;
	SELECT s.measures_version INTO version FROM sessionize.pipeline_state s WHERE s.pipeline = pipeline.name;
	-- dropped: no longer listed as they are; added: listed, and not kept
	SELECT coalesce(array_agg(m.name::text ORDER BY m.position), '{}') INTO dropped
	FROM sessionize.pipeline_measures m
	WHERE m.pipeline = pipeline.name
	  AND NOT EXISTS (SELECT
					  FROM unnest(parsed.names, parsed.aggregates, parsed.arguments, parsed.filters,
								  parsed.argument_types, parsed.result_types)
						   AS n(name, aggregate, argument, filter, argument_type, result_type)
					  WHERE n.name = m.name AND n.aggregate = m.aggregate
						AND n.argument IS NOT DISTINCT FROM m.argument AND n.filter IS NOT DISTINCT FROM m.filter
						AND n.argument_type IS NOT DISTINCT FROM m.argument_type
						AND n.result_type = m.result_type);
	SELECT coalesce(array_agg(n.name ORDER BY n.position), '{}') INTO added
	FROM unnest(parsed.names) WITH ORDINALITY AS n(name, position)
	WHERE NOT EXISTS (SELECT FROM sessionize.pipeline_measures m
					  WHERE m.pipeline = pipeline.name AND m.name = n.name AND NOT m.name = ANY (dropped));
	IF dropped = '{}' AND added = '{}'
	   AND NOT EXISTS (SELECT FROM sessionize.pipeline_measures m
					   JOIN unnest(parsed.names) WITH ORDINALITY AS n(name, position) ON n.name = m.name
					   WHERE m.pipeline = pipeline.name AND m.position <> n.position) THEN
		RETURN;
	END IF;

	-- the grants on the views, to give again once they are made anew
	SELECT c.relowner INTO view_owner FROM pg_class c WHERE c.oid = format('sessionize.%I', views[1])::regclass;
	SELECT coalesce(array_agg(v.view), '{}'), coalesce(array_agg(a.privilege_type), '{}'),
		   coalesce(array_agg(a.grantor), '{}'), coalesce(array_agg(a.grantee), '{}'),
		   coalesce(array_agg(a.is_grantable), '{}')
	INTO granted_views, privileges, grantors, grantees, grantable
	FROM unnest(views) v(view)
	JOIN pg_class c ON c.oid = format('sessionize.%I', v.view)::regclass
	CROSS JOIN LATERAL aclexplode(c.relacl) a
	WHERE a.grantee <> c.relowner AND NOT (a.grantee = pipeline.owner AND a.grantor = c.relowner);
	BEGIN
		EXECUTE format('DROP VIEW %s', (SELECT string_agg(format('sessionize.%I', v.view), ', ') FROM unnest(views) v(view)));
	EXCEPTION WHEN dependent_objects_still_exist THEN
		RAISE EXCEPTION 'cannot change the measures of pipeline "%" while other objects read its views', pipeline.name
			USING ERRCODE = 'dependent_objects_still_exist',
				  DETAIL = SQLERRM,
				  HINT = 'Drop the objects that read the views, alter the pipeline, and create them again.';
	END;

	FOR saved IN
		SELECT c.measure, string_agg(format('DROP COLUMN %I', c.column_name), ', ') AS stored_columns,
			   string_agg(format('DROP COLUMN %I', c.column_name), ', ') FILTER (WHERE NOT c.is_state) AS change_columns
		FROM sessionize.sessionize_measure_columns(pipeline.name) c
		WHERE c.measure = ANY (dropped)
		GROUP BY c.measure
	LOOP
		EXECUTE format('ALTER TABLE sessionize.%I %s', stored, saved.stored_columns);
		EXECUTE format('ALTER TABLE sessionize.%I %s', changes, saved.change_columns);
	END LOOP;
	DELETE FROM sessionize.pipeline_measures m WHERE m.pipeline = pipeline.name AND m.name = ANY (dropped);
	-- positions are unique: out of the way first
	UPDATE sessionize.pipeline_measures m SET position = -n.position
	FROM unnest(parsed.names) WITH ORDINALITY AS n(name, position)
	WHERE m.pipeline = pipeline.name AND m.name = n.name;

	IF added <> '{}' THEN
		IF version = 0 THEN
			EXECUTE format('ALTER TABLE sessionize.%I ADD COLUMN measured_since integer NOT NULL DEFAULT 0', stored);
		END IF;
		version := version + 1;
		UPDATE sessionize.pipeline_state s SET measures_version = version WHERE s.pipeline = pipeline.name;
		INSERT INTO sessionize.pipeline_measures (pipeline, position, name, aggregate, argument, filter,
												  argument_type, result_type, added_in)
		SELECT pipeline.name, -n.position, n.name, n.aggregate, n.argument, n.filter, n.argument_type,
			   n.result_type, version
		FROM unnest(parsed.names, parsed.aggregates, parsed.arguments, parsed.filters, parsed.argument_types,
					parsed.result_types) WITH ORDINALITY
			 AS n(name, aggregate, argument, filter, argument_type, result_type, position)
		WHERE n.name = ANY (added);
		SELECT string_agg(format('ADD COLUMN %I %s', c.column_name, c.column_type), ', '
						  ORDER BY c.measure_position, c.is_state),
			   string_agg(format('ADD COLUMN %I %s', c.column_name, c.column_type), ', ' ORDER BY c.measure_position)
				   FILTER (WHERE NOT c.is_state)
		INTO stored_columns, change_columns
		FROM sessionize.sessionize_measure_columns(pipeline.name) c
		WHERE c.measure = ANY (added);
		EXECUTE format('ALTER TABLE sessionize.%I %s', stored, stored_columns);
		EXECUTE format('ALTER TABLE sessionize.%I %s', changes, change_columns);
	END IF;
	UPDATE sessionize.pipeline_measures m SET position = -m.position WHERE m.pipeline = pipeline.name;

	PERFORM sessionize.sessionize_make_pipeline_views(pipeline.name, pipeline.owner);
	IF cardinality(views) > 3 THEN
		PERFORM sessionize.sessionize_forget_rollup_measures(pipeline.name, dropped);
		PERFORM sessionize.sessionize_make_kpi_views(pipeline.name, pipeline.owner);
	END IF;
	-- Each grant by the role that gave it, once that role holds the grant
	-- option again: grants made on grants come after them.
	done := array_fill(false, ARRAY[cardinality(grantors)]);
	LOOP
		progress := false;
		FOR i IN 1 .. cardinality(grantors) LOOP
			CONTINUE WHEN done[i];
			CONTINUE WHEN grantors[i] <> view_owner
					  AND NOT has_table_privilege(grantors[i], format('sessionize.%I', granted_views[i]),
												  privileges[i] || ' WITH GRANT OPTION');
			statement := format('GRANT %s ON sessionize.%I TO %s%s', privileges[i], granted_views[i],
								CASE WHEN grantees[i] = 0 THEN 'PUBLIC' ELSE grantees[i]::regrole::text END,
								CASE WHEN grantable[i] THEN ' WITH GRANT OPTION' ELSE '' END);
			IF grantors[i] = view_owner THEN
				EXECUTE statement;
			ELSE
				PERFORM sessionize.sessionize_run_as(grantors[i]::regrole, statement);
			END IF;
			done[i] := true;
			progress := true;
		END LOOP;
		EXIT WHEN NOT progress;
	END LOOP;
	IF dropped <> '{}' THEN
		RAISE NOTICE 'measures of pipeline "%" dropped: %', pipeline.name, array_to_string(dropped, ', ');
	END IF;
	IF added <> '{}' THEN
		RAISE NOTICE 'measures of pipeline "%" added: %', pipeline.name, array_to_string(added, ', ')
			USING HINT = 'They are NULL for the sessions stored before.';
	END IF;
END $$;
-- What users read of their pipelines: status and dead letters, each row for
-- the roles with the rights of the pipeline's owner.

-- Whether a worker serves a pipeline, and if not, why (src/service.c).
CREATE FUNCTION sessionize.sessionize_pipeline_service(id bigint, state text, failures integer,
														OUT worker_pid integer, OUT waiting_reason text,
														OUT can_run boolean)
AS 'MODULE_PATHNAME', 'pipeline_service'
LANGUAGE C STABLE;
COMMENT ON FUNCTION sessionize.sessionize_pipeline_service(bigint, text, integer) IS
	'the worker of a pipeline, or why it has none; whether it can run as things stand';

-- A role sees the pipelines whose owner's rights it has, and those whose
-- results it reads; security_barrier, so that no function of the reader's
-- sees the rows it may not.
CREATE VIEW sessionize.pipeline_status WITH (security_barrier) AS
SELECT p.name, p.state, p.source_kind,
	   w.worker_pid, w.waiting_reason,
	   s.consumed, s.merged, s.duplicates, s.late, s.dead_lettered, s.batches,
	   b.backlog,
	   s.max_event_time, s.watermark,
	   -- nothing is behind while no event waits in a staging table
	   CASE WHEN b.backlog OPERATOR(pg_catalog.=) 0 THEN '0'::pg_catalog.interval
			ELSE pg_catalog.now() OPERATOR(pg_catalog.-) s.last_event_time END AS lag,
	   s.last_batch_at, s.last_error, s.last_error_at, s.failures,
	   s.checkpoint_lsn,
	   -- WAL the slot of a logical source keeps from being recycled
	   pg_catalog.pg_wal_lsn_diff(
		   CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn()
				ELSE pg_catalog.pg_current_wal_lsn() END, r.restart_lsn)::bigint AS retained_wal_bytes,
	   p.owner
FROM sessionize.pipelines p
JOIN sessionize.pipeline_state s ON s.pipeline OPERATOR(pg_catalog.=) p.name
CROSS JOIN LATERAL sessionize.sessionize_pipeline_service(p.id, p.state, s.failures) w
-- counting the backlog reads the owner's table: for roles with its rights
CROSS JOIN LATERAL (SELECT CASE WHEN pg_catalog.pg_has_role(p.owner, 'USAGE')
								THEN sessionize.pipeline_backlog(p.name) END AS backlog) b
LEFT JOIN pg_catalog.pg_replication_slots r
	   ON p.source_kind OPERATOR(pg_catalog.=) 'logical'
	  AND r.slot_name OPERATOR(pg_catalog.=) pg_catalog.format('sessionize_%s_%s',
			(SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()),
			p.name)
WHERE pg_catalog.pg_has_role(p.owner, 'USAGE')
   -- a reader of the pipeline's results (grant_reader()) sees how fresh they are
   OR pg_catalog.has_table_privilege(
		pg_catalog.to_regclass(pg_catalog.format('sessionize.%I', p.name OPERATOR(pg_catalog.||) '_sessions')), 'SELECT');
COMMENT ON VIEW sessionize.pipeline_status IS 'one row per pipeline the current role may use or whose results it reads: state, worker or why it waits for one, counts, backlog, watermark, lag, last error';

-- A role sees the dead letters of the pipelines whose owner's rights it has.
CREATE VIEW sessionize.pipeline_dead_letters WITH (security_barrier) AS
SELECT d.id, d.pipeline, d.event, d.error, d.failed_at
FROM sessionize.dead_letter d
JOIN sessionize.pipelines p ON p.name OPERATOR(pg_catalog.=) d.pipeline
WHERE pg_catalog.pg_has_role(p.owner, 'USAGE');
COMMENT ON VIEW sessionize.pipeline_dead_letters IS 'the dead letters of the pipelines the current role may use';
-- DROP EXTENSION sessionize (or DROP SCHEMA sessionize) is refused while
-- pipelines exist, and otherwise drops the publications of logical sources
-- first, so that nothing of sessionize is left behind (src/extension_drop.c).
CREATE FUNCTION sessionize.sessionize_guard_extension_drop()
RETURNS event_trigger
AS 'MODULE_PATHNAME', 'guard_extension_drop'
LANGUAGE C;
COMMENT ON FUNCTION sessionize.sessionize_guard_extension_drop() IS
	'refuses to drop sessionize while it has pipelines; drops its publications otherwise';

CREATE EVENT TRIGGER sessionize_guard_extension_drop ON ddl_command_start
	WHEN TAG IN ('DROP EXTENSION', 'DROP SCHEMA')
	EXECUTE FUNCTION sessionize.sessionize_guard_extension_drop();
COMMENT ON EVENT TRIGGER sessionize_guard_extension_drop IS
	'refuses DROP EXTENSION sessionize while pipelines exist; drops the publications sessionize made otherwise';
-- What a BI tool reads of a pipeline: its KPI rollups, <name>_kpi_hourly
-- and <name>_kpi_daily, and the readers a pipeline's owner lets read its
-- results.
--
-- A pipeline's rollups are five tables, each with a row per grain ('hour'
-- or 'day') and bucket (the UTC start of the hour or day a session started
-- in): <name>_kpi_buckets (sessions, users, events, bounced, durations),
-- <name>_kpi_users (sessions per key: users is exact), <name>_kpi_durations
-- (sessions per duration bin: percentiles within 2%), <name>_kpi_types
-- (events per event type) and <name>_kpi_measures (per measure summed: the
-- total and the sessions where it is not NULL).  Each batch moves them in
-- its transaction (src/rollups.c): what it replaces is subtracted, what it
-- writes is added, and a row that falls to zero sessions is deleted.  A
-- pipeline keeps rollups while these tables exist (set_rollups()).

-- The bin of a duration in microseconds: -1 for none; otherwise i with
-- gamma^(i-1) < duration <= gamma^i, gamma = 1.02 / 0.98, so that the
-- value a bin reports, 2 gamma^i / (gamma + 1), is within 2% of every
-- duration in it.  The batches bin with the same C function.
CREATE FUNCTION sessionize.sessionize_duration_bin(duration bigint)
RETURNS integer
AS 'MODULE_PATHNAME', 'duration_bin'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION sessionize.sessionize_duration_bin(bigint) IS
	'the bin of a session duration in microseconds in the KPI rollups';

-- The measures a pipeline's rollups sum: counts and sums ('sum'), and
-- bool_or/bool_and, counted where true ('bool').
CREATE FUNCTION sessionize.sessionize_rollup_measures(pipeline text)
RETURNS TABLE (measure name, measure_position integer, kind text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT m.name, m.position, CASE WHEN m.aggregate IN ('bool_or', 'bool_and') THEN 'bool' ELSE 'sum' END
	FROM sessionize.pipeline_measures m
	WHERE m.pipeline = sessionize_rollup_measures.pipeline
	  AND m.aggregate IN ('count', 'sum', 'bool_or', 'bool_and')
$$;

-- The names of a pipeline's result views that exist: what its readers read.
CREATE FUNCTION sessionize.sessionize_result_views(pipeline text)
RETURNS text[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT coalesce(array_agg(v.name ORDER BY v.position), '{}')
	FROM unnest(ARRAY[pipeline || '_sessions', pipeline || '_sessions_live', pipeline || '_sessions_final',
					  pipeline || '_kpi_hourly', pipeline || '_kpi_daily']) WITH ORDINALITY AS v(name, position)
	WHERE to_regclass(format('sessionize.%I', v.name)) IS NOT NULL
$$;

-- The views over a pipeline's rollups, readable by its owner, who may let
-- others read them.  Percentiles: the first bin whose running count reaches
-- the rank that percentile_disc() takes.
CREATE FUNCTION sessionize.sessionize_make_kpi_views(name text, owner regrole)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	typed boolean;
	measure_columns text;
	view_name text;
	grain text;
	measure record;
BEGIN
	SELECT p.type_column IS NOT NULL INTO typed FROM sessionize.pipelines p WHERE p.name = sessionize_make_kpi_views.name;
	SELECT coalesce(string_agg(
			   CASE WHEN m.kind = 'sum' THEN
						format(', (SELECT x.total FROM sessionize.%1$I x WHERE x.grain OPERATOR(pg_catalog.=) b.grain'
							   ' AND x.bucket OPERATOR(pg_catalog.=) b.bucket AND x.measure OPERATOR(pg_catalog.=) %2$L) AS %3$I',
							   name || '_kpi_measures', m.measure, m.measure || '_sum')
					ELSE
						format(', coalesce((SELECT x.total FROM sessionize.%1$I x WHERE x.grain OPERATOR(pg_catalog.=) b.grain'
							   ' AND x.bucket OPERATOR(pg_catalog.=) b.bucket AND x.measure OPERATOR(pg_catalog.=) %2$L), 0)::bigint AS %3$I,'
							   ' (SELECT (x.total::double precision OPERATOR(pg_catalog./) x.sessions)'
							   ' FROM sessionize.%1$I x WHERE x.grain OPERATOR(pg_catalog.=) b.grain'
							   ' AND x.bucket OPERATOR(pg_catalog.=) b.bucket AND x.measure OPERATOR(pg_catalog.=) %2$L) AS %4$I',
							   name || '_kpi_measures', m.measure, m.measure || '_sessions', m.measure || '_rate')
			   END, '' ORDER BY m.measure_position), '')
	INTO measure_columns
	FROM sessionize.sessionize_rollup_measures(name) m;
	FOREACH grain IN ARRAY ARRAY['hour', 'day'] LOOP
		view_name := name || CASE grain WHEN 'hour' THEN '_kpi_hourly' ELSE '_kpi_daily' END;
		EXECUTE format($view$
			CREATE VIEW sessionize.%1$I AS
			SELECT b.bucket, b.sessions, b.users, b.events, b.bounced,
				   b.bounced::double precision OPERATOR(pg_catalog./) b.sessions AS bounce_rate,
				   b.duration::double precision OPERATOR(pg_catalog./) b.sessions OPERATOR(pg_catalog./) 1e6 AS avg_duration,
				   p.p50_duration, p.p90_duration%5$s%6$s
			FROM sessionize.%2$I b
			CROSS JOIN LATERAL (
				SELECT pg_catalog.min(d.value) FILTER (WHERE d.running OPERATOR(pg_catalog.>=) (0.5 OPERATOR(pg_catalog.*) b.sessions)) AS p50_duration,
					   pg_catalog.min(d.value) FILTER (WHERE d.running OPERATOR(pg_catalog.>=) (0.9 OPERATOR(pg_catalog.*) b.sessions)) AS p90_duration
				FROM (SELECT CASE WHEN d.bin OPERATOR(pg_catalog.<) 0 THEN 0
								  ELSE 2 OPERATOR(pg_catalog.*) pg_catalog.power(1.02::double precision OPERATOR(pg_catalog./) 0.98, d.bin)
									   OPERATOR(pg_catalog./) (1.02::double precision OPERATOR(pg_catalog./) 0.98 OPERATOR(pg_catalog.+) 1)
									   OPERATOR(pg_catalog./) 1e6 END AS value,
							 pg_catalog.sum(d.sessions) OVER (ORDER BY d.bin) AS running
					  FROM sessionize.%3$I d
					  WHERE d.grain OPERATOR(pg_catalog.=) b.grain AND d.bucket OPERATOR(pg_catalog.=) b.bucket) d) p
			WHERE b.grain OPERATOR(pg_catalog.=) %4$L$view$,
			view_name, name || '_kpi_buckets', name || '_kpi_durations', grain,
			CASE WHEN typed THEN
				format(', (SELECT pg_catalog.jsonb_object_agg(t.type, t.events) FROM sessionize.%I t'
					   ' WHERE t.grain OPERATOR(pg_catalog.=) b.grain AND t.bucket OPERATOR(pg_catalog.=) b.bucket) AS type_counts',
					   name || '_kpi_types')
			ELSE '' END,
			measure_columns);
		EXECUTE format('COMMENT ON VIEW sessionize.%I IS %L', view_name,
					   format('KPIs of the sessions of pipeline %s per %s they started in (UTC), kept by its batches;'
							  ' equal to the same aggregates over %s', name, grain, name || '_sessions'));
		EXECUTE format('COMMENT ON COLUMN sessionize.%I.bucket IS %L', view_name,
					   format('start of the %s, in UTC, that the sessions started in', grain));
		EXECUTE format('COMMENT ON COLUMN sessionize.%I.sessions IS %L', view_name, 'sessions that started in the bucket');
		EXECUTE format('COMMENT ON COLUMN sessionize.%I.users IS %L', view_name, 'distinct keys with a session that started in the bucket (exact)');
		EXECUTE format('COMMENT ON COLUMN sessionize.%I.events IS %L', view_name, 'events of those sessions, each distinct event once');
		EXECUTE format('COMMENT ON COLUMN sessionize.%I.bounced IS %L', view_name, 'sessions of exactly one event (bounces)');
		EXECUTE format('COMMENT ON COLUMN sessionize.%I.bounce_rate IS %L', view_name, 'bounced / sessions, from 0 to 1');
		EXECUTE format('COMMENT ON COLUMN sessionize.%I.avg_duration IS %L', view_name,
					   'mean duration of the sessions in seconds; a session lasts from its first to its last event (0 for a bounce)');
		EXECUTE format('COMMENT ON COLUMN sessionize.%I.p50_duration IS %L', view_name,
					   'median session duration in seconds: percentile_disc(0.5) within 2% (exact when 0)');
		EXECUTE format('COMMENT ON COLUMN sessionize.%I.p90_duration IS %L', view_name,
					   '90th percentile of session duration in seconds: percentile_disc(0.9) within 2% (exact when 0)');
		IF typed THEN
			EXECUTE format('COMMENT ON COLUMN sessionize.%I.type_counts IS %L', view_name,
						   'events of the sessions per event type, as {"type": count}');
		END IF;
		FOR measure IN SELECT * FROM sessionize.sessionize_rollup_measures(name) m ORDER BY m.measure_position LOOP
			IF measure.kind = 'sum' THEN
				EXECUTE format('COMMENT ON COLUMN sessionize.%I.%I IS %L', view_name, measure.measure || '_sum',
							   format('sum of measure %s over the sessions (NULL when it is NULL for all)', measure.measure));
			ELSE
				EXECUTE format('COMMENT ON COLUMN sessionize.%I.%I IS %L', view_name, measure.measure || '_sessions',
							   format('sessions where measure %s is true', measure.measure));
				EXECUTE format('COMMENT ON COLUMN sessionize.%I.%I IS %L', view_name, measure.measure || '_rate',
							   format('share of the sessions where measure %s is not NULL for which it is true, from 0 to 1', measure.measure));
			END IF;
		END LOOP;
		EXECUTE format('GRANT SELECT ON sessionize.%I TO %s WITH GRANT OPTION', view_name, owner);
	END LOOP;
END $$;

-- The comments on the columns of a pipeline's sessions views, which BI
-- tools show beside them.
CREATE FUNCTION sessionize.sessionize_comment_session_views(name text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	view_name text;
	comment record;
BEGIN
	FOREACH view_name IN ARRAY ARRAY[name || '_sessions', name || '_sessions_live', name || '_sessions_final'] LOOP
		FOR comment IN
			SELECT c.column_name, c.comment
			FROM (VALUES ('key', 'the key the events are grouped by (the pipeline''s key column)'),
						 ('session_start', 'time of the session''s first event (timestamptz: shown in the reader''s time zone)'),
						 ('last_event_at', 'time of its last event; its duration is last_event_at - session_start (0 for a bounce, a session of one event)'),
						 ('expires_at', 'when it ends unless another event comes: the greatest time of its events plus the gap'),
						 ('events', 'its distinct events (re-deliveries are not counted)'),
						 ('type_counts', 'its events per event type, as {"type": count}; NULL without a type column'),
						 ('revision', '1 when a batch opened it, one more each time a batch changed it'),
						 ('updated_at', 'when a batch last wrote it'),
						 ('status', 'open while it expires at or after the greatest event time merged, idle after that, final once it expires before the watermark'))
				 AS c(column_name, comment)
			UNION ALL
			SELECT m.name, format('measure %s: %s(%s)%s over the session''s events; NULL for the sessions stored before it was added',
								  m.name, m.aggregate, coalesce(m.argument, '*'),
								  CASE WHEN m.filter IS NOT NULL THEN format(' FILTER (WHERE %s)', m.filter) ELSE '' END)
			FROM sessionize.pipeline_measures m WHERE m.pipeline = sessionize_comment_session_views.name
		LOOP
			EXECUTE format('COMMENT ON COLUMN sessionize.%I.%I IS %L', view_name, comment.column_name, comment.comment);
		END LOOP;
	END LOOP;
END $$;

-- Makes a pipeline's rollup tables, fills them from its stored sessions
-- with the aggregates the batches keep, and makes its KPI views.
CREATE FUNCTION sessionize.sessionize_add_rollups(pipeline sessionize.pipelines)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
	name text := pipeline.name;
	stored text := format('sessionize.%I', pipeline.name || '_stored_sessions');
	-- each stored session once per grain, with its bucket and duration
	sessions text;
	measure_values text;
BEGIN
	IF to_regclass(format('sessionize.%I', name || '_kpi_buckets')) IS NOT NULL THEN
		RETURN;
	END IF;
	EXECUTE format('CREATE TABLE sessionize.%I (grain text NOT NULL, bucket timestamptz NOT NULL,'
				   ' sessions bigint NOT NULL CHECK (sessions > 0), users bigint NOT NULL, events bigint NOT NULL,'
				   ' bounced bigint NOT NULL, duration bigint NOT NULL)',
				   name || '_kpi_buckets');
	EXECUTE format('CREATE TABLE sessionize.%I (grain text NOT NULL, bucket timestamptz NOT NULL, key %s NOT NULL,'
				   ' sessions bigint NOT NULL CHECK (sessions > 0))',
				   name || '_kpi_users', sessionize.sessionize_key_type(pipeline));
	EXECUTE format('CREATE TABLE sessionize.%I (grain text NOT NULL, bucket timestamptz NOT NULL, bin integer NOT NULL,'
				   ' sessions bigint NOT NULL CHECK (sessions > 0))',
				   name || '_kpi_durations');
	EXECUTE format('CREATE TABLE sessionize.%I (grain text NOT NULL, bucket timestamptz NOT NULL, type text NOT NULL,'
				   ' events bigint NOT NULL CHECK (events > 0))',
				   name || '_kpi_types');
	EXECUTE format('CREATE TABLE sessionize.%I (grain text NOT NULL, bucket timestamptz NOT NULL, measure text NOT NULL,'
				   ' sessions bigint NOT NULL CHECK (sessions > 0), total numeric NOT NULL)',
				   name || '_kpi_measures');
	EXECUTE format('COMMENT ON TABLE sessionize.%I IS %L', name || '_kpi_buckets',
				   'KPI rollups of pipeline ' || name || ' per hour and day, as its batches keep them; read them through the views');
	EXECUTE format('COMMENT ON TABLE sessionize.%I IS %L', name || '_kpi_users',
				   'sessions per key, hour and day of pipeline ' || name || ': its rollups'' distinct users');
	EXECUTE format('COMMENT ON TABLE sessionize.%I IS %L', name || '_kpi_durations',
				   'sessions per duration bin, hour and day of pipeline ' || name || ': its rollups'' percentiles');
	EXECUTE format('COMMENT ON TABLE sessionize.%I IS %L', name || '_kpi_types',
				   'events per type, hour and day of pipeline ' || name || ': its rollups'' type counts');
	EXECUTE format('COMMENT ON TABLE sessionize.%I IS %L', name || '_kpi_measures',
				   'measures summed per hour and day of pipeline ' || name || ': its rollups'' measure columns');

	sessions := format('(SELECT r.grain, pg_catalog.date_trunc(r.grain, s.session_start, ''UTC'') AS bucket, s.*,'
					   ' (EXTRACT(epoch FROM s.last_event_at - s.session_start) * 1000000)::bigint AS duration'
					   ' FROM %s s CROSS JOIN (VALUES (''hour''), (''day'')) r(grain)) s', stored);
	EXECUTE format('INSERT INTO sessionize.%I SELECT s.grain, s.bucket, s.key, count(*) FROM %s GROUP BY 1, 2, 3',
				   name || '_kpi_users', sessions);
	EXECUTE format('INSERT INTO sessionize.%I SELECT s.grain, s.bucket, count(*), u.users, sum(s.events),'
				   ' count(*) FILTER (WHERE s.events = 1), sum(s.duration)'
				   ' FROM %s JOIN (SELECT u.grain, u.bucket, count(*) AS users FROM sessionize.%I u GROUP BY 1, 2) u'
				   ' ON u.grain = s.grain AND u.bucket = s.bucket GROUP BY 1, 2, u.users',
				   name || '_kpi_buckets', sessions, name || '_kpi_users');
	EXECUTE format('INSERT INTO sessionize.%I SELECT s.grain, s.bucket, sessionize.sessionize_duration_bin(s.duration), count(*)'
				   ' FROM %s GROUP BY 1, 2, 3', name || '_kpi_durations', sessions);
	EXECUTE format('INSERT INTO sessionize.%I SELECT s.grain, s.bucket, t.type, sum(t.events::bigint)'
				   ' FROM %s, jsonb_each_text(s.type_counts) t(type, events) GROUP BY 1, 2, 3 HAVING sum(t.events::bigint) > 0',
				   name || '_kpi_types', sessions);
	SELECT string_agg(format('(%L, %s)', m.measure,
							 CASE WHEN m.kind = 'sum' THEN format('s.%I::numeric', m.measure)
								  ELSE format('CASE WHEN s.%I THEN 1 WHEN NOT s.%1$I THEN 0 END::numeric', m.measure) END), ', ')
	INTO measure_values
	FROM sessionize.sessionize_rollup_measures(name) m;
	IF measure_values IS NOT NULL THEN
		EXECUTE format('INSERT INTO sessionize.%I SELECT s.grain, s.bucket, m.measure, count(*), sum(m.value)'
					   ' FROM %s CROSS JOIN LATERAL (VALUES %s) m(measure, value) WHERE m.value IS NOT NULL GROUP BY 1, 2, 3',
					   name || '_kpi_measures', sessions, measure_values);
	END IF;
	-- the keys the batches find rows by, built once the rows are in
	EXECUTE format('ALTER TABLE sessionize.%I ADD PRIMARY KEY (grain, bucket)', name || '_kpi_buckets');
	EXECUTE format('ALTER TABLE sessionize.%I ADD PRIMARY KEY (grain, bucket, key)', name || '_kpi_users');
	EXECUTE format('ALTER TABLE sessionize.%I ADD PRIMARY KEY (grain, bucket, bin)', name || '_kpi_durations');
	EXECUTE format('ALTER TABLE sessionize.%I ADD PRIMARY KEY (grain, bucket, type)', name || '_kpi_types');
	EXECUTE format('ALTER TABLE sessionize.%I ADD PRIMARY KEY (grain, bucket, measure)', name || '_kpi_measures');
	PERFORM sessionize.sessionize_make_kpi_views(name, pipeline.owner);
END $$;

-- A pipeline's rollups, views and tables, gone.
CREATE FUNCTION sessionize.sessionize_drop_rollups(name text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF to_regclass(format('sessionize.%I', name || '_kpi_buckets')) IS NOT NULL THEN
		EXECUTE format('DROP VIEW IF EXISTS sessionize.%I, sessionize.%I', name || '_kpi_hourly', name || '_kpi_daily');
		EXECUTE format('DROP TABLE sessionize.%I, sessionize.%I, sessionize.%I, sessionize.%I, sessionize.%I',
					   name || '_kpi_buckets', name || '_kpi_users', name || '_kpi_durations', name || '_kpi_types',
					   name || '_kpi_measures');
	END IF;
END $$;

-- The rollups of measures alter_pipeline() drops or redefines: their sums
-- would no longer be of the sessions' values.
CREATE FUNCTION sessionize.sessionize_forget_rollup_measures(name text, dropped text[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF to_regclass(format('sessionize.%I', name || '_kpi_measures')) IS NOT NULL THEN
		EXECUTE format('DELETE FROM sessionize.%I WHERE measure = ANY ($1)', name || '_kpi_measures') USING dropped;
	END IF;
END $$;

-- A pipeline's rollups go with its row, whichever function removes it.
CREATE FUNCTION sessionize.sessionize_pipeline_dropped()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM sessionize.sessionize_drop_rollups(OLD.name);
	RETURN OLD;
END $$;
CREATE TRIGGER drop_rollups AFTER DELETE ON sessionize.pipelines
	FOR EACH ROW EXECUTE FUNCTION sessionize.sessionize_pipeline_dropped();

CREATE FUNCTION sessionize.set_rollups(pipeline text, enabled boolean)
RETURNS void
AS 'MODULE_PATHNAME', 'call_as_extension'
LANGUAGE C;
COMMENT ON FUNCTION sessionize.set_rollups(text, boolean) IS
	'makes the KPI rollups of a pipeline from its sessions and keeps them (true), or drops them (false)';

CREATE FUNCTION sessionize.sessionize_set_rollups(caller regrole, pipeline text, enabled boolean)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	found sessionize.pipelines;
BEGIN
	IF enabled IS NULL THEN
		RAISE EXCEPTION 'enabled must not be NULL' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	-- between batches: a batch moves the rollups it sees
	found := sessionize.sessionize_read_pipeline(caller, pipeline, true);
	IF enabled THEN
		PERFORM sessionize.sessionize_add_rollups(found);
	ELSE
		PERFORM sessionize.sessionize_drop_rollups(found.name);
	END IF;
END $$;

-- Readers: a role that may read one pipeline's result views, and nothing
-- else of sessionize.  The views read the tables as their owner; the
-- reader needs no other right.
CREATE FUNCTION sessionize.grant_reader(pipeline text, reader regrole)
RETURNS void
AS 'MODULE_PATHNAME', 'call_as_extension'
LANGUAGE C;
COMMENT ON FUNCTION sessionize.grant_reader(text, regrole) IS
	'lets a role read the result views of a pipeline: its sessions and KPI views';

CREATE FUNCTION sessionize.revoke_reader(pipeline text, reader regrole)
RETURNS void
AS 'MODULE_PATHNAME', 'call_as_extension'
LANGUAGE C;
COMMENT ON FUNCTION sessionize.revoke_reader(text, regrole) IS
	'takes back what grant_reader() gave a role on the result views of a pipeline';

CREATE FUNCTION sessionize.sessionize_grant_reader(caller regrole, pipeline text, reader regrole)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM sessionize.sessionize_set_reader(caller, pipeline, reader, true);
END $$;

CREATE FUNCTION sessionize.sessionize_revoke_reader(caller regrole, pipeline text, reader regrole)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM sessionize.sessionize_set_reader(caller, pipeline, reader, false);
END $$;

CREATE FUNCTION sessionize.sessionize_set_reader(caller regrole, pipeline text, reader regrole, granted boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	found sessionize.pipelines;
BEGIN
	found := sessionize.sessionize_read_pipeline(caller, pipeline, false);
	IF reader IS NULL THEN
		RAISE EXCEPTION 'reader must not be NULL' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	-- the grants of the views' owner, which alter_pipeline() gives again
	-- when it makes the views anew
	EXECUTE format(CASE WHEN granted THEN 'GRANT SELECT ON %s TO %s' ELSE 'REVOKE SELECT ON %s FROM %s' END,
				   (SELECT string_agg(format('sessionize.%I', v.name), ', ')
					FROM unnest(sessionize.sessionize_result_views(found.name)) v(name)),
				   reader);
END $$;

-- Every pipeline keeps rollups from the start, and comments on its views'
-- columns; in an upgrade, those made before get them here, the rollups
-- filled from their sessions, and like those of pipelines made later they
-- are no members of the extension.
DO $$
DECLARE
	pipeline sessionize.pipelines;
	made text;
BEGIN
	FOR pipeline IN SELECT * FROM sessionize.pipelines p ORDER BY p.name LOOP
		PERFORM sessionize.sessionize_comment_session_views(pipeline.name);
		PERFORM sessionize.sessionize_add_rollups(pipeline);
		FOREACH made IN ARRAY ARRAY['_kpi_hourly', '_kpi_daily'] LOOP
			EXECUTE format('ALTER EXTENSION sessionize DROP VIEW sessionize.%I', pipeline.name || made);
		END LOOP;
		FOREACH made IN ARRAY ARRAY['_kpi_buckets', '_kpi_users', '_kpi_durations', '_kpi_types', '_kpi_measures'] LOOP
			EXECUTE format('ALTER EXTENSION sessionize DROP TABLE sessionize.%I', pipeline.name || made);
		END LOOP;
	END LOOP;
END $$;
-- Privileges.  Every function of sessionize starts out not executable by
-- PUBLIC; what README documents for users is granted back.  Aggregates check
-- their support functions against their owner, so the support functions
-- need no grant.  create_pipeline() and prune_seen() are for the roles an
-- administrator grants them to; every pipeline function checks that its
-- caller has the rights of the pipeline's owner.

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA sessionize FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
	sessionize.session_id(timestamptz, interval),
	sessionize.session_id(timestamptz, interval, interval),
	sessionize.session_id(timestamp, interval),
	sessionize.session_id(timestamp, interval, interval),
	sessionize.session_start(timestamptz, interval),
	sessionize.session_start(timestamptz, interval, interval),
	sessionize.session_start(timestamp, interval),
	sessionize.session_start(timestamp, interval, interval),
	sessionize.sessions(timestamptz, interval),
	sessionize.sessions(timestamptz, interval, interval),
	sessionize.sessions(timestamp, interval),
	sessionize.sessions(timestamp, interval, interval),
	sessionize.first(anyelement, timestamptz),
	sessionize.last(anyelement, timestamptz),
	sessionize.approx_count_distinct(anyelement),
	sessionize.fingerprint(jsonb, text[], text),
	sessionize.fingerprint(record, text[], text),
	sessionize.fingerprint(text, text[], text),
	sessionize.fingerprint_bytes(jsonb, text[]),
	sessionize.first_seen(text, uuid, interval),
	sessionize.first_seen(text, text, interval),
	sessionize.first_seen_many(text, uuid[], interval),
	sessionize.classify_duplicate(text, text, uuid, interval),
	sessionize.create_slot_table(text, text[], regtype[], regtype, regtype, integer, text, text, text, text),
	sessionize.slot_upsert(regclass, "any", "any", "any"),
	sessionize.slot_upsert_many(regclass, "any", "any", "any"),
	sessionize.run_pipeline(text, integer),
	sessionize.alter_pipeline(text, interval, interval, text[], boolean, boolean, text),
	sessionize.pause_pipeline(text),
	sessionize.resume_pipeline(text),
	sessionize.drop_pipeline(text),
	sessionize.replay_late(text, integer),
	sessionize.pipeline_backlog(text),
	sessionize.sessionize_pipeline_service(bigint, text, integer),
	sessionize.set_rollups(text, boolean),
	sessionize.grant_reader(text, regrole),
	sessionize.revoke_reader(text, regrole)
TO PUBLIC;

GRANT SELECT ON sessionize.pipeline_status, sessionize.pipeline_dead_letters TO PUBLIC;

-- The behavioral aggregates (13_behavior.sql).
GRANT EXECUTE ON FUNCTION
	sessionize.window_funnel(interval, timestamptz, boolean[]),
	sessionize.window_funnel(interval, timestamp, boolean[]),
	sessionize.window_funnel(interval, text, timestamptz, boolean[]),
	sessionize.window_funnel(interval, text, timestamp, boolean[]),
	sessionize.window_funnel_events(interval, text, timestamptz, boolean[]),
	sessionize.window_funnel_events(interval, text, timestamp, boolean[]),
	sessionize.retention(boolean[]),
	sessionize.sequence_match(text, timestamptz, boolean[]),
	sessionize.sequence_match(text, timestamp, boolean[]),
	sessionize.sequence_count(text, timestamptz, boolean[]),
	sessionize.sequence_count(text, timestamp, boolean[]),
	sessionize.sequence_match_events(text, timestamptz, boolean[]),
	sessionize.sequence_match_events(text, timestamp, boolean[]),
	sessionize.sequence_next_node(text, text, timestamptz, text, boolean, boolean[]),
	sessionize.sequence_next_node(text, text, timestamp, text, boolean, boolean[])
TO PUBLIC;
