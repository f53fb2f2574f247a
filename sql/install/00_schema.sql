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
