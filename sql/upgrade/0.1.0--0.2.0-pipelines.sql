
-- Pipelines of 0.1.0 ran as run_as, by default the role that created them.
-- Each now runs as that role, unless it is a superuser and the source's
-- owner is not: then as the source's owner, the default of 0.2.0.  (The
-- rights 0.1.0 granted run_as on the extension's objects were taken back at
-- the start of this script; those on the source table stay, as the owner
-- needs them.)  Keys of a
-- domain type are stored as its base type, so that no domain check runs as
-- the extension; the views of each pipeline are made anew.
DO $$
DECLARE
	pipeline record;
	runner regrole;
	table_owner regrole;
	key_base text;
BEGIN
	FOR pipeline IN SELECT * FROM sessionize.pipelines LOOP
		SELECT c.relowner INTO table_owner FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) pipeline.source;
		SELECT r.oid INTO runner FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) pipeline.run_as;
		IF runner IS NULL
		   OR ((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.oid OPERATOR(pg_catalog.=) runner)
			   AND NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.oid OPERATOR(pg_catalog.=) table_owner)) THEN
			runner := table_owner;
		END IF;
		UPDATE sessionize.pipelines p SET owner = runner WHERE p.name OPERATOR(pg_catalog.=) pipeline.name;
		EXECUTE pg_catalog.format('GRANT SELECT ON sessionize.%I, sessionize.%I TO %s WITH GRANT OPTION',
								  pipeline.name OPERATOR(pg_catalog.||) '_late',
								  pipeline.name OPERATOR(pg_catalog.||) '_changes', runner);
		IF pipeline.source_kind OPERATOR(pg_catalog.=) 'logical' THEN
			EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION sessionize.sessionize_pgoutput_row(bytea, anyelement, bytea),'
									  ' sessionize.sessionize_pgoutput_problem(bytea, anyelement, bytea) TO %s', runner);
		END IF;
		SELECT pg_catalog.format_type(t.typbasetype, t.typtypmod) INTO key_base
		FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid OPERATOR(pg_catalog.=) a.atttypid
		WHERE a.attrelid OPERATOR(pg_catalog.=) pg_catalog.format('sessionize.%I', pipeline.name OPERATOR(pg_catalog.||) '_stored_sessions')::pg_catalog.regclass
		  AND a.attname OPERATOR(pg_catalog.=) 'key' AND t.typtype OPERATOR(pg_catalog.=) 'd';
		-- the views are made again, as 0.2.0 makes them, around the change
		EXECUTE pg_catalog.format('DROP VIEW sessionize.%I, sessionize.%I, sessionize.%I',
								  pipeline.name OPERATOR(pg_catalog.||) '_sessions',
								  pipeline.name OPERATOR(pg_catalog.||) '_sessions_live',
								  pipeline.name OPERATOR(pg_catalog.||) '_sessions_final');
		IF key_base IS NOT NULL THEN
			EXECUTE pg_catalog.format('ALTER TABLE sessionize.%I ALTER COLUMN key TYPE %s', pipeline.name OPERATOR(pg_catalog.||) '_stored_sessions', key_base);
			EXECUTE pg_catalog.format('ALTER TABLE sessionize.%I ALTER COLUMN key TYPE %s', pipeline.name OPERATOR(pg_catalog.||) '_changes', key_base);
			EXECUTE pg_catalog.format('ALTER TABLE sessionize.%I ALTER COLUMN key TYPE %s', pipeline.name OPERATOR(pg_catalog.||) '_batch', key_base);
		END IF;
		PERFORM sessionize.sessionize_make_pipeline_views(pipeline.name, runner);
		PERFORM sessionize.sessionize_index_source_time(p) FROM sessionize.pipelines p
		WHERE p.name OPERATOR(pg_catalog.=) pipeline.name;
		-- made by this script, they would belong to the extension
		EXECUTE pg_catalog.format('ALTER EXTENSION sessionize DROP VIEW sessionize.%I', pipeline.name OPERATOR(pg_catalog.||) '_sessions');
		EXECUTE pg_catalog.format('ALTER EXTENSION sessionize DROP VIEW sessionize.%I', pipeline.name OPERATOR(pg_catalog.||) '_sessions_live');
		EXECUTE pg_catalog.format('ALTER EXTENSION sessionize DROP VIEW sessionize.%I', pipeline.name OPERATOR(pg_catalog.||) '_sessions_final');
	END LOOP;
END $$;
ALTER TABLE sessionize.pipelines ALTER COLUMN owner SET NOT NULL, DROP COLUMN run_as;

