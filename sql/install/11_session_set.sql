-- Sets of sessions: the type session_set, the aggregates sessions(),
-- session_set() and merge() whose state it is, and session_rows(), one row
-- per session.  A state that is not internal lets Citus combine the
-- aggregates partially on its workers (src/session_set.c).

CREATE TYPE sessionize.session_set;

CREATE FUNCTION sessionize.sessionize_session_set_in(cstring)
RETURNS sessionize.session_set
AS 'MODULE_PATHNAME', 'session_set_in'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_session_set_out(sessionize.session_set)
RETURNS cstring
AS 'MODULE_PATHNAME', 'session_set_out'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_session_set_recv(internal)
RETURNS sessionize.session_set
AS 'MODULE_PATHNAME', 'session_set_recv'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_session_set_send(sessionize.session_set)
RETURNS bytea
AS 'MODULE_PATHNAME', 'session_set_send'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE TYPE sessionize.session_set (
	INPUT = sessionize.sessionize_session_set_in,
	OUTPUT = sessionize.sessionize_session_set_out,
	RECEIVE = sessionize.sessionize_session_set_recv,
	SEND = sessionize.sessionize_session_set_send,
	INTERNALLENGTH = VARIABLE,
	ALIGNMENT = double,
	STORAGE = extended
);
COMMENT ON TYPE sessionize.session_set IS
	'the sessions of a key, with the time each expires (with max_duration, its events): what sessions can be merged from';

CREATE FUNCTION sessionize.session_rows(sessions sessionize.session_set,
										OUT started_at timestamptz, OUT ended_at timestamptz,
										OUT events bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'session_rows'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE ROWS 50;
COMMENT ON FUNCTION sessionize.session_rows(sessionize.session_set) IS
	'one row per session of a set, in time order: started_at, ended_at, events';

-- Aggregate support -----------------------------------------------------------

CREATE FUNCTION sessionize.sessionize_session_set_transition(sessionize.session_set, timestamptz, interval)
RETURNS sessionize.session_set
AS 'MODULE_PATHNAME', 'session_set_transition'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_session_set_transition(sessionize.session_set, timestamptz, interval, interval)
RETURNS sessionize.session_set
AS 'MODULE_PATHNAME', 'session_set_transition'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_session_set_transition(sessionize.session_set, timestamp, interval)
RETURNS sessionize.session_set
AS 'MODULE_PATHNAME', 'session_set_transition'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_session_set_transition(sessionize.session_set, timestamp, interval, interval)
RETURNS sessionize.session_set
AS 'MODULE_PATHNAME', 'session_set_transition'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_session_set_combine(sessionize.session_set, sessionize.session_set)
RETURNS sessionize.session_set
AS 'MODULE_PATHNAME', 'session_set_combine'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_sessions_final(sessionize.session_set)
RETURNS sessionize.session[]
AS 'MODULE_PATHNAME', 'session_set_sessions_final'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION sessionize.sessionize_local_sessions_final(sessionize.session_set)
RETURNS sessionize.local_session[]
AS 'MODULE_PATHNAME', 'session_set_sessions_final'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

-- sessions(): session[] --------------------------------------------------------

CREATE AGGREGATE sessionize.sessions(ts timestamptz, gap interval) (
	SFUNC = sessionize.sessionize_session_set_transition,
	STYPE = sessionize.session_set,
	FINALFUNC = sessionize.sessionize_sessions_final,
	COMBINEFUNC = sessionize.sessionize_session_set_combine,
	PARALLEL = SAFE
);

CREATE AGGREGATE sessionize.sessions(ts timestamptz, gap interval, max_duration interval) (
	SFUNC = sessionize.sessionize_session_set_transition,
	STYPE = sessionize.session_set,
	FINALFUNC = sessionize.sessionize_sessions_final,
	COMBINEFUNC = sessionize.sessionize_session_set_combine,
	PARALLEL = SAFE
);

CREATE AGGREGATE sessionize.sessions(ts timestamp, gap interval) (
	SFUNC = sessionize.sessionize_session_set_transition,
	STYPE = sessionize.session_set,
	FINALFUNC = sessionize.sessionize_local_sessions_final,
	COMBINEFUNC = sessionize.sessionize_session_set_combine,
	PARALLEL = SAFE
);

CREATE AGGREGATE sessionize.sessions(ts timestamp, gap interval, max_duration interval) (
	SFUNC = sessionize.sessionize_session_set_transition,
	STYPE = sessionize.session_set,
	FINALFUNC = sessionize.sessionize_local_sessions_final,
	COMBINEFUNC = sessionize.sessionize_session_set_combine,
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

-- session_set() and merge(): session_set ----------------------------------------

CREATE AGGREGATE sessionize.session_set(ts timestamptz, gap interval) (
	SFUNC = sessionize.sessionize_session_set_transition,
	STYPE = sessionize.session_set,
	COMBINEFUNC = sessionize.sessionize_session_set_combine,
	PARALLEL = SAFE
);

CREATE AGGREGATE sessionize.session_set(ts timestamptz, gap interval, max_duration interval) (
	SFUNC = sessionize.sessionize_session_set_transition,
	STYPE = sessionize.session_set,
	COMBINEFUNC = sessionize.sessionize_session_set_combine,
	PARALLEL = SAFE
);

CREATE AGGREGATE sessionize.merge(sessions sessionize.session_set) (
	SFUNC = sessionize.sessionize_session_set_combine,
	STYPE = sessionize.session_set,
	COMBINEFUNC = sessionize.sessionize_session_set_combine,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE sessionize.session_set(timestamptz, interval) IS
	'sessions of the group''s events as a session_set: expand with session_rows(), combine with merge()';
COMMENT ON AGGREGATE sessionize.session_set(timestamptz, interval, interval) IS
	'sessions of the group''s events cut at max_duration as a session_set (which keeps the events)';
COMMENT ON AGGREGATE sessionize.merge(sessionize.session_set) IS
	'the session_set of the union of the events of the sets, such as per-day sets of a key';
