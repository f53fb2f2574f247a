-- What a pipeline's tables and views are made of, and alter_pipeline(),
-- which changes them: the stored sessions, late events and change log of
-- a pipeline, its measures' columns, the views over its sessions, and the
-- grants on them.  create_pipeline() (41_pipeline_functions.sql) checks
-- what it is given and calls sessionize_make_pipeline().

CREATE FUNCTION sessionize.sessionize_run_as(role regrole, statement text)
RETURNS void
AS 'MODULE_PATHNAME', 'run_as'
LANGUAGE C;
COMMENT ON FUNCTION sessionize.sessionize_run_as(regrole, text) IS
	'runs a statement of sessionize as a role, as sessionize_rows_as() runs a query';

-- The columns a pipeline's measures take in its tables: the value, and
-- first/last's time or approx_count_distinct's sketch beside it (is_state;
-- the change log and the views show values only).
CREATE FUNCTION sessionize.sessionize_measure_columns(pipeline text)
RETURNS TABLE (measure name, measure_position integer, added_in integer, column_name text, column_type text, is_state boolean)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT m.name, m.position, m.added_in, c.column_name, c.column_type, c.is_state
	FROM sessionize.pipeline_measures m
	CROSS JOIN LATERAL (SELECT m.name::text, m.result_type::text, false
						UNION ALL
						SELECT m.name || '__at', 'timestamptz', true WHERE m.aggregate IN ('first', 'last')
						UNION ALL
						SELECT m.name || '__sketch', 'bytea', true WHERE m.aggregate = 'approx_count_distinct')
		 AS c(column_name, column_type, is_state)
	WHERE m.pipeline = sessionize_measure_columns.pipeline
$$;

-- The views of a pipeline's sessions, readable by its owner, who may let
-- others read them.
CREATE FUNCTION sessionize.sessionize_make_pipeline_views(name text, owner regrole)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	measure_columns text;
BEGIN
	SELECT coalesce(string_agg(format(', s.%I', m.name), '' ORDER BY m.position), '') INTO measure_columns
	FROM sessionize.pipeline_measures m WHERE m.pipeline = sessionize_make_pipeline_views.name;
	-- A session's status follows the pipeline's progress, not its own writes,
	-- so it is computed when read: open while it expires at or after the
	-- greatest event time, idle after that, final once it expires before the
	-- watermark.  The live and final views filter on expires_at, which the
	-- index serves.
	EXECUTE format($view$
		CREATE VIEW sessionize.%1$I AS
		SELECT s.key, s.session_start, s.last_event_at, s.expires_at, s.events, s.type_counts, s.revision, s.updated_at%4$s,
			   CASE WHEN s.expires_at < st.watermark THEN 'final'
					WHEN s.expires_at >= st.max_event_time THEN 'open' ELSE 'idle' END AS status
		FROM sessionize.%2$I s, sessionize.pipeline_state st
		WHERE st.pipeline = %3$L$view$,
		name || '_sessions', name || '_stored_sessions', name, measure_columns);
	EXECUTE format($view$
		CREATE VIEW sessionize.%1$I AS
		SELECT s.key, s.session_start, s.last_event_at, s.expires_at, s.events, s.type_counts, s.revision, s.updated_at%4$s,
			   CASE WHEN s.expires_at >= st.max_event_time THEN 'open' ELSE 'idle' END AS status
		FROM sessionize.%2$I s, sessionize.pipeline_state st
		WHERE st.pipeline = %3$L AND (st.watermark IS NULL OR s.expires_at >= st.watermark)$view$,
		name || '_sessions_live', name || '_stored_sessions', name, measure_columns);
	EXECUTE format($view$
		CREATE VIEW sessionize.%1$I AS
		SELECT s.key, s.session_start, s.last_event_at, s.expires_at, s.events, s.type_counts, s.revision, s.updated_at%4$s,
			   'final'::text AS status
		FROM sessionize.%2$I s, sessionize.pipeline_state st
		WHERE st.pipeline = %3$L AND s.expires_at < st.watermark$view$,
		name || '_sessions_final', name || '_stored_sessions', name, measure_columns);
	EXECUTE format('COMMENT ON VIEW sessionize.%I IS %L', name || '_sessions', 'sessions of pipeline ' || name || ' with their status: open, idle or final');
	EXECUTE format('COMMENT ON VIEW sessionize.%I IS %L', name || '_sessions_live', 'open and idle sessions of pipeline ' || name);
	EXECUTE format('COMMENT ON VIEW sessionize.%I IS %L', name || '_sessions_final', 'sessions of pipeline ' || name || ' that can no longer change');
	EXECUTE format('GRANT SELECT ON sessionize.%I, sessionize.%I, sessionize.%I TO %s WITH GRANT OPTION',
				   name || '_sessions', name || '_sessions_live', name || '_sessions_final', owner);
	PERFORM sessionize.sessionize_comment_session_views(name);
