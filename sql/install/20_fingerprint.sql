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
