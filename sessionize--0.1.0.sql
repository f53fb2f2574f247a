-- sessionize install script, assembled from sql/install/*.sql in name order.
\echo Use "CREATE EXTENSION sessionize" to load this file. \quit

COMMENT ON SCHEMA sessionize IS 'session windows, event dedup, idempotent slot upserts and pipelines';
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
-- Fingerprints and the dedup memory.  fingerprint() and fingerprint_bytes()
-- call the one C implementation in src/fingerprint.c; the dedup functions
-- are in src/dedup.c.

CREATE FUNCTION sessionize.fingerprint(event jsonb, exclude text[] DEFAULT '{}', algorithm text DEFAULT 'md5')
RETURNS text
AS 'MODULE_PATHNAME', 'fingerprint_text'
LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION sessionize.fingerprint(jsonb, text[], text) IS
	'content fingerprint (lowercase hex), equal to Snowplow''s event fingerprint for flat objects of strings';

CREATE FUNCTION sessionize.fingerprint(event record, exclude text[] DEFAULT '{}', algorithm text DEFAULT 'md5')
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
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
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION sessionize.first_seen(text, uuid, interval) IS
	'true exactly once per fingerprint and namespace within ttl (NULL ttl: forever)';

CREATE FUNCTION sessionize.first_seen(namespace text, fingerprint text, ttl interval DEFAULT '1 hour')
RETURNS boolean
LANGUAGE sql VOLATILE PARALLEL UNSAFE
RETURN sessionize.first_seen(namespace, pg_catalog.uuid(fingerprint), ttl);
COMMENT ON FUNCTION sessionize.first_seen(text, text, interval) IS
	'first_seen() for an MD5 fingerprint in hex, as fingerprint() returns it';

-- Set-based: one statement for a whole batch.  Element i of the result says
-- whether fingerprint i is new; of repeated fingerprints in the batch only the
-- first is.
CREATE FUNCTION sessionize.first_seen_many(namespace text, fingerprints uuid[], ttl interval DEFAULT '1 hour')
RETURNS boolean[]
LANGUAGE sql VOLATILE PARALLEL UNSAFE
BEGIN ATOMIC
	WITH checked AS (
		SELECT sessionize.sessionize_check_namespace(namespace) AS namespace,
			   sessionize.sessionize_check_interval(ttl, 'ttl') AS ttl
	), numbered AS (
		SELECT f.fingerprint, f.position,
			   pg_catalog.row_number() OVER (PARTITION BY f.fingerprint ORDER BY f.position) AS copy
		FROM pg_catalog.unnest(fingerprints) WITH ORDINALITY AS f(fingerprint, position)
	), claimed AS (
		INSERT INTO sessionize.seen_fingerprints AS seen (namespace, fingerprint, first_seen_at, expires_at)
		SELECT c.namespace, n.fingerprint, pg_catalog.statement_timestamp(),
			   pg_catalog.statement_timestamp() OPERATOR(pg_catalog.+) c.ttl
		FROM numbered n, checked c
		WHERE n.copy OPERATOR(pg_catalog.=) 1 AND n.fingerprint IS NOT NULL
		ON CONFLICT (namespace, fingerprint) DO UPDATE
		SET first_seen_at = EXCLUDED.first_seen_at, expires_at = EXCLUDED.expires_at
		WHERE seen.expires_at OPERATOR(pg_catalog.<=) EXCLUDED.first_seen_at
		RETURNING seen.fingerprint
	)
	SELECT pg_catalog.array_agg(CASE WHEN n.fingerprint IS NULL THEN NULL
									 ELSE n.copy OPERATOR(pg_catalog.=) 1 AND c.fingerprint IS NOT NULL END
								ORDER BY n.position)
	FROM numbered n LEFT JOIN claimed c ON c.fingerprint OPERATOR(pg_catalog.=) n.fingerprint;
END;
COMMENT ON FUNCTION sessionize.first_seen_many(text, uuid[], interval) IS
	'first_seen() for a batch in one statement: element i is true iff fingerprint i is new';

CREATE FUNCTION sessionize.classify_duplicate(namespace text, event_id text, fingerprint uuid,
											  ttl interval DEFAULT '1 hour')
RETURNS text
AS 'MODULE_PATHNAME', 'classify_duplicate'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION sessionize.classify_duplicate(text, text, uuid, interval) IS
	'new, natural_duplicate (same id, same content) or synthetic_duplicate (same id, other content)';

-- Removes at most batch_size expired entries from each memory and returns how
-- many it removed; schedule it (for example with pg_cron) to keep them small.
CREATE FUNCTION sessionize.prune_seen(batch_size integer DEFAULT 10000)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
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

CREATE FUNCTION sessionize.sessionize_check_combine(value_type regtype, combine text)
RETURNS void
AS 'MODULE_PATHNAME', 'slot_check_combine'
LANGUAGE C STABLE;

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
LANGUAGE plpgsql
AS $$
-- Runs with the caller's search_path, so that an unqualified table name
-- lands in the caller's schema; every function below is qualified.
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
				  DETAIL = pg_catalog.format('The table would have %s slots.', slots);
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
	IF pg_catalog.cardinality(key_columns) < 1 OR pg_catalog.cardinality(key_columns) <> pg_catalog.cardinality(key_types) THEN
		RAISE EXCEPTION 'key_columns and key_types must name the same, non-zero number of columns'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	PERFORM sessionize.sessionize_check_combine(value_type, combine);

	name_parts := pg_catalog.parse_ident(table_name);
	IF pg_catalog.cardinality(name_parts) = 2 THEN
		schema_name := name_parts[1];
		base_name := name_parts[2];
	ELSIF pg_catalog.cardinality(name_parts) = 1 THEN
		schema_name := pg_catalog.current_schema();
		base_name := name_parts[1];
	ELSE
		RAISE EXCEPTION 'invalid table name "%"', table_name
			USING ERRCODE = 'invalid_name', HINT = 'Use table or schema.table.';
	END IF;
	qualified := pg_catalog.format('%I.%I', schema_name, base_name);

	SELECT pg_catalog.string_agg(pg_catalog.format('%I %s NOT NULL', k.column_name, pg_catalog.format_type(k.type_id, NULL)), ', ' ORDER BY k.position),
		   pg_catalog.string_agg(pg_catalog.format('%I %s', k.column_name, pg_catalog.format_type(k.type_id, NULL)), ', ' ORDER BY k.position),
		   pg_catalog.string_agg(pg_catalog.format('%I', k.column_name), ', ' ORDER BY k.position)
	INTO keys_sql, keys_nullable_sql, key_list
	FROM ROWS FROM (pg_catalog.unnest(key_columns), pg_catalog.unnest(key_types::pg_catalog.oid[]))
		 WITH ORDINALITY AS k(column_name, type_id, position);

	FOR i IN 1..slots LOOP
		slot_columns := slot_columns || pg_catalog.format(', %I %s, %I %s',
			slot_key_name || '_' || i, pg_catalog.format_type(slot_key_type, NULL),
			value_name || '_' || i, pg_catalog.format_type(value_type, NULL));
	END LOOP;

	EXECUTE pg_catalog.format('CREATE TABLE %s (%s%s, computed %s, PRIMARY KEY (%s))',
				   qualified, keys_sql, slot_columns, pg_catalog.format_type(value_type, NULL), key_list);
	created := qualified::pg_catalog.regclass;
	EXECUTE pg_catalog.format('CREATE TABLE %I.%I (%s, %I %s NOT NULL, %I %s, PRIMARY KEY (%s, %I))',
				   schema_name, base_name || '_overflow', keys_sql,
				   slot_key_name, pg_catalog.format_type(slot_key_type, NULL),
				   value_name, pg_catalog.format_type(value_type, NULL), key_list, slot_key_name);
	overflow := pg_catalog.format('%I.%I', schema_name, base_name || '_overflow')::pg_catalog.regclass;
	EXECUTE pg_catalog.format('CREATE TABLE %I.%I (%s, %I %s NOT NULL, stored_value %s, offered_value %s,'
				   ' reported_at timestamptz NOT NULL DEFAULT pg_catalog.now())',
				   schema_name, base_name || '_conflicts', keys_nullable_sql,
				   slot_key_name, pg_catalog.format_type(slot_key_type, NULL),
				   pg_catalog.format_type(value_type, NULL), pg_catalog.format_type(value_type, NULL));
	conflicts := pg_catalog.format('%I.%I', schema_name, base_name || '_conflicts')::pg_catalog.regclass;

	INSERT INTO sessionize.slot_tables
	VALUES (created, overflow, conflicts, key_columns::pg_catalog.name[], slot_key_name, value_name,
			slots, combine, on_conflict);
	RETURN created;
END $$;
COMMENT ON FUNCTION sessionize.create_slot_table(text, text[], regtype[], regtype, regtype, integer, text, text, text, text) IS
	'creates a slot table (key columns, slot_key_1, value_1, ..., computed) with its overflow and conflicts tables';

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

CREATE FUNCTION sessionize.sessionize_pgoutput_row(data bytea, template anyelement)
RETURNS anyelement
AS 'MODULE_PATHNAME', 'pgoutput_row'
LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION sessionize.sessionize_pgoutput_row(bytea, anyelement) IS
	'the new tuple of a pgoutput INSERT or UPDATE message as a row of the template''s type';

-- The source tables of logical pipelines are in two publications: one that
-- publishes inserts, and one that also publishes updates, for pipelines that
-- take updates as events.  Publishing updates makes PostgreSQL refuse UPDATE
-- and DELETE on a table without a replica identity, so a table is in the
-- second only when a pipeline asks for it.  Both must exist before any
-- pipeline's slot: pgoutput looks publications up as of the transaction it
-- decodes, and fails on one created after the slot.  A publication cannot
-- belong to an extension, so an earlier one is reused.
DO $$
DECLARE
	messages text := pg_catalog.current_setting('client_min_messages');
	publication record;
BEGIN
	-- without wal_level = logical PostgreSQL warns; that is for create_pipeline() to say
	PERFORM pg_catalog.set_config('client_min_messages', 'error', true);
	FOR publication IN
		SELECT * FROM (VALUES ('sessionize_pipelines', 'insert'),
							  ('sessionize_pipeline_updates', 'insert, update')) p(name, publish)
	LOOP
		IF EXISTS (SELECT FROM pg_catalog.pg_publication WHERE pubname OPERATOR(pg_catalog.=) publication.name) THEN
			EXECUTE pg_catalog.format('ALTER PUBLICATION %I SET (publish = %L)', publication.name, publication.publish);
		ELSE
			EXECUTE pg_catalog.format('CREATE PUBLICATION %I WITH (publish = %L)', publication.name, publication.publish);
		END IF;
	END LOOP;
	PERFORM pg_catalog.set_config('client_min_messages', messages, true);
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
	run_as name,
	source_kind text NOT NULL DEFAULT 'table' CHECK (source_kind IN ('table', 'logical')),
	updates_as_events boolean NOT NULL DEFAULT false,
	-- a jsonb column of the source: key, time and type columns name its fields
	payload_column name,
	state text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'paused')),
	created_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE sessionize.pipelines IS 'pipelines: where their events come from and how they are sessionized';
SELECT pg_catalog.pg_extension_config_dump('sessionize.pipelines', '');

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
	slot_advance_to pg_lsn
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

-- The key of a pipeline's advisory lock.
CREATE FUNCTION sessionize.sessionize_pipeline_lock(name text)
RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
RETURN pg_catalog.hashtextextended('sessionize pipeline ' OPERATOR(pg_catalog.||) name, 0);

-- One batch at a time per pipeline, and no alter or drop while a batch runs
-- (a batch of a logical source holds its slot).  An advisory lock, because a
-- row lock is a write, and a transaction reads a replication slot before any.
-- The pipeline is read once the lock is held, so that a drop or an alter
-- that committed meanwhile is seen.
CREATE FUNCTION sessionize.sessionize_lock_pipeline(name text)
RETURNS sessionize.pipelines
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	pipeline sessionize.pipelines;
BEGIN
	PERFORM pg_advisory_xact_lock(sessionize.sessionize_pipeline_lock(name));
	SELECT * INTO pipeline FROM sessionize.pipelines p WHERE p.name = sessionize_lock_pipeline.name;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'pipeline "%" does not exist', name USING ERRCODE = 'undefined_object';
	END IF;
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
	payload_column name DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	key_type text;
	time_type oid;
	payload_type oid;
	taken_names text;
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
	IF EXISTS (SELECT FROM sessionize.pipelines p WHERE p.name = create_pipeline.name) THEN
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
		SELECT format_type(atttypid, atttypmod) INTO key_type
		FROM pg_attribute WHERE attrelid = source AND attname = key_column AND attnum > 0 AND NOT attisdropped;
		IF key_type IS NULL THEN
			RAISE EXCEPTION 'column "%" of "%" does not exist', key_column, source USING ERRCODE = 'undefined_column';
		END IF;
		SELECT atttypid INTO time_type
		FROM pg_attribute WHERE attrelid = source AND attname = time_column AND attnum > 0 AND NOT attisdropped;
		IF time_type IS NULL THEN
			RAISE EXCEPTION 'column "%" of "%" does not exist', time_column, source USING ERRCODE = 'undefined_column';
		ELSIF time_type <> 'timestamptz'::regtype THEN
			RAISE EXCEPTION 'time column "%" must be of type timestamp with time zone', time_column
				USING ERRCODE = 'datatype_mismatch',
					  DETAIL = format('It is of type %s.', time_type::regtype);
		END IF;
		IF type_column IS NOT NULL AND NOT EXISTS (
			SELECT FROM pg_attribute WHERE attrelid = source AND attname = type_column AND attnum > 0 AND NOT attisdropped) THEN
			RAISE EXCEPTION 'column "%" of "%" does not exist', type_column, source USING ERRCODE = 'undefined_column';
		END IF;
	END IF;
	-- The worker runs as run_as, by default the role that creates the
	-- pipeline: whatever the source runs (triggers on the claim's DELETE, for
	-- one) runs with no more rights than that.
	IF run_as IS NULL THEN
		run_as := current_user;
	ELSIF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = run_as) THEN
		RAISE EXCEPTION 'role "%" does not exist', run_as USING ERRCODE = 'undefined_object';
	ELSIF NOT pg_has_role(current_user, run_as, 'MEMBER') THEN
		RAISE EXCEPTION 'must be a member of role "%" to run a pipeline as it', run_as
			USING ERRCODE = 'insufficient_privilege';
	END IF;
	IF NOT (SELECT rolcanlogin FROM pg_roles WHERE rolname = run_as) THEN
		RAISE EXCEPTION 'role "%" cannot log in', run_as
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'The pipeline''s worker connects as this role.',
				  HINT = 'Give run_as a role with LOGIN.';
	END IF;
	-- every name the pipeline will take, before anything (a slot) is made
	SELECT string_agg(format('%I', name || suffix), ', ') INTO taken_names
	FROM unnest(ARRAY['_stored_sessions', '_sessions', '_sessions_live', '_sessions_final', '_late',
					  '_changes', '_batch', '_late_id_seq', '_changes_change_id_seq']) suffix
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
		IF run_as IS NOT NULL AND NOT EXISTS (SELECT FROM pg_roles WHERE rolname = run_as AND (rolreplication OR rolsuper)) THEN
			RAISE EXCEPTION 'role "%" cannot read a replication slot', run_as
				USING ERRCODE = 'insufficient_privilege',
					  HINT = format('ALTER ROLE %I REPLICATION', run_as);
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
					  HINT = 'Recreate the extension: DROP EXTENSION sessionize CASCADE; CREATE EXTENSION sessionize.';
		END IF;
		PERFORM pg_create_logical_replication_slot(sessionize.sessionize_slot_name(name), 'pgoutput');
		-- A slot is not undone by a rollback: should anything below fail, drop it.
		BEGIN
			PERFORM sessionize.sessionize_make_pipeline(name, source, key_column, time_column, gap, allowed_lateness,
														dedup_window, fingerprint_exclude, type_column, run_as,
														source_kind, updates_as_events, payload_column, key_type);
		EXCEPTION WHEN OTHERS THEN
			PERFORM pg_drop_replication_slot(sessionize.sessionize_slot_name(name));
			RAISE;
		END;
	ELSE
		PERFORM sessionize.sessionize_make_pipeline(name, source, key_column, time_column, gap, allowed_lateness,
													dedup_window, fingerprint_exclude, type_column, run_as,
													source_kind, updates_as_events, payload_column, key_type);
	END IF;
END $$;
COMMENT ON FUNCTION sessionize.create_pipeline(text, regclass, name, name, interval, interval, interval, text[], name, interval, name, text, boolean, name) IS
	'creates a pipeline that sessionizes the events landing in a staging table, or inserted into a table it follows through a logical replication slot';
REVOKE ALL ON FUNCTION sessionize.create_pipeline(text, regclass, name, name, interval, interval, interval, text[], name, interval, name, text, boolean, name) FROM PUBLIC;

-- The catalog rows, tables, views and grants of a pipeline that
-- create_pipeline() has checked.
CREATE FUNCTION sessionize.sessionize_make_pipeline(name text, source regclass, key_column name, time_column name,
													gap interval, allowed_lateness interval, dedup_window interval,
													fingerprint_exclude text[], type_column name, run_as name,
													source_kind text, updates_as_events boolean, payload_column name,
													key_type text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	INSERT INTO sessionize.pipelines (name, source, key_column, time_column, gap, allowed_lateness,
									  dedup_window, fingerprint_exclude, type_column, run_as,
									  source_kind, updates_as_events, payload_column)
	VALUES (name, source, key_column, time_column, gap, allowed_lateness, dedup_window,
			coalesce(fingerprint_exclude, '{}'), type_column, run_as, source_kind, coalesce(updates_as_events, false),
			payload_column);
	INSERT INTO sessionize.pipeline_state (pipeline) VALUES (name);
	IF source_kind = 'logical' THEN
		PERFORM sessionize.sessionize_publish_source(source);
	END IF;

	EXECUTE format('CREATE TABLE sessionize.%I (key %s NOT NULL, session_start timestamptz NOT NULL,'
				   ' last_event_at timestamptz NOT NULL, expires_at timestamptz NOT NULL, events bigint NOT NULL,'
				   ' type_counts jsonb, revision integer NOT NULL, updated_at timestamptz NOT NULL,'
				   ' PRIMARY KEY (key, session_start))', name || '_stored_sessions', key_type);
	EXECUTE format('CREATE INDEX ON sessionize.%I (expires_at)', name || '_stored_sessions');
	EXECUTE format('CREATE TABLE sessionize.%I (id bigserial PRIMARY KEY, event jsonb NOT NULL, reason text NOT NULL,'
				   ' received_at timestamptz NOT NULL DEFAULT now())', name || '_late');
	EXECUTE format('CREATE TABLE sessionize.%I (change_id bigserial PRIMARY KEY, key %s NOT NULL,'
				   ' session_start timestamptz NOT NULL, change text NOT NULL, revision integer NOT NULL,'
				   ' last_event_at timestamptz NOT NULL, events bigint NOT NULL,'
				   ' changed_at timestamptz NOT NULL DEFAULT now())', name || '_changes', key_type);
	-- the batch in hand: it never outlives a transaction, so it needs no WAL
	EXECUTE format('CREATE UNLOGGED TABLE sessionize.%I (batch_id bigint PRIMARY KEY, key %s, ts timestamptz,'
				   ' ts_text text, event_type text, event jsonb NOT NULL, fingerprint uuid, problem text)', name || '_batch', key_type);
	-- A session's status follows the pipeline's progress, not its own writes,
	-- so it is computed when read: open while it expires at or after the
	-- greatest event time, idle after that, final once it expires before the
	-- watermark.  The live and final views filter on expires_at, which the
	-- index serves.
	EXECUTE format($view$
		CREATE VIEW sessionize.%1$I AS
		SELECT s.key, s.session_start, s.last_event_at, s.expires_at, s.events, s.type_counts, s.revision, s.updated_at,
			   CASE WHEN s.expires_at < st.watermark THEN 'final'
					WHEN s.expires_at >= st.max_event_time THEN 'open' ELSE 'idle' END AS status
		FROM sessionize.%2$I s, sessionize.pipeline_state st
		WHERE st.pipeline = %3$L$view$,
		name || '_sessions', name || '_stored_sessions', name);
	EXECUTE format($view$
		CREATE VIEW sessionize.%1$I AS
		SELECT s.key, s.session_start, s.last_event_at, s.expires_at, s.events, s.type_counts, s.revision, s.updated_at,
			   CASE WHEN s.expires_at >= st.max_event_time THEN 'open' ELSE 'idle' END AS status
		FROM sessionize.%2$I s, sessionize.pipeline_state st
		WHERE st.pipeline = %3$L AND (st.watermark IS NULL OR s.expires_at >= st.watermark)$view$,
		name || '_sessions_live', name || '_stored_sessions', name);
	EXECUTE format($view$
		CREATE VIEW sessionize.%1$I AS
		SELECT s.key, s.session_start, s.last_event_at, s.expires_at, s.events, s.type_counts, s.revision, s.updated_at,
			   'final'::text AS status
		FROM sessionize.%2$I s, sessionize.pipeline_state st
		WHERE st.pipeline = %3$L AND s.expires_at < st.watermark$view$,
		name || '_sessions_final', name || '_stored_sessions', name);
	EXECUTE format('COMMENT ON TABLE sessionize.%I IS %L', name || '_stored_sessions',
				   'sessions of pipeline ' || name || ', as the pipeline writes them; read them through the views');
	EXECUTE format('COMMENT ON VIEW sessionize.%I IS %L', name || '_sessions', 'sessions of pipeline ' || name || ' with their status: open, idle or final');
	EXECUTE format('COMMENT ON VIEW sessionize.%I IS %L', name || '_sessions_live', 'open and idle sessions of pipeline ' || name);
	EXECUTE format('COMMENT ON VIEW sessionize.%I IS %L', name || '_sessions_final', 'sessions of pipeline ' || name || ' that can no longer change');
	EXECUTE format('COMMENT ON TABLE sessionize.%I IS %L', name || '_late', 'events that came later than the allowed lateness of pipeline ' || name);
	EXECUTE format('COMMENT ON TABLE sessionize.%I IS %L', name || '_changes', 'session changes made by pipeline ' || name);

	-- What the worker needs when it runs as a role of its own: claiming rows
	-- of a staging table (SELECT ... FOR UPDATE needs UPDATE, the claim
	-- deletes them; a logical source is read from its slot), the shared
	-- catalog, the dedup memory and the dead letters, and the pipeline's tables.
	IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = run_as) THEN
		EXECUTE format('GRANT USAGE ON SCHEMA sessionize TO %I', run_as);
		IF source_kind = 'table' THEN
			EXECUTE format('GRANT SELECT, UPDATE, DELETE ON %s TO %I', source, run_as);
		END IF;
		EXECUTE format('GRANT SELECT ON sessionize.pipelines TO %I', run_as);
		EXECUTE format('GRANT SELECT, UPDATE ON sessionize.pipeline_state TO %I', run_as);
		EXECUTE format('GRANT SELECT, INSERT, UPDATE ON sessionize.seen_fingerprints TO %I', run_as);
		EXECUTE format('GRANT INSERT ON sessionize.dead_letter TO %I', run_as);
		EXECUTE format('GRANT USAGE ON SEQUENCE sessionize.dead_letter_id_seq TO %I', run_as);
		EXECUTE format('GRANT ALL ON sessionize.%I, sessionize.%I, sessionize.%I, sessionize.%I TO %I',
					   name || '_stored_sessions', name || '_late', name || '_changes', name || '_batch', run_as);
		EXECUTE format('GRANT USAGE ON SEQUENCE sessionize.%I, sessionize.%I TO %I',
					   name || '_late_id_seq', name || '_changes_change_id_seq', run_as);
	END IF;
END $$;
REVOKE ALL ON FUNCTION sessionize.sessionize_make_pipeline(text, regclass, name, name, interval, interval, interval, text[], name, name, text, boolean, name, text) FROM PUBLIC;

CREATE FUNCTION sessionize.alter_pipeline(
	name text,
	allowed_lateness interval DEFAULT NULL,
	dedup_window interval DEFAULT NULL,
	fingerprint_exclude text[] DEFAULT NULL,
	reset_allowed_lateness boolean DEFAULT false,
	reset_dedup_window boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF allowed_lateness IS NOT NULL AND allowed_lateness <> interval '0' THEN
		PERFORM sessionize.sessionize_check_interval(allowed_lateness, 'allowed_lateness');
	END IF;
	IF dedup_window IS NOT NULL THEN
		PERFORM sessionize.sessionize_check_interval(dedup_window, 'dedup_window');
	END IF;
	-- between batches, so that a batch never commits the watermark of the old lateness
	PERFORM sessionize.sessionize_lock_pipeline(name);
	UPDATE sessionize.pipelines p
	SET allowed_lateness = CASE WHEN reset_allowed_lateness THEN NULL
								ELSE coalesce(alter_pipeline.allowed_lateness, p.allowed_lateness) END,
		dedup_window = CASE WHEN reset_dedup_window THEN NULL
							ELSE coalesce(alter_pipeline.dedup_window, p.dedup_window) END,
		fingerprint_exclude = coalesce(alter_pipeline.fingerprint_exclude, p.fingerprint_exclude)
	WHERE p.name = alter_pipeline.name;
	-- the watermark follows the new lateness at once
	UPDATE sessionize.pipeline_state s
	SET watermark = s.max_event_time - p.allowed_lateness
	FROM sessionize.pipelines p
	WHERE p.name = alter_pipeline.name AND s.pipeline = p.name;
END $$;
COMMENT ON FUNCTION sessionize.alter_pipeline(text, interval, interval, text[], boolean, boolean) IS
	'changes the lateness, dedup window or fingerprint exclusions of a pipeline (reset_* back to unbounded)';
REVOKE ALL ON FUNCTION sessionize.alter_pipeline(text, interval, interval, text[], boolean, boolean) FROM PUBLIC;

CREATE FUNCTION sessionize.sessionize_set_pipeline_state(name text, new_state text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	UPDATE sessionize.pipelines p SET state = new_state WHERE p.name = sessionize_set_pipeline_state.name;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'pipeline "%" does not exist', name USING ERRCODE = 'undefined_object';
	END IF;
END $$;

CREATE FUNCTION sessionize.pause_pipeline(name text) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	SELECT sessionize.sessionize_set_pipeline_state(name, 'paused');
END;
COMMENT ON FUNCTION sessionize.pause_pipeline(text) IS 'stops the worker of a pipeline; events wait in the staging table';
REVOKE ALL ON FUNCTION sessionize.pause_pipeline(text) FROM PUBLIC;

CREATE FUNCTION sessionize.resume_pipeline(name text) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	SELECT sessionize.sessionize_set_pipeline_state(name, 'active');
END;
COMMENT ON FUNCTION sessionize.resume_pipeline(text) IS 'lets the worker run a paused pipeline again';
REVOKE ALL ON FUNCTION sessionize.resume_pipeline(text) FROM PUBLIC;

CREATE FUNCTION sessionize.drop_pipeline(name text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	dropped sessionize.pipelines;
BEGIN
	-- after a batch in progress (it holds the slot of a logical source)
	dropped := sessionize.sessionize_lock_pipeline(name);
	DELETE FROM sessionize.pipelines p WHERE p.name = drop_pipeline.name;
	EXECUTE format('DROP VIEW sessionize.%I, sessionize.%I, sessionize.%I',
				   name || '_sessions', name || '_sessions_live', name || '_sessions_final');
	EXECUTE format('DROP TABLE sessionize.%I, sessionize.%I, sessionize.%I, sessionize.%I',
				   name || '_stored_sessions', name || '_late', name || '_changes', name || '_batch');
	DELETE FROM sessionize.seen_fingerprints WHERE namespace = 'pipeline:' || name;
	IF dropped.source_kind = 'logical' THEN
		PERFORM sessionize.sessionize_publish_source(dropped.source);
		-- last: dropping a slot cannot be rolled back
		PERFORM pg_drop_replication_slot(slot_name) FROM pg_replication_slots
		WHERE slot_name = sessionize.sessionize_slot_name(name);
	END IF;
END $$;
COMMENT ON FUNCTION sessionize.drop_pipeline(text) IS
	'drops a pipeline and its tables (and the replication slot of a logical source); the source table stays';
REVOKE ALL ON FUNCTION sessionize.drop_pipeline(text) FROM PUBLIC;

-- One batch -------------------------------------------------------------------

-- Applies the claimed events of a pipeline's batch table (all of them, or only
-- batch_id only_id) in one statement: dead letters, dedup through the dedup
-- memory's first_seen_many(), lateness against the watermark the batch started
-- with, and the merge.  An event is late when its own session would expire
-- before the watermark, and also when it would change a final session (one
-- that expired before the watermark): within a gap of the watermark an event
-- can still reach back into one, and a final session never changes.
-- Nothing in the batch table is rewritten, so a batch
-- costs one write per event.  Called by run_pipeline(); a failure rolls back
-- only this call, so run_pipeline() can retry event by event.  Replayed late
-- events (replay) were deduplicated when they first came and are merged
-- whatever the watermark.
--
-- The merge takes out the stored sessions that touch a new event and merges
-- them with the new events by the C code of sessions(); what comes out
-- replaces them.  Stored sessions of a key never touch each other, so at most
-- two can touch an event: the last one starting before it, and one starting
-- within a gap after it; an index probe on (key, session_start) finds both.
-- Per-type counts add up; the change log says what happened.
CREATE FUNCTION sessionize.sessionize_apply_batch(pipeline sessionize.pipelines, watermark timestamptz,
												  only_id bigint, replay boolean,
												  OUT merged bigint, OUT duplicates bigint,
												  OUT late bigint, OUT dead_lettered bigint,
												  OUT max_merged timestamptz)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	-- a gap in plain seconds, so that ts + gap agrees with the C code's 24-hour days
	fixed_gap interval := make_interval(secs => extract(epoch FROM pipeline.gap));
	-- per-type counts: those of the stored sessions merged, plus the new events'
	typed text := $q$
		SELECT key, started_at, jsonb_object_agg(event_type, n) AS type_counts
		FROM (SELECT key, started_at, event_type, sum(n) AS n
			  FROM (SELECT m.key, m.started_at, c.key AS event_type, c.value::bigint AS n
					FROM merged m
					JOIN old o ON o.key = m.key AND o.session_start BETWEEN m.started_at AND m.ended_at,
					jsonb_each_text(o.type_counts) c
					UNION ALL
					SELECT m.key, m.started_at, e.event_type, 1
					FROM merged m
					JOIN events e ON e.key = m.key AND e.ts BETWEEN m.started_at AND m.ended_at
					WHERE e.event_type IS NOT NULL) counted
			  GROUP BY key, started_at, event_type) summed
		GROUP BY key, started_at$q$;
BEGIN
	EXECUTE format($q$
		WITH batch AS (
			SELECT batch_id, key, coalesce(ts, ts_text::timestamptz) AS ts, event_type, event, fingerprint, problem
			FROM sessionize.%1$I WHERE $5::bigint IS NULL OR batch_id = $5),
		invalid AS (
			SELECT event, CASE WHEN problem IS NOT NULL THEN problem
							   WHEN key IS NULL THEN 'key is null'
							   WHEN ts IS NULL THEN 'event time is null'
							   ELSE 'event time is not finite' END AS error
			FROM batch WHERE problem IS NOT NULL OR key IS NULL OR ts IS NULL OR NOT isfinite(ts)),
		dead AS (
			INSERT INTO sessionize.dead_letter (pipeline, event, error)
			SELECT $1, event, error FROM invalid
			RETURNING 1),
		valid AS (
			SELECT * FROM batch WHERE problem IS NULL AND key IS NOT NULL AND isfinite(ts)),
		verdicts AS (
			SELECT ids.batch_id, verdict.is_new
			FROM (SELECT array_agg(batch_id ORDER BY batch_id) AS batch_ids,
						 array_agg(fingerprint ORDER BY batch_id) AS fingerprints
				  FROM valid WHERE NOT $4) a,
				 unnest(a.batch_ids) WITH ORDINALITY AS ids(batch_id, position),
				 unnest(sessionize.first_seen_many('pipeline:' || $1, a.fingerprints, $6))
					WITH ORDINALITY AS verdict(is_new, position)
			WHERE ids.position = verdict.position),
		kept AS (
			SELECT v.* FROM valid v WHERE $4
			UNION ALL
			SELECT v.* FROM valid v JOIN verdicts d USING (batch_id) WHERE d.is_new),
		in_time AS (
			SELECT * FROM kept WHERE $4 OR $3 IS NULL OR ts + $2 >= $3),
		contacts AS (
			SELECT e.batch_id, s.key, s.session_start, s.expires_at
			FROM in_time e
			CROSS JOIN LATERAL (SELECT s.key, s.session_start, s.expires_at FROM sessionize.%3$I s
								WHERE s.key = e.key AND s.session_start <= e.ts + $2
								ORDER BY s.session_start DESC LIMIT 2) s
			WHERE s.expires_at >= e.ts),
		reopening AS (
			SELECT batch_id, min(expires_at) AS expired_at FROM contacts
			WHERE NOT $4 AND expires_at < $3 GROUP BY batch_id),
		late_events AS (
			INSERT INTO sessionize.%2$I (event, reason)
			SELECT k.event,
				   CASE WHEN r.batch_id IS NULL
						THEN format('the session of an event at %%s would expire before the watermark %%s',
									to_jsonb(k.ts) #>> '{}', to_jsonb($3) #>> '{}')
						ELSE format('an event at %%s would change a final session (it expired at %%s, before the watermark %%s)',
									to_jsonb(k.ts) #>> '{}', to_jsonb(r.expired_at) #>> '{}', to_jsonb($3) #>> '{}') END
			FROM kept k LEFT JOIN reopening r USING (batch_id)
			WHERE NOT $4 AND (k.ts + $2 < $3 OR r.batch_id IS NOT NULL)
			RETURNING 1),
		events AS (
			SELECT key, ts, event_type FROM in_time e
			WHERE NOT EXISTS (SELECT FROM reopening r WHERE r.batch_id = e.batch_id)),
		touched AS (
			SELECT DISTINCT c.key, c.session_start FROM contacts c
			WHERE NOT EXISTS (SELECT FROM reopening r WHERE r.batch_id = c.batch_id)),
		old AS (
			DELETE FROM sessionize.%3$I s USING touched t
			WHERE s.key = t.key AND s.session_start = t.session_start
			RETURNING s.*),
		pieces AS (
			SELECT key, session_start AS started_at, last_event_at AS ended_at, expires_at, events FROM old
			UNION ALL
			SELECT key, ts, ts, ts + $2, 1 FROM events),
		merged AS (
			SELECT per_key.key, m.started_at, m.ended_at, m.expires_at, m.events
			FROM (SELECT key, sessionize.sessionize_merge_sessions(started_at, ended_at, expires_at, events) AS all_sessions
				  FROM pieces GROUP BY key) per_key,
				 unnest(per_key.all_sessions) m),
		replaced AS (
			SELECT m.key, m.started_at, count(o.key) AS replaced, coalesce(max(o.revision), 0) + 1 AS revision
			FROM merged m
			LEFT JOIN old o ON o.key = m.key AND o.session_start BETWEEN m.started_at AND m.ended_at
			GROUP BY m.key, m.started_at),
		typed AS (%5$s),
		described AS (
			SELECT m.*, r.replaced, r.revision, t.type_counts
			FROM merged m
			JOIN replaced r ON r.key = m.key AND r.started_at = m.started_at
			LEFT JOIN typed t ON t.key = m.key AND t.started_at = m.started_at),
		stored AS (
			INSERT INTO sessionize.%3$I (key, session_start, last_event_at, expires_at, events, type_counts, revision, updated_at)
			SELECT key, started_at, ended_at, expires_at, events, type_counts, revision, now() FROM described),
		logged AS (
			INSERT INTO sessionize.%4$I (key, session_start, change, revision, last_event_at, events)
			SELECT key, started_at, CASE replaced WHEN 0 THEN 'opened' WHEN 1 THEN 'extended' ELSE 'merged' END,
				   revision, ended_at, events
			FROM described ORDER BY key, started_at)
		SELECT (SELECT count(*) FROM events),
			   (SELECT count(*) FROM valid) - (SELECT count(*) FROM kept),
			   (SELECT count(*) FROM late_events),
			   (SELECT count(*) FROM dead),
			   (SELECT max(ts) FROM events)$q$,
		pipeline.name || '_batch', pipeline.name || '_late', pipeline.name || '_stored_sessions', pipeline.name || '_changes',
		CASE WHEN pipeline.type_column IS NULL THEN 'SELECT key, started_at, NULL::jsonb AS type_counts FROM merged WHERE false'
			 ELSE typed END)
	INTO merged, duplicates, late, dead_lettered, max_merged
	USING pipeline.name, fixed_gap, watermark, replay, only_id, pipeline.dedup_window;
END $$;

-- How a pipeline reads an event from a row of its source (source_row, an SQL
-- expression of the source's row type): SQL expressions for its key, its
-- time (ts, or ts_text when the time is text to be cast when the batch is
-- applied, so that a bad one is dead-lettered alone), its type, the content
-- to fingerprint, and a problem that makes it a dead letter.  One place for
-- the staging table, the logical source and replay_late(), whose queries
-- have the row as jsonb at hand as e.event.
CREATE FUNCTION sessionize.sessionize_event_expressions(pipeline sessionize.pipelines, source_row text,
														OUT key text, OUT ts text, OUT ts_text text,
														OUT event_type text, OUT content text, OUT problem text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	payload text;
BEGIN
	IF pipeline.payload_column IS NULL THEN
		key := format('%s.%I', source_row, pipeline.key_column);
		ts := format('%s.%I', source_row, pipeline.time_column);
		ts_text := 'NULL::text';
		event_type := CASE WHEN pipeline.type_column IS NULL THEN 'NULL::text'
						   ELSE format('%s.%I::text', source_row, pipeline.type_column) END;
		content := 'e.event';
		problem := 'NULL::text';
		RETURN;
	END IF;
	payload := format('%s.%I', source_row, pipeline.payload_column);
	key := format($e$CASE WHEN jsonb_typeof(%1$s -> %2$L) IN ('string', 'number', 'boolean') THEN %1$s ->> %2$L END$e$,
				  payload, pipeline.key_column);
	ts := 'NULL::timestamptz';
	ts_text := format($e$CASE WHEN jsonb_typeof(%1$s -> %2$L) = 'string' THEN %1$s ->> %2$L END$e$,
					  payload, pipeline.time_column);
	event_type := CASE WHEN pipeline.type_column IS NULL THEN 'NULL::text'
					   ELSE format('%s ->> %L', payload, pipeline.type_column) END;
	content := payload;
	problem := format($e$CASE WHEN %1$s IS NULL THEN 'the payload is null'
							  WHEN jsonb_typeof(%1$s) <> 'object' THEN format(%2$L, jsonb_typeof(%1$s))
							  WHEN jsonb_typeof(%1$s -> %3$L) IN ('object', 'array') THEN format(%4$L, jsonb_typeof(%1$s -> %3$L))
							  WHEN jsonb_typeof(%1$s -> %5$L) NOT IN ('string', 'null') THEN format(%6$L, jsonb_typeof(%1$s -> %5$L))
						 END$e$,
					  payload,
					  'the payload is a JSON %s, not an object',
					  pipeline.key_column,
					  format('the key field "%s" is a JSON %%s, not a string or a number', replace(pipeline.key_column, '%', '%%')),
					  pipeline.time_column,
					  format('the time field "%s" is a JSON %%s, not a string', replace(pipeline.time_column, '%', '%%')));
END $$;

CREATE FUNCTION sessionize.run_pipeline(name text, max_events integer DEFAULT 10000,
										OUT consumed bigint, OUT merged bigint, OUT duplicates bigint,
										OUT late bigint, OUT dead_lettered bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	pipeline sessionize.pipelines;
	state sessionize.pipeline_state;
	batch text;
	counts record;
	failed_id bigint;
	new_max timestamptz;
	new_watermark timestamptz;
	last_ts timestamptz;
	message text;
	error_state text;
	slot text;
	new_commit_lsn pg_lsn;
	new_lsn pg_lsn;
	new_advance pg_lsn;
	slot_restart pg_lsn;
	new_lsn_row bigint;
	peeked_changes bigint;
	peek_end pg_lsn;
	reads record;
BEGIN
	IF max_events IS NULL OR max_events < 1 THEN
		RAISE EXCEPTION 'max_events must be positive' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	pipeline := sessionize.sessionize_lock_pipeline(name);
	SELECT * INTO state FROM sessionize.pipeline_state s WHERE s.pipeline = pipeline.name;
	batch := format('sessionize.%I', pipeline.name || '_batch');

	IF pipeline.source_kind = 'logical' THEN
		reads := sessionize.sessionize_event_expressions(pipeline, '(d.r)');
		-- Only now that earlier batches are committed may the slot pass them.
		slot := sessionize.sessionize_slot_name(pipeline.name);
		PERFORM pg_replication_slot_advance(slot_name, state.slot_advance_to) FROM pg_replication_slots
		WHERE slot_name = slot AND confirmed_flush_lsn < state.slot_advance_to;
		SELECT restart_lsn INTO slot_restart FROM pg_replication_slots WHERE slot_name = slot;
		peek_end := pg_current_wal_flush_lsn();
		-- Claim: peek a bounded number of changes up to the WAL flushed now
		-- (the slot does not move), skip every change at or before the
		-- checkpoint, and take the next max_events inserts of the source
		-- table.  pgoutput sends whole transactions in commit order, so
		-- (commit LSN, change LSN) orders the stream; a large transaction is
		-- taken over several batches.
		EXECUTE format($q$
			WITH peeked AS (
				SELECT p.position, p.lsn, p.data, m.kind, m.relation, m.missing_values,
					   max(m.commit_lsn) OVER (ORDER BY p.position) AS commit_lsn
				FROM pg_logical_slot_peek_binary_changes($1, $9, $2, 'proto_version', '1',
														 'publication_names', 'sessionize_pipelines,sessionize_pipeline_updates')
					 WITH ORDINALITY AS p(lsn, xid, data, position),
					 sessionize.sessionize_pgoutput_message(p.data) m),
			-- The rows of one COPY share the LSN of their WAL record: the
			-- checkpoint is (commit LSN, change LSN, row at that LSN).
			relevant AS (
				SELECT *, row_number() OVER (PARTITION BY commit_lsn, lsn ORDER BY position) AS lsn_row
				FROM peeked
				WHERE relation = $3 AND (kind = 'I' OR (kind = 'U' AND $4))),
			pending AS (
				SELECT * FROM relevant
				WHERE (commit_lsn, lsn, lsn_row) > (coalesce($5, '0/0'), coalesce($6, '0/0'), coalesce($10, 0))),
			taken AS (
				SELECT * FROM pending ORDER BY position LIMIT $7),
			decoded AS (
				SELECT t.position, t.missing_values, sessionize.sessionize_pgoutput_row(t.data, NULL::%1$s) AS r
				FROM taken t),
			stored AS (
				INSERT INTO %2$s (batch_id, key, ts, ts_text, event_type, event, fingerprint, problem)
				SELECT d.position, %3$s, %4$s, %5$s, %6$s, e.event, sessionize.fingerprint_bytes(%7$s, $8),
					   CASE WHEN d.missing_values
							THEN 'the update leaves out a value stored out of line: the source table needs REPLICA IDENTITY FULL'
							ELSE %8$s END
				FROM decoded d, LATERAL (SELECT to_jsonb(d.r) AS event) e
				RETURNING ts),
			last_taken AS (
				SELECT commit_lsn, lsn, lsn_row FROM taken ORDER BY position DESC LIMIT 1),
			first_left AS (
				SELECT min(commit_lsn) AS commit_lsn FROM pending
				WHERE position > coalesce((SELECT max(position) FROM taken), 0))
			-- The slot may pass every transaction whose changes are all
			-- applied; when the peek reached peek_end and left nothing, it
			-- may pass all of that WAL.
			SELECT (SELECT count(*) FROM stored),
				   (SELECT max(ts) FILTER (WHERE isfinite(ts)) FROM stored),
				   (SELECT commit_lsn FROM last_taken),
				   (SELECT lsn FROM last_taken),
				   (SELECT lsn_row FROM last_taken),
				   (SELECT count(*) FROM peeked),
				   CASE WHEN (SELECT count(*) FROM peeked) < $2 AND (SELECT commit_lsn FROM first_left) IS NULL
						THEN $9
						ELSE (SELECT max(p.lsn) FROM peeked p, first_left f
							  WHERE p.kind = 'C' AND (f.commit_lsn IS NULL OR p.commit_lsn < f.commit_lsn)) END$q$,
			pipeline.source, batch, reads.key, reads.ts, reads.ts_text, reads.event_type, reads.content, reads.problem)
		INTO consumed, last_ts, new_commit_lsn, new_lsn, new_lsn_row, peeked_changes, new_advance
		USING slot, 3 * max_events + 3, pipeline.source::oid, pipeline.updates_as_events,
			  state.checkpoint_commit_lsn, state.checkpoint_lsn, max_events, pipeline.fingerprint_exclude, peek_end,
			  state.checkpoint_lsn_row;
		-- Each peek decodes from the slot's restart point, which moves only
		-- as the slot passes WAL.  A batch that took nothing lets the slot
		-- pass what it peeked when the peek was full (else the next peek
		-- would be the same), or when more than 1 MB of WAL would be decoded
		-- again; otherwise an idle pipeline writes nothing.
		IF (new_advance > state.slot_advance_to OR (state.slot_advance_to IS NULL AND new_advance IS NOT NULL))
		   AND (consumed > 0 OR peeked_changes >= 3 * max_events + 3 OR pg_wal_lsn_diff(new_advance, slot_restart) > 1048576) THEN
			UPDATE sessionize.pipeline_state s SET slot_advance_to = new_advance WHERE s.pipeline = pipeline.name;
		END IF;
	ELSE
		-- Claim: rows leave the staging table in this transaction; rows other
		-- transactions hold are skipped, not waited for.  Each event is
		-- fingerprinted once, here.
		reads := sessionize.sessionize_event_expressions(pipeline, 'c');
		EXECUTE format($q$
			WITH claimed AS (
				DELETE FROM %1$s s
				WHERE ctid = ANY (ARRAY(SELECT ctid FROM %1$s LIMIT $1 FOR UPDATE SKIP LOCKED))
				RETURNING s.*),
			stored AS (
				INSERT INTO %2$s (batch_id, key, ts, ts_text, event_type, event, fingerprint, problem)
				SELECT row_number() OVER (), %3$s, %4$s, %5$s, %6$s, e.event, sessionize.fingerprint_bytes(%7$s, $2), %8$s
				FROM claimed c, LATERAL (SELECT to_jsonb(c) AS event) e
				RETURNING ts)
			SELECT count(*), max(ts) FILTER (WHERE isfinite(ts)) FROM stored$q$,
			pipeline.source, batch, reads.key, reads.ts, reads.ts_text, reads.event_type, reads.content, reads.problem)
		INTO consumed, last_ts
		USING max_events, pipeline.fingerprint_exclude;
	END IF;
	merged := 0; duplicates := 0; late := 0; dead_lettered := 0;
	IF consumed = 0 THEN
		RETURN;
	END IF;

	BEGIN
		counts := sessionize.sessionize_apply_batch(pipeline, state.watermark, NULL, false);
		merged := counts.merged; duplicates := counts.duplicates;
		late := counts.late; dead_lettered := counts.dead_lettered;
		new_max := counts.max_merged;
	EXCEPTION WHEN OTHERS THEN
		-- Something in the batch breaks the set-based path: apply the events
		-- one by one, and dead-letter those that fail alone.
		FOR failed_id IN EXECUTE format('SELECT batch_id FROM %s ORDER BY batch_id', batch) LOOP
			BEGIN
				counts := sessionize.sessionize_apply_batch(pipeline, state.watermark, failed_id, false);
				merged := merged + counts.merged; duplicates := duplicates + counts.duplicates;
				late := late + counts.late; dead_lettered := dead_lettered + counts.dead_lettered;
				new_max := greatest(new_max, counts.max_merged);
			EXCEPTION WHEN OTHERS THEN
				-- Only what is wrong with the event itself (bad data, a
				-- violated constraint) makes it a dead letter; anything else
				-- fails the batch, which is then retried as a whole.
				GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, error_state = RETURNED_SQLSTATE;
				IF left(error_state, 2) NOT IN ('22', '23') THEN
					RAISE;
				END IF;
				EXECUTE format('INSERT INTO sessionize.dead_letter (pipeline, event, error)
								SELECT $1, event, $2 FROM %s WHERE batch_id = $3', batch)
				USING pipeline.name, message, failed_id;
				dead_lettered := dead_lettered + 1;
			END;
		END LOOP;
	END;

	new_max := greatest(state.max_event_time, new_max);
	-- Unbounded lateness has no watermark.  A grown allowed_lateness moves it
	-- back, so that late events can be replayed into sessions.
	new_watermark := new_max - pipeline.allowed_lateness;
	UPDATE sessionize.pipeline_state s
	SET max_event_time = new_max,
		watermark = new_watermark,
		last_event_time = greatest(s.last_event_time, coalesce(last_ts, new_max)),
		consumed = s.consumed + run_pipeline.consumed,
		merged = s.merged + run_pipeline.merged,
		duplicates = s.duplicates + run_pipeline.duplicates,
		late = s.late + run_pipeline.late,
		dead_lettered = s.dead_lettered + run_pipeline.dead_lettered,
		batches = s.batches + 1,
		last_batch_at = clock_timestamp(),
		failures = 0,
		checkpoint_commit_lsn = coalesce(new_commit_lsn, s.checkpoint_commit_lsn),
		checkpoint_lsn = coalesce(new_lsn, s.checkpoint_lsn),
		checkpoint_lsn_row = coalesce(new_lsn_row, s.checkpoint_lsn_row)
	WHERE s.pipeline = pipeline.name;
	-- Sessions the watermark passed in this batch can no longer change.
	IF new_watermark > state.watermark OR (state.watermark IS NULL AND new_watermark IS NOT NULL) THEN
		EXECUTE format($q$
			INSERT INTO sessionize.%1$I (key, session_start, change, revision, last_event_at, events)
			SELECT key, session_start, 'closed', revision, last_event_at, events FROM sessionize.%2$I
			WHERE expires_at < $2 AND ($1 IS NULL OR expires_at >= $1)
			ORDER BY key, session_start$q$,
			pipeline.name || '_changes', pipeline.name || '_stored_sessions')
		USING state.watermark, new_watermark;
	END IF;
	-- TRUNCATE, not DELETE: a batch table emptied by DELETE grows by every
	-- batch until vacuumed, and each batch scans it whole.  Batches of a
	-- pipeline are serialized already, so its lock costs nothing.
	EXECUTE format('TRUNCATE %s', batch);
	PERFORM pg_notify('sessionize_' || pipeline.name,
					  json_build_object('pipeline', pipeline.name, 'consumed', consumed, 'merged', merged,
										'duplicates', duplicates, 'late', late,
										'dead_lettered', dead_lettered)::text);
END $$;
COMMENT ON FUNCTION sessionize.run_pipeline(text, integer) IS
	'consumes one batch of a pipeline''s staging table in the calling transaction; what the worker and pg_cron call';

-- Late events are kept, not dropped: once allowed_lateness is raised (or to
-- accept them anyway), an operator merges them into the sessions.
CREATE FUNCTION sessionize.replay_late(name text, max_events integer DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	pipeline sessionize.pipelines;
	batch text;
	reads record;
	replayed bigint;
	counts record;
BEGIN
	IF max_events < 1 THEN
		RAISE EXCEPTION 'max_events must be positive' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	pipeline := sessionize.sessionize_lock_pipeline(name);
	batch := format('sessionize.%I', pipeline.name || '_batch');
	reads := sessionize.sessionize_event_expressions(pipeline, 'r');

	-- A late event is its source row as jsonb: read it back into a row.
	EXECUTE format($q$
		WITH taken AS (
			DELETE FROM sessionize.%1$I l
			WHERE id = ANY (ARRAY(SELECT id FROM sessionize.%1$I ORDER BY id LIMIT $1))
			RETURNING l.event)
		INSERT INTO %2$s (batch_id, key, ts, ts_text, event_type, event, problem)
		SELECT row_number() OVER (), %4$s, %5$s, %6$s, %7$s, e.event, %8$s
		FROM taken e, LATERAL jsonb_populate_record(NULL::%3$s, e.event) r$q$,
		pipeline.name || '_late', batch, pipeline.source, reads.key, reads.ts, reads.ts_text, reads.event_type, reads.problem)
	USING max_events;
	GET DIAGNOSTICS replayed = ROW_COUNT;
	IF replayed > 0 THEN
		counts := sessionize.sessionize_apply_batch(pipeline, NULL, NULL, true);
		UPDATE sessionize.pipeline_state s
		SET merged = s.merged + counts.merged,
			dead_lettered = s.dead_lettered + counts.dead_lettered,
			late = s.late - replayed
		WHERE s.pipeline = pipeline.name;
		EXECUTE format('TRUNCATE %s', batch);
	END IF;
	RETURN replayed;
END $$;
COMMENT ON FUNCTION sessionize.replay_late(text, integer) IS
	'merges events of a pipeline''s late table into its sessions, whatever the watermark (all, or the oldest max_events)';
REVOKE ALL ON FUNCTION sessionize.replay_late(text, integer) FROM PUBLIC;

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
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	pipeline sessionize.pipelines;
	waiting bigint;
BEGIN
	SELECT * INTO pipeline FROM sessionize.pipelines p WHERE p.name = pipeline_backlog.name;
	IF pipeline.source_kind IS DISTINCT FROM 'table' THEN
		RETURN NULL;
	END IF;
	EXECUTE format('SELECT count(*) FROM %s', pipeline.source) INTO waiting;
	RETURN waiting;
END $$;
COMMENT ON FUNCTION sessionize.pipeline_backlog(text) IS
	'events waiting in the staging table of a pipeline (counts them); NULL for a logical source';

CREATE VIEW sessionize.pipeline_status AS
SELECT p.name, p.state, p.source_kind,
	   (SELECT a.pid FROM pg_catalog.pg_stat_activity a
		WHERE a.backend_type = 'sessionize pipeline' AND a.application_name = 'sessionize pipeline ' || p.name
		LIMIT 1) AS worker_pid,
	   s.consumed, s.merged, s.duplicates, s.late, s.dead_lettered, s.batches,
	   sessionize.pipeline_backlog(p.name) AS backlog,
	   s.max_event_time, s.watermark,
	   pg_catalog.now() - s.last_event_time AS lag,
	   s.last_batch_at, s.last_error, s.last_error_at, s.failures,
	   s.checkpoint_lsn,
	   -- WAL the slot of a logical source keeps from being recycled
	   pg_catalog.pg_wal_lsn_diff(
		   CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn()
				ELSE pg_catalog.pg_current_wal_lsn() END, r.restart_lsn)::bigint AS retained_wal_bytes
FROM sessionize.pipelines p
JOIN sessionize.pipeline_state s ON s.pipeline = p.name
LEFT JOIN pg_catalog.pg_replication_slots r
	   ON p.source_kind = 'logical' AND r.slot_name = sessionize.sessionize_slot_name(p.name);
COMMENT ON VIEW sessionize.pipeline_status IS 'one row per pipeline: state, worker, counts, backlog, watermark, lag, last error';
