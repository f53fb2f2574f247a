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
