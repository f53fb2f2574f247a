-- sessionize install script, assembled from sql/install/*.sql in name order.
\echo Use "CREATE EXTENSION sessionize" to load this file. \quit

-- CREATE EXTENSION makes schema sessionize when it does not exist, and
-- otherwise installs into the one it finds: one that another role made
-- beforehand, and may still control, would be adopted.  Only a schema that
-- this transaction created (its row's xmin is a transaction id this backend
-- holds) is accepted.
DO $$
BEGIN
	IF NOT EXISTS (
		SELECT FROM pg_catalog.pg_namespace n, pg_catalog.pg_locks l
		WHERE n.nspname OPERATOR(pg_catalog.=) 'sessionize'
		  AND l.locktype OPERATOR(pg_catalog.=) 'transactionid'
		  AND l.transactionid OPERATOR(pg_catalog.=) n.xmin
		  AND l.pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid()
		  AND l.granted) THEN
		RAISE EXCEPTION 'schema "sessionize" already exists'
			USING ERRCODE = 'duplicate_schema',
				  DETAIL = 'sessionize installs into a schema it creates itself and never adopts one that exists.',
				  HINT = 'Drop or rename schema sessionize, then create the extension.';
	END IF;
END $$;

COMMENT ON SCHEMA sessionize IS 'session windows, event dedup, idempotent slot upserts and pipelines';
-- Everyone may use what the schema offers; each object says who may do what.
GRANT USAGE ON SCHEMA sessionize TO PUBLIC;
