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
