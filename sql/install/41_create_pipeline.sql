-- sessionize: create_pipeline()'s body, which checks what it is asked for
-- and makes a pipeline (its tables are made in 43_pipeline_tables.sql).

-- The owner of a pipeline is the owner of its source, or run_as; the caller
-- must be a member of it.  A superuser owner over a table a non-superuser
-- owns must be asked for with allow_superuser.
CREATE FUNCTION sessionize.sessionize_create_pipeline(
	caller regrole, name text, source regclass, key_column name, time_column name, gap interval,
	allowed_lateness interval, dedup_window interval, fingerprint_exclude text[], type_column name,
	max_duration interval, run_as name, source_kind text, updates_as_events boolean, payload_column name,
	allow_superuser boolean, time_zone text, measures text)
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
					  HINT = 'Create them as sessionize does: CREATE PUBLICATION sessionize_pipelines WITH (publish = ''insert''); CREATE PUBLICATION sessionize_pipeline_updates WITH (publish = ''insert, update'');';
		END IF;
		PERFORM pg_create_logical_replication_slot(sessionize.sessionize_slot_name(name), 'pgoutput');
		-- A slot is not undone by a rollback: should anything below fail, drop it.
		BEGIN
			PERFORM sessionize.sessionize_make_pipeline(name, source, key_column, time_column, gap, allowed_lateness, dedup_window, fingerprint_exclude, type_column, owner, coalesce(allow_superuser, false), source_kind, updates_as_events, payload_column, key_type,
														 time_zone, measures);
		EXCEPTION WHEN OTHERS THEN
			PERFORM pg_drop_replication_slot(sessionize.sessionize_slot_name(name));
			RAISE;
		END;
	ELSE
		PERFORM sessionize.sessionize_make_pipeline(name, source, key_column, time_column, gap, allowed_lateness, dedup_window, fingerprint_exclude, type_column, owner, coalesce(allow_superuser, false), source_kind, updates_as_events, payload_column, key_type,
														 time_zone, measures);
	END IF;
END $$;
