-- Dedup of a whole batch in one statement: first_seen_many() for users, and
-- the same function under it for pipelines, whose namespaces users may not
-- name.

CREATE FUNCTION sessionize.sessionize_check_user_namespace(namespace text)
RETURNS text
AS 'MODULE_PATHNAME', 'check_user_namespace'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

-- Set-based: one statement for a whole batch.  Element i of the result says
-- whether fingerprint i is new; of repeated fingerprints in the batch only the
-- first is.
CREATE FUNCTION sessionize.sessionize_first_seen_many(namespace text, fingerprints uuid[], ttl interval)
RETURNS boolean[]
LANGUAGE sql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
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
	SELECT COALESCE(pg_catalog.array_agg(CASE WHEN n.fingerprint IS NULL THEN NULL
														 ELSE n.copy OPERATOR(pg_catalog.=) 1 AND c.fingerprint IS NOT NULL END
													ORDER BY n.position),
							'{}'::boolean[])
	FROM numbered n LEFT JOIN claimed c ON c.fingerprint OPERATOR(pg_catalog.=) n.fingerprint;
END;
COMMENT ON FUNCTION sessionize.sessionize_first_seen_many(text, uuid[], interval) IS
	'first_seen_many() for users and pipelines alike';

CREATE FUNCTION sessionize.first_seen_many(namespace text, fingerprints uuid[], ttl interval DEFAULT '1 hour')
RETURNS boolean[]
LANGUAGE sql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
RETURN sessionize.sessionize_first_seen_many(sessionize.sessionize_check_user_namespace(namespace), fingerprints, ttl);
COMMENT ON FUNCTION sessionize.first_seen_many(text, uuid[], interval) IS
	'first_seen() for a batch in one statement: element i is true iff fingerprint i is new';
