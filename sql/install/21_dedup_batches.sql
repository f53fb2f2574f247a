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
