-- Pipeline functions.  Every function through which a role acts on a
-- pipeline is a front door (C, call_as_extension in src/privileges.c) that
-- calls its body, sessionize_<name>(caller, ...), as the extension's owner
-- with the calling role as first argument.  Bodies check that the caller has
-- the rights of the pipeline's owner; the owner's own rights are what the
-- batch has when it touches the source (sessionize_rows_as()).

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

-- Checks a pipeline's time zone: times a pipeline reads without an offset,
-- and the days of its intervals, are in it, whoever runs the batch.
CREATE FUNCTION sessionize.sessionize_check_time_zone(time_zone text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
BEGIN
	IF time_zone IS NULL THEN
		RAISE EXCEPTION 'time_zone must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	-- what a batch does with it: the function's SET undoes it on return
	PERFORM set_config('TimeZone', time_zone, true);
	RETURN time_zone;
EXCEPTION WHEN invalid_parameter_value THEN
	RAISE EXCEPTION 'invalid time zone "%"', time_zone
		USING ERRCODE = 'invalid_parameter_value',
			  HINT = 'Use a name from pg_timezone_names, such as ''UTC'' or ''Europe/Paris''.';
END $$;

-- Makes the pipeline's time zone the one of this transaction's batch: the
-- functions that call it reset the setting when they return.
CREATE FUNCTION sessionize.sessionize_use_time_zone(pipeline sessionize.pipelines)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	SELECT set_config('TimeZone', (pipeline).time_zone, true);
END;

CREATE FUNCTION sessionize.sessionize_lock_pipeline_batch(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'lock_pipeline_batch'
LANGUAGE C;
COMMENT ON FUNCTION sessionize.sessionize_lock_pipeline_batch(text) IS
	'waits for the lock that serializes a pipeline''s batches, alter and drop; held until the transaction ends';

CREATE FUNCTION sessionize.sessionize_rows_as(role regrole, query text, argument anyelement)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'rows_as'
LANGUAGE C;
COMMENT ON FUNCTION sessionize.sessionize_rows_as(regrole, text, anyelement) IS
	'rows of a query run as a role, in a security-restricted operation with a pinned search_path';

-- Reads a pipeline for a caller, who must have the rights of its owner; with
-- lock, takes the pipeline's lock first.  One batch at a time per pipeline,
-- and no alter or drop while a batch runs (a batch of a logical source holds
-- its slot).  The rights are checked before the lock is taken, so that a
-- role with no rights on a pipeline cannot hold it up, and the pipeline is
-- read again once the lock is held, so that a drop or an alter that
-- committed meanwhile is seen.
CREATE FUNCTION sessionize.sessionize_read_pipeline(caller regrole, name text, lock boolean)
RETURNS sessionize.pipelines
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	pipeline sessionize.pipelines;
BEGIN
	FOR attempt IN 1..2 LOOP
		SELECT * INTO pipeline FROM sessionize.pipelines p WHERE p.name = sessionize_read_pipeline.name;
		IF NOT FOUND THEN
			RAISE EXCEPTION 'pipeline "%" does not exist', name USING ERRCODE = 'undefined_object';
		END IF;
		IF caller IS NULL OR NOT pg_has_role(caller, pipeline.owner, 'USAGE') THEN
			RAISE EXCEPTION 'permission denied for pipeline "%"', name
				USING ERRCODE = 'insufficient_privilege',
					  DETAIL = format('Only roles with the rights of its owner, %s, may use it.', pipeline.owner);
		END IF;
		EXIT WHEN NOT lock OR attempt = 2;
		PERFORM sessionize.sessionize_lock_pipeline_batch(name);
	END LOOP;
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

-- Privileges ------------------------------------------------------------------

-- The first piece of code that a batch of the pipeline would run as its
-- owner although another role wrote it, and that role lacks the owner's
-- rights; NULL when there is none.  A batch runs the code of others when it
-- claims from a staging table (DELETE triggers, rules and row security
-- policies, written by the table's owner or, for triggers, a role granted
-- TRIGGER, and the functions they call), when it reads a logical change or a
-- late event (domain checks and input functions of the source's column
-- types, through arrays, composites and ranges) and when it reads the type
-- column as text (a cast, written by the owner of the type).  Code is safe
-- to run when it is SECURITY DEFINER or its author has the owner's rights.
CREATE FUNCTION sessionize.sessionize_untrusted_code(pipeline sessionize.pipelines)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	WITH RECURSIVE column_types(type_id) AS (
		SELECT a.atttypid FROM pg_attribute a
		WHERE a.attrelid = (pipeline).source AND a.attnum > 0 AND NOT a.attisdropped
		UNION
		SELECT n.type_id
		FROM column_types c
		JOIN pg_type t ON t.oid = c.type_id
		CROSS JOIN LATERAL (
			SELECT t.typbasetype WHERE t.typtype = 'd'
			UNION ALL
			SELECT t.typelem WHERE t.typelem <> 0
			UNION ALL
			SELECT a.atttypid FROM pg_attribute a
			WHERE a.attrelid = t.typrelid AND t.typrelid <> 0 AND a.attnum > 0 AND NOT a.attisdropped
			UNION ALL
			SELECT r.rngsubtype FROM pg_range r WHERE r.rngtypid = t.oid
			UNION ALL
			SELECT r.rngtypid FROM pg_range r WHERE r.rngmultitypid = t.oid) n(type_id)),
	claim_objects(classid, objid) AS (
		SELECT 'pg_trigger'::regclass, tg.oid FROM pg_trigger tg
		WHERE tg.tgrelid = (pipeline).source AND NOT tg.tgisinternal AND (tg.tgtype::integer & 8) <> 0
		UNION ALL
		SELECT 'pg_rewrite'::regclass, r.oid FROM pg_rewrite r
		WHERE r.ev_class = (pipeline).source AND r.ev_type = '4'
		UNION ALL
		SELECT 'pg_policy'::regclass, po.oid FROM pg_policy po
		WHERE po.polrelid = (pipeline).source),
	code(author, object) AS (
		SELECT w.author, pg_describe_object(o.classid, o.objid, 0)
		FROM claim_objects o
		CROSS JOIN LATERAL (
			SELECT c.relowner FROM pg_class c WHERE c.oid = (pipeline).source
			UNION ALL
			SELECT a.grantee FROM pg_class c, aclexplode(c.relacl) a
			WHERE c.oid = (pipeline).source AND o.classid = 'pg_trigger'::regclass
			  AND a.privilege_type = 'TRIGGER') w(author)
		WHERE (pipeline).source_kind = 'table'
		UNION ALL
		SELECT CASE WHEN p.prosecdef THEN NULL ELSE p.proowner END,
			   format('function %s, called by %s', p.oid::regprocedure, pg_describe_object(o.classid, o.objid, 0))
		FROM claim_objects o
		JOIN pg_depend d ON d.classid = o.classid AND d.objid = o.objid AND d.refclassid = 'pg_proc'::regclass
		JOIN pg_proc p ON p.oid = d.refobjid
		WHERE (pipeline).source_kind = 'table'
		UNION ALL
		SELECT t.typowner, format('constraint %s on domain %s', co.conname, t.oid::regtype)
		FROM column_types ct
		JOIN pg_type t ON t.oid = ct.type_id
		JOIN pg_constraint co ON co.contypid = t.oid
		UNION ALL
		SELECT CASE WHEN p.prosecdef THEN NULL ELSE p.proowner END,
			   format('function %s, called by constraint %s on domain %s', p.oid::regprocedure, co.conname, co.contypid::regtype)
		FROM column_types ct
		JOIN pg_constraint co ON co.contypid = ct.type_id
		JOIN pg_depend d ON d.classid = 'pg_constraint'::regclass AND d.objid = co.oid AND d.refclassid = 'pg_proc'::regclass
		JOIN pg_proc p ON p.oid = d.refobjid
		UNION ALL
		SELECT p.proowner, format('function %s, input of type %s', p.oid::regprocedure, t.oid::regtype)
		FROM column_types ct
		JOIN pg_type t ON t.oid = ct.type_id
		JOIN pg_proc p ON p.oid IN (t.typinput, t.typreceive)
		UNION ALL
		-- casts that reading an event runs: to text (the type column), to
		-- json (a row made jsonb); a cast is written by its type's owner
		SELECT x.author, format('%s', pg_describe_object('pg_cast'::regclass, ca.oid, 0))
		FROM column_types ct
		JOIN pg_type t ON t.oid = ct.type_id
		JOIN pg_cast ca ON ca.castsource = t.oid AND ca.casttarget IN ('text'::regtype, 'json'::regtype, 'jsonb'::regtype)
		LEFT JOIN pg_proc p ON p.oid = ca.castfunc
		CROSS JOIN LATERAL (VALUES (t.typowner), (CASE WHEN p.prosecdef THEN NULL ELSE p.proowner END)) x(author))
	SELECT format('%s was written by %s, who lacks the rights of the pipeline''s owner %s',
				  c.object, CASE WHEN c.author = 0 THEN 'PUBLIC' ELSE c.author::regrole::text END, (pipeline).owner)
	FROM code c
	WHERE c.author IS NOT NULL AND (c.author = 0 OR NOT pg_has_role(c.author, (pipeline).owner, 'USAGE'))
	ORDER BY c.object
	LIMIT 1;
END;

-- Refuses to run a batch that would give someone rights they do not have:
-- the owner is gone, or a superuser over a table a non-superuser owns
-- (unless allowed when the pipeline was made), or code another role wrote.
CREATE FUNCTION sessionize.sessionize_check_owner(pipeline sessionize.pipelines)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	source_owner oid;
	untrusted text;
BEGIN
	IF NOT EXISTS (SELECT FROM pg_roles WHERE oid = pipeline.owner) THEN
		RAISE EXCEPTION 'the owner of pipeline "%" does not exist', pipeline.name
			USING ERRCODE = 'undefined_object',
				  HINT = 'Drop the pipeline and create it again.';
	END IF;
	SELECT relowner INTO source_owner FROM pg_class WHERE oid = pipeline.source;
	IF NOT pipeline.allow_superuser
	   AND (SELECT rolsuper FROM pg_roles WHERE oid = pipeline.owner)
	   AND NOT (SELECT rolsuper FROM pg_roles WHERE oid = source_owner) THEN
		RAISE EXCEPTION 'pipeline "%" would run with superuser rights over table %, which % owns',
						pipeline.name, pipeline.source, source_owner::regrole
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = 'The owner of the table could run any code as a superuser through its triggers.',
				  HINT = 'Let the pipeline run as the table''s owner (the default), or create it with allow_superuser => true if every role that can change the table is trusted.';
	END IF;
	-- Changes decoded from WAL know nothing of row security: a logical
	-- pipeline may only read a table whose rows its owner sees whole.
	IF pipeline.source_kind = 'logical'
	   AND (SELECT relrowsecurity FROM pg_class WHERE oid = pipeline.source)
	   AND NOT (SELECT rolbypassrls OR rolsuper FROM pg_roles WHERE oid = pipeline.owner)
	   AND NOT (pg_has_role(pipeline.owner, source_owner, 'USAGE')
				AND NOT (SELECT relforcerowsecurity FROM pg_class WHERE oid = pipeline.source)) THEN
		RAISE EXCEPTION 'pipeline "%" cannot follow table % through its WAL: the table has row security', pipeline.name, pipeline.source
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = format('Decoded changes hold every row, and %s may not see every row.', pipeline.owner),
				  HINT = 'Use a staging table, or a role that owns the table or bypasses row security.';
	END IF;
	-- The key is stored as the type it had when the pipeline was made: a
	-- changed key column would be cut to that type or fail every batch.
	IF pipeline.payload_column IS NULL AND (
		SELECT format_type(CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END,
						   CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END)
		FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
		WHERE a.attrelid = pipeline.source AND a.attname = pipeline.key_column AND NOT a.attisdropped)
	   IS DISTINCT FROM sessionize.sessionize_key_type(pipeline) THEN
		RAISE EXCEPTION 'the key column "%" of pipeline "%" changed type', pipeline.key_column, pipeline.name
			USING ERRCODE = 'datatype_mismatch',
				  DETAIL = format('The pipeline stores keys as %s.', sessionize.sessionize_key_type(pipeline)),
				  HINT = 'Drop the pipeline and create it again, or give the column its type back.';
	END IF;
	untrusted := sessionize.sessionize_untrusted_code(pipeline);
	IF untrusted IS NOT NULL THEN
		RAISE EXCEPTION 'pipeline "%" refuses to run code that another role wrote', pipeline.name
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = untrusted || '.',
				  HINT = 'A batch runs as the pipeline''s owner: make the code SECURITY DEFINER, or owned by a role with the owner''s rights, or run the pipeline as a role that wrote it.';
	END IF;
END $$;

-- Creating, changing and dropping pipelines -------------------------------------

-- sessionize_check_owner(), skipped while nothing it reads has changed since
-- it passed in this backend (src/privileges.c): what each batch calls.
CREATE FUNCTION sessionize.sessionize_check_owner_cached(pipeline sessionize.pipelines)
RETURNS void
AS 'MODULE_PATHNAME', 'check_owner_cached'
LANGUAGE C
SET search_path = pg_catalog, pg_temp;

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
	payload_column name DEFAULT NULL,
	allow_superuser boolean DEFAULT false,
	time_zone text DEFAULT 'UTC')
RETURNS void
AS 'MODULE_PATHNAME', 'call_as_extension'
LANGUAGE C;
COMMENT ON FUNCTION sessionize.create_pipeline(text, regclass, name, name, interval, interval, interval, text[], name, interval, name, text, boolean, name, boolean, text) IS
	'creates a pipeline that sessionizes the events landing in a staging table, or inserted into a table it follows through a logical replication slot';

-- The owner of a pipeline is the owner of its source, or run_as; the caller
-- must be a member of it.  A superuser owner over a table a non-superuser
-- owns must be asked for with allow_superuser.
CREATE FUNCTION sessionize.sessionize_create_pipeline(
	caller regrole, name text, source regclass, key_column name, time_column name, gap interval,
	allowed_lateness interval, dedup_window interval, fingerprint_exclude text[], type_column name,
	max_duration interval, run_as name, source_kind text, updates_as_events boolean, payload_column name,
	allow_superuser boolean, time_zone text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	key_type text;
	time_type oid;
	payload_type oid;
	taken_names text;
	owner regrole;
	needed_rights text;
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
	PERFORM sessionize.sessionize_check_time_zone(time_zone);
	IF EXISTS (SELECT FROM sessionize.pipelines p WHERE p.name = sessionize_create_pipeline.name) THEN
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
		-- a domain's base type: the extension's tables run no domain checks
		-- and the column's collation: keys compare as in the source
		SELECT format_type(CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END,
						   CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END)
			   || CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation
					   THEN format(' COLLATE %I.%I', cn.nspname, c.collname) ELSE '' END
		INTO key_type
		FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
		LEFT JOIN pg_collation c ON c.oid = a.attcollation
		LEFT JOIN pg_namespace cn ON cn.oid = c.collnamespace
		WHERE a.attrelid = source AND a.attname = key_column AND a.attnum > 0 AND NOT a.attisdropped;
		IF key_type IS NULL THEN
			RAISE EXCEPTION 'column "%" of "%" does not exist', key_column, source USING ERRCODE = 'undefined_column';
		END IF;
		SELECT atttypid INTO time_type
		FROM pg_attribute WHERE attrelid = source AND attname = time_column AND attnum > 0 AND NOT attisdropped;
		IF time_type IS NULL THEN
			RAISE EXCEPTION 'column "%" of "%" does not exist', time_column, source USING ERRCODE = 'undefined_column';
		ELSIF time_type NOT IN ('timestamptz'::regtype, 'timestamp'::regtype) THEN
			RAISE EXCEPTION 'time column "%" must be of type timestamp with time zone or timestamp', time_column
				USING ERRCODE = 'datatype_mismatch',
					  DETAIL = format('It is of type %s.', time_type::regtype),
					  HINT = 'A timestamp without time zone is read in the pipeline''s time_zone.';
		END IF;
		IF type_column IS NOT NULL AND NOT EXISTS (
			SELECT FROM pg_attribute WHERE attrelid = source AND attname = type_column AND attnum > 0 AND NOT attisdropped) THEN
			RAISE EXCEPTION 'column "%" of "%" does not exist', type_column, source USING ERRCODE = 'undefined_column';
		END IF;
	END IF;
	IF run_as IS NULL THEN
		SELECT relowner INTO owner FROM pg_class WHERE oid = source;
	ELSIF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = run_as) THEN
		RAISE EXCEPTION 'role "%" does not exist', run_as USING ERRCODE = 'undefined_object';
	ELSE
		SELECT oid INTO owner FROM pg_roles WHERE rolname = run_as;
	END IF;
	IF caller IS NULL OR NOT pg_has_role(caller, owner, 'MEMBER') THEN
		RAISE EXCEPTION 'must be a member of role "%" to create a pipeline that runs as it', owner
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = 'A pipeline runs as the owner of its source table, or as the role run_as names.';
	END IF;
	needed_rights := CASE source_kind WHEN 'table' THEN 'SELECT, UPDATE, DELETE' ELSE 'SELECT' END;
	IF NOT has_table_privilege(owner, source, needed_rights) THEN
		RAISE EXCEPTION 'role "%" cannot consume table %', owner, source
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = format('A pipeline''s owner needs %s on its source.', needed_rights),
				  HINT = format('GRANT %s ON %s TO %s', needed_rights, source, owner);
	END IF;
	IF NOT coalesce(allow_superuser, false)
	   AND (SELECT rolsuper FROM pg_roles WHERE oid = owner)
	   AND NOT (SELECT r.rolsuper FROM pg_roles r JOIN pg_class c ON c.relowner = r.oid WHERE c.oid = source) THEN
		RAISE EXCEPTION 'pipeline "%" would run with superuser rights over table %, which % owns', name, source,
						(SELECT relowner::regrole FROM pg_class WHERE oid = source)
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = 'The owner of the table could run any code as a superuser through its triggers.',
				  HINT = 'Let the pipeline run as the table''s owner (leave out run_as), or pass allow_superuser => true if every role that can change the table is trusted.';
	END IF;
	-- every name the pipeline will take, before anything (a slot) is made
	SELECT string_agg(format('%I', name || suffix), ', ') INTO taken_names
	FROM unnest(ARRAY['_stored_sessions', '_sessions', '_sessions_live', '_sessions_final', '_late',
					  '_changes', '_late_id_seq', '_changes_change_id_seq']) suffix
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
			PERFORM sessionize.sessionize_make_pipeline(name, source, key_column, time_column, gap, allowed_lateness, dedup_window, fingerprint_exclude, type_column, owner, coalesce(allow_superuser, false), source_kind, updates_as_events, payload_column, key_type,
														 time_zone);
		EXCEPTION WHEN OTHERS THEN
			PERFORM pg_drop_replication_slot(sessionize.sessionize_slot_name(name));
			RAISE;
		END;
	ELSE
		PERFORM sessionize.sessionize_make_pipeline(name, source, key_column, time_column, gap, allowed_lateness, dedup_window, fingerprint_exclude, type_column, owner, coalesce(allow_superuser, false), source_kind, updates_as_events, payload_column, key_type,
														 time_zone);
	END IF;
END $$;

-- A batch claims a staging table's oldest events first: an index on the
-- time column serves it.  Made, in the source's schema and for its owner,
-- when no index of the table starts with that column and the pipeline's
-- owner has the rights of the table's owner (who alone may index it).
CREATE FUNCTION sessionize.sessionize_index_source_time(pipeline sessionize.pipelines)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF pipeline.source_kind = 'table' AND pipeline.payload_column IS NULL
	   AND pg_has_role(pipeline.owner, (SELECT relowner FROM pg_class WHERE oid = pipeline.source), 'USAGE')
	   AND NOT EXISTS (
		SELECT FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
		WHERE i.indrelid = pipeline.source AND a.attname = pipeline.time_column AND i.indpred IS NULL) THEN
		EXECUTE format('CREATE INDEX ON %s (%I)', pipeline.source, pipeline.time_column);
	END IF;
END $$;

-- The views of a pipeline's sessions, readable by its owner, who may let
-- others read them.
CREATE FUNCTION sessionize.sessionize_make_pipeline_views(name text, owner regrole)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
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
	EXECUTE format('COMMENT ON VIEW sessionize.%I IS %L', name || '_sessions', 'sessions of pipeline ' || name || ' with their status: open, idle or final');
	EXECUTE format('COMMENT ON VIEW sessionize.%I IS %L', name || '_sessions_live', 'open and idle sessions of pipeline ' || name);
	EXECUTE format('COMMENT ON VIEW sessionize.%I IS %L', name || '_sessions_final', 'sessions of pipeline ' || name || ' that can no longer change');
	EXECUTE format('GRANT SELECT ON sessionize.%I, sessionize.%I, sessionize.%I TO %s WITH GRANT OPTION',
				   name || '_sessions', name || '_sessions_live', name || '_sessions_final', owner);
END $$;

-- The catalog rows, tables, views and grants of a pipeline that
-- create_pipeline() has checked.
CREATE FUNCTION sessionize.sessionize_make_pipeline(name text, source regclass, key_column name, time_column name,
													gap interval, allowed_lateness interval, dedup_window interval,
													fingerprint_exclude text[], type_column name, owner regrole,
													allow_superuser boolean, source_kind text, updates_as_events boolean,
													payload_column name, key_type text, time_zone text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	made sessionize.pipelines;
BEGIN
	INSERT INTO sessionize.pipelines (name, source, key_column, time_column, gap, allowed_lateness,
									  dedup_window, fingerprint_exclude, type_column, owner, allow_superuser,
									  source_kind, updates_as_events, payload_column, time_zone)
	VALUES (name, source, key_column, time_column, gap, allowed_lateness, dedup_window,
			coalesce(fingerprint_exclude, '{}'), type_column, owner, allow_superuser, source_kind,
			coalesce(updates_as_events, false), payload_column, time_zone)
	RETURNING * INTO made;
	INSERT INTO sessionize.pipeline_state (pipeline) VALUES (name);
	IF source_kind = 'logical' THEN
		PERFORM sessionize.sessionize_publish_source(source);
	ELSE
		PERFORM sessionize.sessionize_index_source_time(made);
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
	PERFORM sessionize.sessionize_make_pipeline_views(name, owner);
	-- what a batch would refuse is refused now: row security, code another role wrote
	PERFORM sessionize.sessionize_check_owner(made);
	EXECUTE format('COMMENT ON TABLE sessionize.%I IS %L', name || '_stored_sessions',
				   'sessions of pipeline ' || name || ', as the pipeline writes them; read them through the views');
	EXECUTE format('COMMENT ON TABLE sessionize.%I IS %L', name || '_late', 'events that came later than the allowed lateness of pipeline ' || name);
	EXECUTE format('COMMENT ON TABLE sessionize.%I IS %L', name || '_changes', 'session changes made by pipeline ' || name);

	-- The owner reads the pipeline's results and may let others read them;
	-- only the extension writes them.  A logical pipeline's owner decodes
	-- its source's rows.
	EXECUTE format('GRANT SELECT ON sessionize.%I, sessionize.%I TO %s WITH GRANT OPTION',
				   name || '_late', name || '_changes', owner);
	IF source_kind = 'logical' THEN
		EXECUTE format('GRANT EXECUTE ON FUNCTION sessionize.sessionize_pgoutput_row(bytea, anyelement, bytea),'
					   ' sessionize.sessionize_pgoutput_problem(bytea, anyelement, bytea) TO %s', owner);
	END IF;
END $$;

-- Writes one "closed" change for each session that a watermark moving from
-- old_watermark to new_watermark makes final: it can no longer change.
CREATE FUNCTION sessionize.sessionize_close_sessions(pipeline sessionize.pipelines, old_watermark timestamptz,
													 new_watermark timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF new_watermark > old_watermark OR (old_watermark IS NULL AND new_watermark IS NOT NULL) THEN
		EXECUTE format($q$
			INSERT INTO sessionize.%1$I (key, session_start, change, revision, last_event_at, events)
			SELECT key, session_start, 'closed', revision, last_event_at, events FROM sessionize.%2$I
			WHERE expires_at < $2 AND ($1 IS NULL OR expires_at >= $1)
			ORDER BY key, session_start$q$,
			pipeline.name || '_changes', pipeline.name || '_stored_sessions')
		USING old_watermark, new_watermark;
	END IF;
END $$;

CREATE FUNCTION sessionize.alter_pipeline(
	name text,
	allowed_lateness interval DEFAULT NULL,
	dedup_window interval DEFAULT NULL,
	fingerprint_exclude text[] DEFAULT NULL,
	reset_allowed_lateness boolean DEFAULT false,
	reset_dedup_window boolean DEFAULT false)
RETURNS void
AS 'MODULE_PATHNAME', 'call_as_extension'
LANGUAGE C;
COMMENT ON FUNCTION sessionize.alter_pipeline(text, interval, interval, text[], boolean, boolean) IS
	'changes the lateness, dedup window or fingerprint exclusions of a pipeline (reset_* back to unbounded)';

CREATE FUNCTION sessionize.sessionize_alter_pipeline(caller regrole, name text, allowed_lateness interval,
													 dedup_window interval, fingerprint_exclude text[],
													 reset_allowed_lateness boolean, reset_dedup_window boolean)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
SET DateStyle = 'ISO, MDY'
SET IntervalStyle = 'postgres'
SET extra_float_digits = 1
SET bytea_output = 'hex'
SET timezone_abbreviations = 'Default'
AS $$
DECLARE
	pipeline sessionize.pipelines;
	old_watermark timestamptz;
	new_watermark timestamptz;
BEGIN
	IF allowed_lateness IS NOT NULL AND allowed_lateness <> interval '0' THEN
		PERFORM sessionize.sessionize_check_interval(allowed_lateness, 'allowed_lateness');
	END IF;
	IF dedup_window IS NOT NULL THEN
		PERFORM sessionize.sessionize_check_interval(dedup_window, 'dedup_window');
	END IF;
	-- between batches, so that a batch never commits the watermark of the old lateness
	pipeline := sessionize.sessionize_read_pipeline(caller, name, true);
	PERFORM sessionize.sessionize_use_time_zone(pipeline);
	SELECT s.watermark INTO old_watermark FROM sessionize.pipeline_state s WHERE s.pipeline = pipeline.name;
	UPDATE sessionize.pipelines p
	SET allowed_lateness = CASE WHEN reset_allowed_lateness THEN NULL
								ELSE coalesce(sessionize_alter_pipeline.allowed_lateness, p.allowed_lateness) END,
		dedup_window = CASE WHEN reset_dedup_window THEN NULL
							ELSE coalesce(sessionize_alter_pipeline.dedup_window, p.dedup_window) END,
		fingerprint_exclude = coalesce(sessionize_alter_pipeline.fingerprint_exclude, p.fingerprint_exclude)
	WHERE p.name = sessionize_alter_pipeline.name;
	-- the watermark follows the new lateness at once
	UPDATE sessionize.pipeline_state s
	SET watermark = s.max_event_time - p.allowed_lateness
	FROM sessionize.pipelines p
	WHERE p.name = sessionize_alter_pipeline.name AND s.pipeline = p.name
	RETURNING s.watermark INTO new_watermark;
	PERFORM sessionize.sessionize_close_sessions(pipeline, old_watermark, new_watermark);
END $$;

CREATE FUNCTION sessionize.sessionize_set_pipeline_state(caller regrole, name text, new_state text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM sessionize.sessionize_read_pipeline(caller, name, false);
	UPDATE sessionize.pipelines p SET state = new_state WHERE p.name = sessionize_set_pipeline_state.name;
END $$;

CREATE FUNCTION sessionize.pause_pipeline(name text) RETURNS void
AS 'MODULE_PATHNAME', 'call_as_extension'
LANGUAGE C;
COMMENT ON FUNCTION sessionize.pause_pipeline(text) IS 'stops the worker of a pipeline; events wait in the staging table';

CREATE FUNCTION sessionize.sessionize_pause_pipeline(caller regrole, name text) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	SELECT sessionize.sessionize_set_pipeline_state(caller, name, 'paused');
END;

CREATE FUNCTION sessionize.resume_pipeline(name text) RETURNS void
AS 'MODULE_PATHNAME', 'call_as_extension'
LANGUAGE C;
COMMENT ON FUNCTION sessionize.resume_pipeline(text) IS 'lets the worker run a paused pipeline again';

CREATE FUNCTION sessionize.sessionize_resume_pipeline(caller regrole, name text) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	SELECT sessionize.sessionize_set_pipeline_state(caller, name, 'active');
END;

CREATE FUNCTION sessionize.drop_pipeline(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'call_as_extension'
LANGUAGE C;
COMMENT ON FUNCTION sessionize.drop_pipeline(text) IS
	'drops a pipeline and its tables (and the replication slot of a logical source); the source table stays';

CREATE FUNCTION sessionize.sessionize_drop_pipeline(caller regrole, name text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	dropped sessionize.pipelines;
BEGIN
	-- after a batch in progress (it holds the slot of a logical source)
	dropped := sessionize.sessionize_read_pipeline(caller, name, true);
	DELETE FROM sessionize.pipelines p WHERE p.name = sessionize_drop_pipeline.name;
	-- IF EXISTS: dropping the key's type with CASCADE takes the views along
	EXECUTE format('DROP VIEW IF EXISTS sessionize.%I, sessionize.%I, sessionize.%I',
				   name || '_sessions', name || '_sessions_live', name || '_sessions_final');
	EXECUTE format('DROP TABLE IF EXISTS sessionize.%I, sessionize.%I, sessionize.%I',
				   name || '_stored_sessions', name || '_late', name || '_changes');
	DELETE FROM sessionize.seen_fingerprints WHERE namespace = 'pipeline:' || name;
	-- a pipeline made later under this name belongs to someone else perhaps
	DELETE FROM sessionize.dead_letter d WHERE d.pipeline = sessionize_drop_pipeline.name;
	-- the grants the tables took with them; the owner's right to decode
	-- goes with its last logical pipeline
	IF dropped.source_kind = 'logical' AND NOT EXISTS (
		SELECT FROM sessionize.pipelines p WHERE p.owner = dropped.owner AND p.source_kind = 'logical') THEN
		EXECUTE format('REVOKE EXECUTE ON FUNCTION sessionize.sessionize_pgoutput_row(bytea, anyelement, bytea),'
					   ' sessionize.sessionize_pgoutput_problem(bytea, anyelement, bytea) FROM %s', dropped.owner);
	END IF;
	IF dropped.source_kind = 'logical' THEN
		PERFORM sessionize.sessionize_publish_source(dropped.source);
		-- last: dropping a slot cannot be rolled back
		PERFORM pg_drop_replication_slot(slot_name) FROM pg_replication_slots
		WHERE slot_name = sessionize.sessionize_slot_name(name);
	END IF;
END $$;
-- One batch -------------------------------------------------------------------

-- Runs a source's query as the pipeline's owner and applies its rows, the
-- events of one batch, in C (src/batch.c): dead letters, dedup, lateness
-- against the watermark the batch started with, the merge into sessions, the
-- change log.  An event is late when its own session would expire before
-- the watermark, and also when it would change a final session (one that
-- expired before the watermark).  A replay merges late events whatever the
-- watermark, without dedup.  The query returns (position, key, ts, ts_text,
-- event_type, event, fingerprint, problem); events at the positions in
-- incomplete are dead letters.
CREATE FUNCTION sessionize.sessionize_consume_events(pipeline sessionize.pipelines, watermark timestamptz,
													 replay boolean, query text, argument anyelement,
													 incomplete bigint[],
													 OUT consumed bigint, OUT merged bigint, OUT duplicates bigint,
													 OUT late bigint, OUT dead_lettered bigint,
													 OUT max_merged timestamptz, OUT last_ts timestamptz)
AS 'MODULE_PATHNAME', 'consume_events'
LANGUAGE C
SET search_path = pg_catalog, pg_temp;

-- How a pipeline reads an event from a row of its source (source_row, an SQL
-- expression of the source's row type): SQL expressions for its key, its
-- time (ts, or ts_text when the time is text to be cast when the batch is
-- applied, so that a bad one is dead-lettered alone), its type, the content
-- to fingerprint, and a problem that makes it a dead letter.  One place for
-- the staging table, the logical source and replay_late(), whose queries
-- have the row as jsonb at hand as e.event.  These expressions run as the
-- pipeline's owner; key_type is the type of the key in the pipeline's tables.
CREATE FUNCTION sessionize.sessionize_event_expressions(pipeline sessionize.pipelines, source_row text, key_type text,
														OUT key text, OUT ts text, OUT ts_text text,
														OUT event_type text, OUT content text, OUT problem text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	payload text;
BEGIN
	IF pipeline.payload_column IS NULL THEN
		key := format('CAST(%s.%I AS %s)', source_row, pipeline.key_column, key_type);
		-- a timestamp without time zone is a time in the pipeline's zone
		ts := CASE WHEN (SELECT atttypid FROM pg_attribute
						 WHERE attrelid = pipeline.source AND attname = pipeline.time_column) = 'timestamp'::regtype
				   THEN format('pg_catalog.timezone(%L, %s.%I)', pipeline.time_zone, source_row, pipeline.time_column)
				   ELSE format('%s.%I', source_row, pipeline.time_column) END;
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

-- The type of the key in a pipeline's tables.
CREATE FUNCTION sessionize.sessionize_key_type(pipeline sessionize.pipelines)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
	WHERE a.attrelid = to_regclass(format('sessionize.%I', (pipeline).name || '_stored_sessions')) AND a.attname = 'key';
END;

-- The changes of a logical pipeline, streamed by its worker (src/source_logical.c).
CREATE FUNCTION sessionize.sessionize_stream_changes(pipeline sessionize.pipelines, slot name,
													 slot_advance_to pg_lsn, checkpoint_commit_lsn pg_lsn,
													 checkpoint_lsn pg_lsn, checkpoint_lsn_row bigint,
													 max_events integer,
													 OUT streaming boolean, OUT messages bytea[],
													 OUT incomplete bigint[], OUT commit_lsn pg_lsn,
													 OUT lsn pg_lsn, OUT lsn_row bigint, OUT advance pg_lsn)
AS 'MODULE_PATHNAME', 'stream_changes'
LANGUAGE C
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION sessionize.run_pipeline(name text, max_events integer DEFAULT 10000,
										OUT consumed bigint, OUT merged bigint, OUT duplicates bigint,
										OUT late bigint, OUT dead_lettered bigint)
AS 'MODULE_PATHNAME', 'call_as_extension'
LANGUAGE C;
COMMENT ON FUNCTION sessionize.run_pipeline(text, integer) IS
	'consumes one batch of a pipeline''s staging table in the calling transaction, with the rights of the pipeline''s owner; what the worker and pg_cron call';

CREATE FUNCTION sessionize.sessionize_run_pipeline(caller regrole, name text, max_events integer,
												   OUT consumed bigint, OUT merged bigint, OUT duplicates bigint,
												   OUT late bigint, OUT dead_lettered bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
SET DateStyle = 'ISO, MDY'
SET IntervalStyle = 'postgres'
SET extra_float_digits = 1
SET bytea_output = 'hex'
SET timezone_abbreviations = 'Default'
AS $$
DECLARE
	pipeline sessionize.pipelines;
	state sessionize.pipeline_state;
	counts record;
	new_max timestamptz;
	new_watermark timestamptz;
	last_ts timestamptz;
	slot text;
	new_commit_lsn pg_lsn;
	new_lsn pg_lsn;
	new_advance pg_lsn;
	slot_restart pg_lsn;
	new_lsn_row bigint;
	peeked_changes bigint;
	peek_limit bigint;
	peek_end pg_lsn;
	messages bytea[];
	incomplete bigint[];
	streamed record;
	reads record;
BEGIN
	IF max_events IS NULL OR max_events < 1 THEN
		RAISE EXCEPTION 'max_events must be positive' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	pipeline := sessionize.sessionize_read_pipeline(caller, name, true);
	PERFORM sessionize.sessionize_use_time_zone(pipeline);
	SELECT * INTO state FROM sessionize.pipeline_state s WHERE s.pipeline = pipeline.name;
	IF NOT EXISTS (SELECT FROM pg_class WHERE oid = pipeline.source) THEN
		RAISE EXCEPTION 'the source table of pipeline "%" does not exist', pipeline.name
			USING ERRCODE = 'undefined_table',
				  HINT = 'Drop the pipeline, or create it again on another table.';
	END IF;
	IF (SELECT relkind FROM pg_class WHERE oid = pipeline.source) <> 'r' THEN
		RAISE EXCEPTION 'the source of pipeline "%" is no longer a table', pipeline.name
			USING ERRCODE = 'wrong_object_type',
				  DETAIL = format('%s has become another kind of relation.', pipeline.source);
	END IF;
	-- no trigger can be added to the source while this batch checks and claims
	IF pipeline.source_kind = 'table' THEN
		EXECUTE format('LOCK TABLE ONLY %s IN ROW EXCLUSIVE MODE', pipeline.source);
	END IF;
	PERFORM sessionize.sessionize_check_owner_cached(pipeline);

	IF pipeline.source_kind = 'logical' THEN
		slot := sessionize.sessionize_slot_name(pipeline.name);
		-- The worker of the pipeline streams its changes: each is decoded
		-- once (src/source_logical.c).  Anywhere else they are peeked.
		streamed := sessionize.sessionize_stream_changes(pipeline, slot, state.slot_advance_to,
														 state.checkpoint_commit_lsn, state.checkpoint_lsn,
														 state.checkpoint_lsn_row, max_events);
		IF streamed.streaming THEN
			messages := streamed.messages;
			incomplete := streamed.incomplete;
			new_commit_lsn := streamed.commit_lsn;
			new_lsn := streamed.lsn;
			new_lsn_row := streamed.lsn_row;
			new_advance := streamed.advance;
			SELECT restart_lsn INTO slot_restart FROM pg_replication_slots WHERE slot_name = slot;
			peeked_changes := 0;
			peek_limit := 1;
		ELSE
			-- Only now that earlier batches are committed may the slot pass them.
			PERFORM pg_replication_slot_advance(slot_name, state.slot_advance_to) FROM pg_replication_slots
			WHERE slot_name = slot AND confirmed_flush_lsn < state.slot_advance_to;
			SELECT restart_lsn INTO slot_restart FROM pg_replication_slots WHERE slot_name = slot;
			peek_end := pg_current_wal_flush_lsn();
			peek_limit := 3 * max_events::bigint + 3;
			-- Claim: peek a bounded number of changes up to the WAL flushed now
			-- (the slot does not move), skip every change at or before the
			-- checkpoint, and take the next max_events inserts of the source
			-- table.  pgoutput sends whole transactions in commit order, so
			-- (commit LSN, change LSN) orders the stream; a large transaction is
			-- taken over several batches.  The changes are decoded into rows
			-- below, as the pipeline's owner.
			SELECT * INTO messages, incomplete, new_commit_lsn, new_lsn, new_lsn_row, peeked_changes, new_advance
			FROM (
				WITH peeked AS (
					SELECT p.position, p.lsn, p.data, m.kind, m.relation, m.missing_values,
						   max(m.commit_lsn) OVER (ORDER BY p.position) AS commit_lsn,
						   -- the relation message that gives the change its columns
						   max(p.position) FILTER (WHERE m.kind = 'R' AND m.relation = pipeline.source::oid)
							   OVER (ORDER BY p.position) AS relation_position
					FROM pg_logical_slot_peek_binary_changes(slot, peek_end, least(peek_limit, 2147483647)::integer,
															 'proto_version', '1',
															 'publication_names', 'sessionize_pipelines,sessionize_pipeline_updates')
						 WITH ORDINALITY AS p(lsn, xid, data, position),
						 sessionize.sessionize_pgoutput_message(p.data) m),
				-- The rows of one COPY share the LSN of their WAL record: the
				-- checkpoint is (commit LSN, change LSN, row at that LSN).
				relevant AS (
					SELECT *, row_number() OVER (PARTITION BY peeked.commit_lsn, lsn ORDER BY position) AS lsn_row
					FROM peeked
					WHERE relation = pipeline.source::oid AND (kind = 'I' OR (kind = 'U' AND pipeline.updates_as_events))),
				pending AS (
					SELECT * FROM relevant r
					WHERE (r.commit_lsn, r.lsn, r.lsn_row) > (coalesce(state.checkpoint_commit_lsn, '0/0'),
															  coalesce(state.checkpoint_lsn, '0/0'),
															  coalesce(state.checkpoint_lsn_row, 0))),
				taken AS (
					SELECT *, row_number() OVER (ORDER BY position) AS taken_row FROM pending ORDER BY position LIMIT max_events),
				last_taken AS (
					SELECT t.commit_lsn, t.lsn, t.lsn_row FROM taken t ORDER BY position DESC LIMIT 1),
				first_left AS (
					SELECT min(p.commit_lsn) AS commit_lsn FROM pending p
					WHERE position > coalesce((SELECT max(position) FROM taken), 0))
				-- The slot may pass every transaction whose changes are all
				-- applied; when the peek reached peek_end and left nothing, it
				-- may pass all of that WAL.
				SELECT (SELECT array_agg(ARRAY[r.data, t.data] ORDER BY t.position)
						FROM taken t LEFT JOIN peeked r ON r.position = t.relation_position),
					   (SELECT array_agg(t.taken_row ORDER BY t.position) FILTER (WHERE t.missing_values) FROM taken t),
					   (SELECT l.commit_lsn FROM last_taken l),
					   (SELECT l.lsn FROM last_taken l),
					   (SELECT l.lsn_row FROM last_taken l),
					   (SELECT count(*) FROM peeked),
					   CASE WHEN (SELECT count(*) FROM peeked) < peek_limit AND (SELECT f.commit_lsn FROM first_left f) IS NULL
							THEN peek_end
							ELSE (SELECT max(p.lsn) FROM peeked p, first_left f
								  WHERE p.kind = 'C' AND (f.commit_lsn IS NULL OR p.commit_lsn < f.commit_lsn)) END) summary;
		END IF;
		consumed := 0;
		IF messages IS NOT NULL THEN
			-- [relation message, change] pairs, read by unnest: a subscript
			-- into an array of variable-length values walks it from its start
			reads := sessionize.sessionize_event_expressions(pipeline, '(d.r)', sessionize.sessionize_key_type(pipeline));
			counts := sessionize.sessionize_consume_events(pipeline, state.watermark, false, format($q$
				SELECT m.position::bigint, %2$s, %3$s, %4$s, %5$s, e.event, sessionize.fingerprint_bytes(%6$s, %8$L::text[]),
					   coalesce(d.problem, %7$s)
				FROM (SELECT u.position / 2 AS position, u.relation, u.change
					  FROM (SELECT u.change, u.position, lag(u.change) OVER (ORDER BY u.position) AS relation
							FROM unnest($1::bytea[]) WITH ORDINALITY AS u(change, position)) u
					  WHERE u.position %% 2 = 0) m,
					 LATERAL (SELECT sessionize.sessionize_pgoutput_row(m.change, NULL::%1$s, m.relation) AS r,
									 sessionize.sessionize_pgoutput_problem(m.change, NULL::%1$s, m.relation) AS problem
							 OFFSET 0) d,
					 LATERAL (SELECT coalesce(to_jsonb(d.r),
											  jsonb_build_object('undecodable_change', encode(m.change, 'base64'))) AS event) e$q$,
				pipeline.source, reads.key, reads.ts, reads.ts_text, reads.event_type, reads.content, reads.problem,
				pipeline.fingerprint_exclude), messages, incomplete);
			consumed := counts.consumed;
		END IF;
		-- Each peek decodes from the slot's restart point, which moves only
		-- as the slot passes WAL.  A batch that took nothing lets the slot
		-- pass what it peeked when the peek was full (else the next peek
		-- would be the same), or when more than 1 MB of WAL would be decoded
		-- again; otherwise an idle pipeline writes nothing.
		IF (new_advance > state.slot_advance_to OR (state.slot_advance_to IS NULL AND new_advance IS NOT NULL))
		   AND (consumed > 0 OR peeked_changes >= peek_limit OR pg_wal_lsn_diff(new_advance, slot_restart) > 1048576) THEN
			UPDATE sessionize.pipeline_state s SET slot_advance_to = new_advance WHERE s.pipeline = pipeline.name;
		END IF;
	ELSE
		-- Claim, as the pipeline's owner: rows leave the staging table in
		-- this transaction, oldest event time first (through the index on
		-- the time column), so that a backlog never makes its own events
		-- late; rows other transactions hold are skipped, not waited for.
		-- Each event is fingerprinted once, here.
		reads := sessionize.sessionize_event_expressions(pipeline, 'c', sessionize.sessionize_key_type(pipeline));
		counts := sessionize.sessionize_consume_events(pipeline, state.watermark, false, format($q$
			WITH claimed AS (
				DELETE FROM ONLY %1$s s
				WHERE ctid = ANY (ARRAY(SELECT ctid FROM ONLY %1$s %9$s LIMIT $1 FOR UPDATE SKIP LOCKED))
				RETURNING s.*)
			SELECT row_number() OVER (), %2$s, %3$s, %4$s, %5$s, e.event, sessionize.fingerprint_bytes(%6$s, %8$L::text[]), %7$s
			FROM claimed c, LATERAL (SELECT to_jsonb(c) AS event) e$q$,
			pipeline.source, reads.key, reads.ts, reads.ts_text, reads.event_type, reads.content, reads.problem,
			pipeline.fingerprint_exclude,
			CASE WHEN pipeline.payload_column IS NULL THEN format('ORDER BY %I', pipeline.time_column) ELSE '' END),
			max_events, NULL);
		consumed := counts.consumed;
	END IF;
	merged := 0; duplicates := 0; late := 0; dead_lettered := 0;
	IF consumed = 0 THEN
		RETURN;
	END IF;
	merged := counts.merged; duplicates := counts.duplicates;
	late := counts.late; dead_lettered := counts.dead_lettered;
	new_max := counts.max_merged;
	last_ts := counts.last_ts;

	new_max := greatest(state.max_event_time, new_max);
	-- Unbounded lateness has no watermark.  A grown allowed_lateness moves it
	-- back, so that late events can be replayed into sessions.
	new_watermark := new_max - pipeline.allowed_lateness;
	UPDATE sessionize.pipeline_state s
	SET max_event_time = new_max,
		watermark = new_watermark,
		last_event_time = greatest(s.last_event_time, coalesce(last_ts, new_max)),
		consumed = s.consumed + sessionize_run_pipeline.consumed,
		merged = s.merged + sessionize_run_pipeline.merged,
		duplicates = s.duplicates + sessionize_run_pipeline.duplicates,
		late = s.late + sessionize_run_pipeline.late,
		dead_lettered = s.dead_lettered + sessionize_run_pipeline.dead_lettered,
		batches = s.batches + 1,
		last_batch_at = clock_timestamp(),
		failures = 0,
		checkpoint_commit_lsn = coalesce(new_commit_lsn, s.checkpoint_commit_lsn),
		checkpoint_lsn = coalesce(new_lsn, s.checkpoint_lsn),
		checkpoint_lsn_row = coalesce(new_lsn_row, s.checkpoint_lsn_row)
	WHERE s.pipeline = pipeline.name;
	PERFORM sessionize.sessionize_close_sessions(pipeline, state.watermark, new_watermark);
	PERFORM pg_notify('sessionize_' || pipeline.name,
					  json_build_object('pipeline', pipeline.name, 'consumed', consumed, 'merged', merged,
										'duplicates', duplicates, 'late', late,
										'dead_lettered', dead_lettered)::text);
END $$;
COMMENT ON FUNCTION sessionize.sessionize_run_pipeline(regrole, text, integer) IS
	'body of run_pipeline(), called with the calling role';

-- Late events are kept, not dropped: once allowed_lateness is raised (or to
-- accept them anyway), an operator merges them into the sessions.
CREATE FUNCTION sessionize.replay_late(name text, max_events integer DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'call_as_extension'
LANGUAGE C;
COMMENT ON FUNCTION sessionize.replay_late(text, integer) IS
	'merges events of a pipeline''s late table into its sessions, whatever the watermark (all, or the oldest max_events)';

CREATE FUNCTION sessionize.sessionize_replay_late(caller regrole, name text, max_events integer)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
SET DateStyle = 'ISO, MDY'
SET IntervalStyle = 'postgres'
SET extra_float_digits = 1
SET bytea_output = 'hex'
SET timezone_abbreviations = 'Default'
AS $$
DECLARE
	pipeline sessionize.pipelines;
	reads record;
	events jsonb[];
	replayed bigint;
	counts record;
BEGIN
	IF max_events < 1 THEN
		RAISE EXCEPTION 'max_events must be positive' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	pipeline := sessionize.sessionize_read_pipeline(caller, name, true);
	PERFORM sessionize.sessionize_use_time_zone(pipeline);
	PERFORM sessionize.sessionize_check_owner_cached(pipeline);

	EXECUTE format($q$
		WITH taken AS (
			DELETE FROM sessionize.%1$I l
			WHERE id = ANY (ARRAY(SELECT id FROM sessionize.%1$I ORDER BY id LIMIT $1))
			RETURNING l.id, l.event)
		SELECT array_agg(event ORDER BY id) FROM taken$q$,
		pipeline.name || '_late')
	INTO events
	USING max_events;
	IF events IS NULL THEN
		RETURN 0;
	END IF;
	-- A late event is its source row as jsonb: read it back into a row, as
	-- the pipeline's owner (domain checks and input functions run).
	reads := sessionize.sessionize_event_expressions(pipeline, 'r', sessionize.sessionize_key_type(pipeline));
	counts := sessionize.sessionize_consume_events(pipeline, NULL, true, format($q$
		SELECT e.position, %2$s, %3$s, %4$s, %5$s, e.event, NULL::uuid, %6$s
		FROM unnest($1::jsonb[]) WITH ORDINALITY AS e(event, position),
			 LATERAL jsonb_populate_record(NULL::%1$s, e.event) r$q$,
		pipeline.source, reads.key, reads.ts, reads.ts_text, reads.event_type, reads.problem), events, NULL);
	replayed := counts.consumed;
	UPDATE sessionize.pipeline_state s
	SET merged = s.merged + counts.merged,
		dead_lettered = s.dead_lettered + counts.dead_lettered,
		late = s.late - replayed
	WHERE s.pipeline = pipeline.name;
	RETURN replayed;
END $$;

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
AS 'MODULE_PATHNAME', 'call_as_extension'
LANGUAGE C STABLE;
COMMENT ON FUNCTION sessionize.pipeline_backlog(text) IS
	'events waiting in the staging table of a pipeline (counts them); NULL for a logical source';

-- Counts as the pipeline's owner: whatever the table runs (row security,
-- a rule that made it a view) runs with the owner's rights.
CREATE FUNCTION sessionize.sessionize_pipeline_backlog(caller regrole, name text)
RETURNS bigint
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	pipeline sessionize.pipelines;
	waiting bigint;
BEGIN
	pipeline := sessionize.sessionize_read_pipeline(caller, name, false);
	IF pipeline.source_kind IS DISTINCT FROM 'table'
	   OR NOT EXISTS (SELECT FROM pg_class WHERE oid = pipeline.source AND relkind = 'r') THEN
		RETURN NULL;
	END IF;
	BEGIN
		SELECT r.waiting INTO waiting
		FROM sessionize.sessionize_rows_as(pipeline.owner, format('SELECT count(*) FROM ONLY %s', pipeline.source), NULL::integer)
			 AS r(waiting bigint);
	EXCEPTION WHEN insufficient_privilege OR undefined_table OR raise_exception OR query_canceled THEN
		-- one owner's table cannot make pipeline_status fail for everyone
		RETURN NULL;
	END;
	RETURN waiting;
END $$;

-- A role sees the pipelines whose owner's rights it has; security_barrier,
-- so that no function of the reader's sees the rows it may not.
CREATE VIEW sessionize.pipeline_status WITH (security_barrier) AS
SELECT p.name, p.state, p.source_kind,
	   (SELECT a.pid FROM pg_catalog.pg_stat_activity a
		WHERE a.backend_type OPERATOR(pg_catalog.=) 'sessionize pipeline'
		  AND a.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()
		  AND a.application_name OPERATOR(pg_catalog.=) ('sessionize pipeline ' OPERATOR(pg_catalog.||) p.name)
		LIMIT 1) AS worker_pid,
	   s.consumed, s.merged, s.duplicates, s.late, s.dead_lettered, s.batches,
	   sessionize.pipeline_backlog(p.name) AS backlog,
	   s.max_event_time, s.watermark,
	   pg_catalog.now() OPERATOR(pg_catalog.-) s.last_event_time AS lag,
	   s.last_batch_at, s.last_error, s.last_error_at, s.failures,
	   s.checkpoint_lsn,
	   -- WAL the slot of a logical source keeps from being recycled
	   pg_catalog.pg_wal_lsn_diff(
		   CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn()
				ELSE pg_catalog.pg_current_wal_lsn() END, r.restart_lsn)::bigint AS retained_wal_bytes,
	   p.owner
FROM sessionize.pipelines p
JOIN sessionize.pipeline_state s ON s.pipeline OPERATOR(pg_catalog.=) p.name
LEFT JOIN pg_catalog.pg_replication_slots r
	   ON p.source_kind OPERATOR(pg_catalog.=) 'logical'
	  AND r.slot_name OPERATOR(pg_catalog.=) pg_catalog.format('sessionize_%s_%s',
			(SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()),
			p.name)
WHERE pg_catalog.pg_has_role(p.owner, 'USAGE');
COMMENT ON VIEW sessionize.pipeline_status IS 'one row per pipeline the current role may use: state, worker, counts, backlog, watermark, lag, last error';

-- A role sees the dead letters of the pipelines whose owner's rights it has.
CREATE VIEW sessionize.pipeline_dead_letters WITH (security_barrier) AS
SELECT d.id, d.pipeline, d.event, d.error, d.failed_at
FROM sessionize.dead_letter d
JOIN sessionize.pipelines p ON p.name OPERATOR(pg_catalog.=) d.pipeline
WHERE pg_catalog.pg_has_role(p.owner, 'USAGE');
COMMENT ON VIEW sessionize.pipeline_dead_letters IS 'the dead letters of the pipelines the current role may use';
