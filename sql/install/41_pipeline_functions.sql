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
	time_zone text DEFAULT 'UTC',
	measures text DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'call_as_extension'
LANGUAGE C;
COMMENT ON FUNCTION sessionize.create_pipeline(text, regclass, name, name, interval, interval, interval, text[], name, interval, name, text, boolean, name, boolean, text, text) IS
	'creates a pipeline that sessionizes the events landing in a staging table, or inserted into a table it follows through a logical replication slot';

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

-- Writes one "closed" change for each session that a watermark moving from
-- old_watermark to new_watermark makes final: it can no longer change.
CREATE FUNCTION sessionize.sessionize_close_sessions(pipeline sessionize.pipelines, old_watermark timestamptz,
													 new_watermark timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	measure_columns text;
BEGIN
	IF new_watermark > old_watermark OR (old_watermark IS NULL AND new_watermark IS NOT NULL) THEN
		SELECT coalesce(string_agg(format(', %I', m.name), '' ORDER BY m.position), '') INTO measure_columns
		FROM sessionize.pipeline_measures m WHERE m.pipeline = (sessionize_close_sessions.pipeline).name;
		EXECUTE format($q$
			INSERT INTO sessionize.%1$I (key, session_start, change, revision, last_event_at, events%3$s)
			SELECT key, session_start, 'closed', revision, last_event_at, events%3$s FROM sessionize.%2$I
			WHERE expires_at < $2 AND ($1 IS NULL OR expires_at >= $1)
			ORDER BY key, session_start$q$,
			pipeline.name || '_changes', pipeline.name || '_stored_sessions', measure_columns)
		USING old_watermark, new_watermark;
	END IF;
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

-- The type of the key in a pipeline's tables.
CREATE FUNCTION sessionize.sessionize_key_type(pipeline sessionize.pipelines)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
	WHERE a.attrelid = to_regclass(format('sessionize.%I', (pipeline).name || '_stored_sessions')) AND a.attname = 'key';
END;

CREATE FUNCTION sessionize.run_pipeline(name text, max_events integer DEFAULT 10000,
										OUT consumed bigint, OUT merged bigint, OUT duplicates bigint,
										OUT late bigint, OUT dead_lettered bigint)
AS 'MODULE_PATHNAME', 'call_as_extension'
LANGUAGE C;
COMMENT ON FUNCTION sessionize.run_pipeline(text, integer) IS
	'consumes one batch of a pipeline''s staging table in the calling transaction, with the rights of the pipeline''s owner; what the worker and pg_cron call';

-- One batch, in C (src/pipeline.c), with the settings that make the text of
-- times and values the same whatever the caller's.
CREATE FUNCTION sessionize.sessionize_run_pipeline(caller regrole, name text, max_events integer,
												   OUT consumed bigint, OUT merged bigint, OUT duplicates bigint,
												   OUT late bigint, OUT dead_lettered bigint)
AS 'MODULE_PATHNAME', 'run_pipeline_batch'
LANGUAGE C SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
SET DateStyle = 'ISO, MDY'
SET IntervalStyle = 'postgres'
SET extra_float_digits = 1
SET bytea_output = 'hex'
SET timezone_abbreviations = 'Default';
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
AS 'MODULE_PATHNAME', 'replay_late_events'
LANGUAGE C SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
SET DateStyle = 'ISO, MDY'
SET IntervalStyle = 'postgres'
SET extra_float_digits = 1
SET bytea_output = 'hex'
SET timezone_abbreviations = 'Default';
COMMENT ON FUNCTION sessionize.sessionize_replay_late(regrole, text, integer) IS
	'body of replay_late(), called with the calling role';

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