END $$;

-- The catalog rows, tables, views and grants of a pipeline that
-- create_pipeline() has checked.
CREATE FUNCTION sessionize.sessionize_make_pipeline(name text, source regclass, key_column name, time_column name,
													gap interval, allowed_lateness interval, dedup_window interval,
													fingerprint_exclude text[], type_column name, owner regrole,
													allow_superuser boolean, source_kind text, updates_as_events boolean,
													payload_column name, key_type text, time_zone text, measures text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	made sessionize.pipelines;
	parsed record;
	stored_columns text := '';
	change_columns text := '';
BEGIN
	INSERT INTO sessionize.pipelines (name, source, key_column, time_column, gap, allowed_lateness,
									  dedup_window, fingerprint_exclude, type_column, owner, allow_superuser,
									  source_kind, updates_as_events, payload_column, time_zone)
	VALUES (name, source, key_column, time_column, gap, allowed_lateness, dedup_window,
			coalesce(fingerprint_exclude, '{}'), type_column, owner, allow_superuser, source_kind,
			coalesce(updates_as_events, false), payload_column, time_zone)
	RETURNING * INTO made;
	INSERT INTO sessionize.pipeline_state (pipeline) VALUES (name);
	IF measures IS NOT NULL THEN
		parsed := sessionize.sessionize_parse_measures(source, payload_column, owner, measures);
		INSERT INTO sessionize.pipeline_measures (pipeline, position, name, aggregate, argument, filter,
												  argument_type, result_type)
		SELECT sessionize_make_pipeline.name, m.position, m.name, m.aggregate, m.argument, m.filter,
			   m.argument_type, m.result_type
		FROM unnest(parsed.names, parsed.aggregates, parsed.arguments, parsed.filters, parsed.argument_types,
					parsed.result_types) WITH ORDINALITY
			 AS m(name, aggregate, argument, filter, argument_type, result_type, position);
		SELECT coalesce(string_agg(format(', %I %s', c.column_name, c.column_type), '' ORDER BY c.measure_position, c.is_state), ''),
			   coalesce(string_agg(format(', %I %s', c.column_name, c.column_type), '' ORDER BY c.measure_position)
						FILTER (WHERE NOT c.is_state), '')
		INTO stored_columns, change_columns
		FROM sessionize.sessionize_measure_columns(sessionize_make_pipeline.name) c;
	END IF;
	IF source_kind = 'logical' THEN
		PERFORM sessionize.sessionize_publish_source(source);
	ELSE
		PERFORM sessionize.sessionize_index_source_time(made);
	END IF;
	EXECUTE format('CREATE TABLE sessionize.%I (key %s NOT NULL, session_start timestamptz NOT NULL,'
				   ' last_event_at timestamptz NOT NULL, expires_at timestamptz NOT NULL, events bigint NOT NULL,'
				   ' type_counts jsonb, revision integer NOT NULL, updated_at timestamptz NOT NULL%s,'
				   ' PRIMARY KEY (key, session_start))', name || '_stored_sessions', key_type, stored_columns);
	EXECUTE format('CREATE INDEX ON sessionize.%I (expires_at)', name || '_stored_sessions');
	-- a dashboard reads the sessions of a time range
	EXECUTE format('CREATE INDEX ON sessionize.%I (session_start)', name || '_stored_sessions');
	EXECUTE format('CREATE TABLE sessionize.%I (id bigserial PRIMARY KEY, event jsonb NOT NULL, reason text NOT NULL,'
				   ' received_at timestamptz NOT NULL DEFAULT now())', name || '_late');
	EXECUTE format('CREATE TABLE sessionize.%I (change_id bigserial PRIMARY KEY, key %s NOT NULL,'
				   ' session_start timestamptz NOT NULL, change text NOT NULL, revision integer NOT NULL,'
				   ' last_event_at timestamptz NOT NULL, events bigint NOT NULL%s,'
				   ' changed_at timestamptz NOT NULL DEFAULT now())', name || '_changes', key_type, change_columns);
	PERFORM sessionize.sessionize_make_pipeline_views(name, owner);
	PERFORM sessionize.sessionize_add_rollups(made);
	-- what a batch would refuse is refused now: row security, code another role wrote
	PERFORM sessionize.sessionize_check_owner(made);
	-- a pipeline no worker will run says so now, not by waiting forever
	IF NOT (SELECT w.can_run FROM sessionize.sessionize_pipeline_service(made.id, 'active', 0) w) THEN
		RAISE WARNING 'no worker will run pipeline "%" as things stand: %', name,
			(SELECT w.waiting_reason FROM sessionize.sessionize_pipeline_service(made.id, 'active', 0) w)
			USING HINT = 'run_pipeline() runs its batches by hand or from pg_cron; pipeline_status says why it waits.';
	END IF;
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

CREATE FUNCTION sessionize.alter_pipeline(
	name text,
	allowed_lateness interval DEFAULT NULL,
	dedup_window interval DEFAULT NULL,
	fingerprint_exclude text[] DEFAULT NULL,
	reset_allowed_lateness boolean DEFAULT false,
	reset_dedup_window boolean DEFAULT false,
	measures text DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'call_as_extension'
LANGUAGE C;
COMMENT ON FUNCTION sessionize.alter_pipeline(text, interval, interval, text[], boolean, boolean, text) IS
	'changes the lateness, dedup window, fingerprint exclusions or measures of a pipeline (reset_* back to unbounded)';

CREATE FUNCTION sessionize.sessionize_alter_pipeline(caller regrole, name text, allowed_lateness interval,
													 dedup_window interval, fingerprint_exclude text[],
													 reset_allowed_lateness boolean, reset_dedup_window boolean,
													 measures text)
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
	IF measures IS NOT NULL THEN
		PERFORM sessionize.sessionize_alter_measures(pipeline, measures);
	END IF;
END $$;

-- Sets a pipeline's measures to a new list.  A measure of the same name and
-- definition is kept as it is; one no longer listed is dropped with its
-- columns; one new (or redefined) is added, NULL for the sessions stored
-- before, whose earlier events are gone.  The views are made again with the
-- new columns, and the grants on them are given again by their grantors.
CREATE FUNCTION sessionize.sessionize_alter_measures(pipeline sessionize.pipelines, measures text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	stored text := pipeline.name || '_stored_sessions';
	changes text := pipeline.name || '_changes';
	-- with the KPI views, whose measure columns change too
	views text[] := sessionize.sessionize_result_views(pipeline.name);
	parsed record;
	dropped text[];
	added text[];
	version integer;
	stored_columns text;
	change_columns text;
	view_owner oid;
	saved record;
	granted_views text[];
	privileges text[];
	grantors oid[];
	grantees oid[];
	grantable boolean[];
	done boolean[];
	progress boolean;
	statement text;
BEGIN
	IF btrim(measures) = '' THEN
		SELECT NULL::text[] AS names, NULL::text[] AS aggregates, NULL::text[] AS arguments, NULL::text[] AS filters,
			   NULL::regtype[] AS argument_types, NULL::regtype[] AS result_types
		INTO parsed;
	ELSE
		parsed := sessionize.sessionize_parse_measures(pipeline.source, pipeline.payload_column, pipeline.owner,
														measures);
	END IF;
	SELECT s.measures_version INTO version FROM sessionize.pipeline_state s WHERE s.pipeline = pipeline.name;
	-- dropped: no longer listed as they are; added: listed, and not kept
	SELECT coalesce(array_agg(m.name::text ORDER BY m.position), '{}') INTO dropped
	FROM sessionize.pipeline_measures m
	WHERE m.pipeline = pipeline.name
	  AND NOT EXISTS (SELECT
					  FROM unnest(parsed.names, parsed.aggregates, parsed.arguments, parsed.filters,
								  parsed.argument_types, parsed.result_types)
						   AS n(name, aggregate, argument, filter, argument_type, result_type)
					  WHERE n.name = m.name AND n.aggregate = m.aggregate
						AND n.argument IS NOT DISTINCT FROM m.argument AND n.filter IS NOT DISTINCT FROM m.filter
						AND n.argument_type IS NOT DISTINCT FROM m.argument_type
						AND n.result_type = m.result_type);
	SELECT coalesce(array_agg(n.name ORDER BY n.position), '{}') INTO added
	FROM unnest(parsed.names) WITH ORDINALITY AS n(name, position)
	WHERE NOT EXISTS (SELECT FROM sessionize.pipeline_measures m
					  WHERE m.pipeline = pipeline.name AND m.name = n.name AND NOT m.name = ANY (dropped));
	IF dropped = '{}' AND added = '{}'
	   AND NOT EXISTS (SELECT FROM sessionize.pipeline_measures m
					   JOIN unnest(parsed.names) WITH ORDINALITY AS n(name, position) ON n.name = m.name
					   WHERE m.pipeline = pipeline.name AND m.position <> n.position) THEN
		RETURN;
	END IF;

	-- the grants on the views, to give again once they are made anew
	SELECT c.relowner INTO view_owner FROM pg_class c WHERE c.oid = format('sessionize.%I', views[1])::regclass;
	SELECT coalesce(array_agg(v.view), '{}'), coalesce(array_agg(a.privilege_type), '{}'),
		   coalesce(array_agg(a.grantor), '{}'), coalesce(array_agg(a.grantee), '{}'),
		   coalesce(array_agg(a.is_grantable), '{}')
	INTO granted_views, privileges, grantors, grantees, grantable
	FROM unnest(views) v(view)
	JOIN pg_class c ON c.oid = format('sessionize.%I', v.view)::regclass
	CROSS JOIN LATERAL aclexplode(c.relacl) a
	WHERE a.grantee <> c.relowner AND NOT (a.grantee = pipeline.owner AND a.grantor = c.relowner);
	BEGIN
		EXECUTE format('DROP VIEW %s', (SELECT string_agg(format('sessionize.%I', v.view), ', ') FROM unnest(views) v(view)));
	EXCEPTION WHEN dependent_objects_still_exist THEN
		RAISE EXCEPTION 'cannot change the measures of pipeline "%" while other objects read its views', pipeline.name
			USING ERRCODE = 'dependent_objects_still_exist',
				  DETAIL = SQLERRM,
				  HINT = 'Drop the objects that read the views, alter the pipeline, and create them again.';
	END;

	FOR saved IN
		SELECT c.measure, string_agg(format('DROP COLUMN %I', c.column_name), ', ') AS stored_columns,
			   string_agg(format('DROP COLUMN %I', c.column_name), ', ') FILTER (WHERE NOT c.is_state) AS change_columns
		FROM sessionize.sessionize_measure_columns(pipeline.name) c
		WHERE c.measure = ANY (dropped)
		GROUP BY c.measure
	LOOP
		EXECUTE format('ALTER TABLE sessionize.%I %s', stored, saved.stored_columns);
		EXECUTE format('ALTER TABLE sessionize.%I %s', changes, saved.change_columns);
	END LOOP;
	DELETE FROM sessionize.pipeline_measures m WHERE m.pipeline = pipeline.name AND m.name = ANY (dropped);
	-- positions are unique: out of the way first
	UPDATE sessionize.pipeline_measures m SET position = -n.position
	FROM unnest(parsed.names) WITH ORDINALITY AS n(name, position)
	WHERE m.pipeline = pipeline.name AND m.name = n.name;

	IF added <> '{}' THEN
		IF version = 0 THEN
			EXECUTE format('ALTER TABLE sessionize.%I ADD COLUMN measured_since integer NOT NULL DEFAULT 0', stored);
		END IF;
		version := version + 1;
		UPDATE sessionize.pipeline_state s SET measures_version = version WHERE s.pipeline = pipeline.name;
		INSERT INTO sessionize.pipeline_measures (pipeline, position, name, aggregate, argument, filter,
												  argument_type, result_type, added_in)
		SELECT pipeline.name, -n.position, n.name, n.aggregate, n.argument, n.filter, n.argument_type,
			   n.result_type, version
		FROM unnest(parsed.names, parsed.aggregates, parsed.arguments, parsed.filters, parsed.argument_types,
					parsed.result_types) WITH ORDINALITY
			 AS n(name, aggregate, argument, filter, argument_type, result_type, position)
		WHERE n.name = ANY (added);
		SELECT string_agg(format('ADD COLUMN %I %s', c.column_name, c.column_type), ', '
						  ORDER BY c.measure_position, c.is_state),
			   string_agg(format('ADD COLUMN %I %s', c.column_name, c.column_type), ', ' ORDER BY c.measure_position)
				   FILTER (WHERE NOT c.is_state)
		INTO stored_columns, change_columns
		FROM sessionize.sessionize_measure_columns(pipeline.name) c
		WHERE c.measure = ANY (added);
		EXECUTE format('ALTER TABLE sessionize.%I %s', stored, stored_columns);
		EXECUTE format('ALTER TABLE sessionize.%I %s', changes, change_columns);
	END IF;
	UPDATE sessionize.pipeline_measures m SET position = -m.position WHERE m.pipeline = pipeline.name;

	PERFORM sessionize.sessionize_make_pipeline_views(pipeline.name, pipeline.owner);
	IF cardinality(views) > 3 THEN
		PERFORM sessionize.sessionize_forget_rollup_measures(pipeline.name, dropped);
		PERFORM sessionize.sessionize_make_kpi_views(pipeline.name, pipeline.owner);
	END IF;
	-- Each grant by the role that gave it, once that role holds the grant
	-- option again: grants made on grants come after them.
	done := array_fill(false, ARRAY[cardinality(grantors)]);
	LOOP
		progress := false;
		FOR i IN 1 .. cardinality(grantors) LOOP
			CONTINUE WHEN done[i];
			CONTINUE WHEN grantors[i] <> view_owner
					  AND NOT has_table_privilege(grantors[i], format('sessionize.%I', granted_views[i]),
												  privileges[i] || ' WITH GRANT OPTION');
			statement := format('GRANT %s ON sessionize.%I TO %s%s', privileges[i], granted_views[i],
								CASE WHEN grantees[i] = 0 THEN 'PUBLIC' ELSE grantees[i]::regrole::text END,
								CASE WHEN grantable[i] THEN ' WITH GRANT OPTION' ELSE '' END);
			IF grantors[i] = view_owner THEN
				EXECUTE statement;
			ELSE
				PERFORM sessionize.sessionize_run_as(grantors[i]::regrole, statement);
			END IF;
			done[i] := true;
			progress := true;
		END LOOP;
		EXIT WHEN NOT progress;
	END LOOP;
	IF dropped <> '{}' THEN
		RAISE NOTICE 'measures of pipeline "%" dropped: %', pipeline.name, array_to_string(dropped, ', ');
	END IF;
	IF added <> '{}' THEN
		RAISE NOTICE 'measures of pipeline "%" added: %', pipeline.name, array_to_string(added, ', ')
			USING HINT = 'They are NULL for the sessions stored before.';
	END IF;
END $$;
