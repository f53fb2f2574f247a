-- Session windows: window functions session_id() and session_start(), and the
-- types of sessions() (whose aggregates are in 11_session_set.sql).  All call
-- the one C implementation in src/sessions.c.

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

-- The internal state of the pipelines' sessionize_merge_sessions() -----------

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
