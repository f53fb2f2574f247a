-- The grants noted at the start, given again to the functions of the same
-- names.
DO $$
DECLARE
	noted record;
BEGIN
	FOR noted IN
		SELECT p.oid::regprocedure AS function, g.grantee, g.is_grantable
		FROM sessionize.upgrade_function_grants g
		JOIN pg_catalog.pg_proc p ON p.proname OPERATOR(pg_catalog.=) g.proname
		WHERE p.pronamespace OPERATOR(pg_catalog.=) 'sessionize'::regnamespace
		  AND p.prokind OPERATOR(pg_catalog.=) ANY ('{f,a}'::"char"[])
	LOOP
		EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %s%s', noted.function, noted.grantee,
								  CASE WHEN noted.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
	END LOOP;
END $$;
DROP TABLE sessionize.upgrade_function_grants;
