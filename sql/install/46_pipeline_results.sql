-- What a BI tool reads of a pipeline: its KPI rollups, <name>_kpi_hourly
-- and <name>_kpi_daily, and the readers a pipeline's owner lets read its
-- results.
--
-- A pipeline's rollups are five tables, each with a row per grain ('hour'
-- or 'day') and bucket (the UTC start of the hour or day a session started
-- in): <name>_kpi_buckets (sessions, users, events, bounced, durations),
-- <name>_kpi_users (sessions per key: users is exact), <name>_kpi_durations
-- (sessions per duration bin: percentiles within 2%), <name>_kpi_types
-- (events per event type) and <name>_kpi_measures (per measure summed: the
-- total and the sessions where it is not NULL).  Each batch moves them in
-- its transaction (src/rollups.c): what it replaces is subtracted, what it
-- writes is added, and a row that falls to zero sessions is deleted.  A
-- pipeline keeps rollups while these tables exist (set_rollups()).

-- The bin of a duration in microseconds: -1 for none; otherwise i with
-- gamma^(i-1) < duration <= gamma^i, gamma = 1.02 / 0.98, so that the
-- value a bin reports, 2 gamma^i / (gamma + 1), is within 2% of every
-- duration in it.  The batches bin with the same C function.
CREATE FUNCTION sessionize.sessionize_duration_bin(duration bigint)
RETURNS integer
AS 'MODULE_PATHNAME', 'duration_bin'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION sessionize.sessionize_duration_bin(bigint) IS
	'the bin of a session duration in microseconds in the KPI rollups';

-- The measures a pipeline's rollups sum: counts and sums ('sum'), and
-- bool_or/bool_and, counted where true ('bool').
CREATE FUNCTION sessionize.sessionize_rollup_measures(pipeline text)
RETURNS TABLE (measure name, measure_position integer, kind text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT m.name, m.position, CASE WHEN m.aggregate IN ('bool_or', 'bool_and') THEN 'bool' ELSE 'sum' END
	FROM sessionize.pipeline_measures m
	WHERE m.pipeline = sessionize_rollup_measures.pipeline
	  AND m.aggregate IN ('count', 'sum', 'bool_or', 'bool_and')
$$;

-- The names of a pipeline's result views that exist: what its readers read.
CREATE FUNCTION sessionize.sessionize_result_views(pipeline text)
RETURNS text[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT coalesce(array_agg(v.name ORDER BY v.position), '{}')
	FROM unnest(ARRAY[pipeline || '_sessions', pipeline || '_sessions_live', pipeline || '_sessions_final',
					  pipeline || '_kpi_hourly', pipeline || '_kpi_daily']) WITH ORDINALITY AS v(name, position)
	WHERE to_regclass(format('sessionize.%I', v.name)) IS NOT NULL
$$;

-- The views over a pipeline's rollups, readable by its owner, who may let
-- others read them.  Percentiles: the first bin whose running count reaches
-- the rank that percentile_disc() takes.
CREATE FUNCTION sessionize.sessionize_make_kpi_views(name text, owner regrole)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	typed boolean;
	measure_columns text;
	view_name text;
	grain text;
	measure record;
BEGIN
	SELECT p.type_column IS NOT NULL INTO typed FROM sessionize.pipelines p WHERE p.name = sessionize_make_kpi_views.name;
	SELECT coalesce(string_agg(
			   CASE WHEN m.kind = 'sum' THEN
						format(', (SELECT x.total FROM sessionize.%1$I x WHERE x.grain OPERATOR(pg_catalog.=) b.grain'
							   ' AND x.bucket OPERATOR(pg_catalog.=) b.bucket AND x.measure OPERATOR(pg_catalog.=) %2$L) AS %3$I',
							   name || '_kpi_measures', m.measure, m.measure || '_sum')
					ELSE
						format(', coalesce((SELECT x.total FROM sessionize.%1$I x WHERE x.grain OPERATOR(pg_catalog.=) b.grain'
							   ' AND x.bucket OPERATOR(pg_catalog.=) b.bucket AND x.measure OPERATOR(pg_catalog.=) %2$L), 0)::bigint AS %3$I,'
							   ' (SELECT (x.total::double precision OPERATOR(pg_catalog./) x.sessions)'
							   ' FROM sessionize.%1$I x WHERE x.grain OPERATOR(pg_catalog.=) b.grain'
							   ' AND x.bucket OPERATOR(pg_catalog.=) b.bucket AND x.measure OPERATOR(pg_catalog.=) %2$L) AS %4$I',
							   name || '_kpi_measures', m.measure, m.measure || '_sessions', m.measure || '_rate')
			   END, '' ORDER BY m.measure_position), '')
	INTO measure_columns
	FROM sessionize.sessionize_rollup_measures(name) m;
	FOREACH grain IN ARRAY ARRAY['hour', 'day'] LOOP
		view_name := name || CASE grain WHEN 'hour' THEN '_kpi_hourly' ELSE '_kpi_daily' END;
		EXECUTE format($view$
			CREATE VIEW sessionize.%1$I AS
			SELECT b.bucket, b.sessions, b.users, b.events, b.bounced,
				   b.bounced::double precision OPERATOR(pg_catalog./) b.sessions AS bounce_rate,
				   b.duration::double precision OPERATOR(pg_catalog./) b.sessions OPERATOR(pg_catalog./) 1e6 AS avg_duration,
				   p.p50_duration, p.p90_duration%5$s%6$s
			FROM sessionize.%2$I b
			CROSS JOIN LATERAL (
				SELECT pg_catalog.min(d.value) FILTER (WHERE d.running OPERATOR(pg_catalog.>=) (0.5 OPERATOR(pg_catalog.*) b.sessions)) AS p50_duration,
					   pg_catalog.min(d.value) FILTER (WHERE d.running OPERATOR(pg_catalog.>=) (0.9 OPERATOR(pg_catalog.*) b.sessions)) AS p90_duration
				FROM (SELECT CASE WHEN d.bin OPERATOR(pg_catalog.<) 0 THEN 0
								  ELSE 2 OPERATOR(pg_catalog.*) pg_catalog.power(1.02::double precision OPERATOR(pg_catalog./) 0.98, d.bin)
									   OPERATOR(pg_catalog./) (1.02::double precision OPERATOR(pg_catalog./) 0.98 OPERATOR(pg_catalog.+) 1)
									   OPERATOR(pg_catalog./) 1e6 END AS value,
							 pg_catalog.sum(d.sessions) OVER (ORDER BY d.bin) AS running
					  FROM sessionize.%3$I d
					  WHERE d.grain OPERATOR(pg_catalog.=) b.grain AND d.bucket OPERATOR(pg_catalog.=) b.bucket) d) p
			WHERE b.grain OPERATOR(pg_catalog.=) %4$L$view$,
			view_name, name || '_kpi_buckets', name || '_kpi_durations', grain,
			CASE WHEN typed THEN
				format(', (SELECT pg_catalog.jsonb_object_agg(t.type, t.events) FROM sessionize.%I t'
					   ' WHERE t.grain OPERATOR(pg_catalog.=) b.grain AND t.bucket OPERATOR(pg_catalog.=) b.bucket) AS type_counts',
					   name || '_kpi_types')
			ELSE '' END,
			measure_columns);
		EXECUTE format('COMMENT ON VIEW sessionize.%I IS %L', view_name,
					   format('KPIs of the sessions of pipeline %s per %s they started in (UTC), kept by its batches;'
							  ' equal to the same aggregates over %s', name, grain, name || '_sessions'));
		EXECUTE format('COMMENT ON COLUMN sessionize.%I.bucket IS %L', view_name,
					   format('start of the %s, in UTC, that the sessions started in', grain));
		EXECUTE format('COMMENT ON COLUMN sessionize.%I.sessions IS %L', view_name, 'sessions that started in the bucket');
		EXECUTE format('COMMENT ON COLUMN sessionize.%I.users IS %L', view_name, 'distinct keys with a session that started in the bucket (exact)');
		EXECUTE format('COMMENT ON COLUMN sessionize.%I.events IS %L', view_name, 'events of those sessions, each distinct event once');
		EXECUTE format('COMMENT ON COLUMN sessionize.%I.bounced IS %L', view_name, 'sessions of exactly one event (bounces)');
		EXECUTE format('COMMENT ON COLUMN sessionize.%I.bounce_rate IS %L', view_name, 'bounced / sessions, from 0 to 1');
		EXECUTE format('COMMENT ON COLUMN sessionize.%I.avg_duration IS %L', view_name,
					   'mean duration of the sessions in seconds; a session lasts from its first to its last event (0 for a bounce)');
		EXECUTE format('COMMENT ON COLUMN sessionize.%I.p50_duration IS %L', view_name,
					   'median session duration in seconds: percentile_disc(0.5) within 2% (exact when 0)');
		EXECUTE format('COMMENT ON COLUMN sessionize.%I.p90_duration IS %L', view_name,
					   '90th percentile of session duration in seconds: percentile_disc(0.9) within 2% (exact when 0)');
		IF typed THEN
			EXECUTE format('COMMENT ON COLUMN sessionize.%I.type_counts IS %L', view_name,
						   'events of the sessions per event type, as {"type": count}');
		END IF;
		FOR measure IN SELECT * FROM sessionize.sessionize_rollup_measures(name) m ORDER BY m.measure_position LOOP
			IF measure.kind = 'sum' THEN
				EXECUTE format('COMMENT ON COLUMN sessionize.%I.%I IS %L', view_name, measure.measure || '_sum',
							   format('sum of measure %s over the sessions (NULL when it is NULL for all)', measure.measure));
			ELSE
				EXECUTE format('COMMENT ON COLUMN sessionize.%I.%I IS %L', view_name, measure.measure || '_sessions',
							   format('sessions where measure %s is true', measure.measure));
				EXECUTE format('COMMENT ON COLUMN sessionize.%I.%I IS %L', view_name, measure.measure || '_rate',
							   format('share of the sessions where measure %s is not NULL for which it is true, from 0 to 1', measure.measure));
			END IF;
		END LOOP;
		EXECUTE format('GRANT SELECT ON sessionize.%I TO %s WITH GRANT OPTION', view_name, owner);
	END LOOP;
END $$;

-- The comments on the columns of a pipeline's sessions views, which BI
-- tools show beside them.
CREATE FUNCTION sessionize.sessionize_comment_session_views(name text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	view_name text;
	comment record;
BEGIN
	FOREACH view_name IN ARRAY ARRAY[name || '_sessions', name || '_sessions_live', name || '_sessions_final'] LOOP
		FOR comment IN
			SELECT c.column_name, c.comment
			FROM (VALUES ('key', 'the key the events are grouped by (the pipeline''s key column)'),
						 ('session_start', 'time of the session''s first event (timestamptz: shown in the reader''s time zone)'),
						 ('last_event_at', 'time of its last event; its duration is last_event_at - session_start (0 for a bounce, a session of one event)'),
						 ('expires_at', 'when it ends unless another event comes: the greatest time of its events plus the gap'),
						 ('events', 'its distinct events (re-deliveries are not counted)'),
						 ('type_counts', 'its events per event type, as {"type": count}; NULL without a type column'),
						 ('revision', '1 when a batch opened it, one more each time a batch changed it'),
						 ('updated_at', 'when a batch last wrote it'),
						 ('status', 'open while it expires at or after the greatest event time merged, idle after that, final once it expires before the watermark'))
				 AS c(column_name, comment)
			UNION ALL
			SELECT m.name, format('measure %s: %s(%s)%s over the session''s events; NULL for the sessions stored before it was added',
								  m.name, m.aggregate, coalesce(m.argument, '*'),
								  CASE WHEN m.filter IS NOT NULL THEN format(' FILTER (WHERE %s)', m.filter) ELSE '' END)
			FROM sessionize.pipeline_measures m WHERE m.pipeline = sessionize_comment_session_views.name
		LOOP
			EXECUTE format('COMMENT ON COLUMN sessionize.%I.%I IS %L', view_name, comment.column_name, comment.comment);
		END LOOP;
	END LOOP;
END $$;

-- Makes a pipeline's rollup tables, fills them from its stored sessions
-- with the aggregates the batches keep, and makes its KPI views.
CREATE FUNCTION sessionize.sessionize_add_rollups(pipeline sessionize.pipelines)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
	name text := pipeline.name;
	stored text := format('sessionize.%I', pipeline.name || '_stored_sessions');
	-- each stored session once per grain, with its bucket and duration
	sessions text;
	measure_values text;
BEGIN
	IF to_regclass(format('sessionize.%I', name || '_kpi_buckets')) IS NOT NULL THEN
		RETURN;
	END IF;
	EXECUTE format('CREATE TABLE sessionize.%I (grain text NOT NULL, bucket timestamptz NOT NULL,'
				   ' sessions bigint NOT NULL CHECK (sessions > 0), users bigint NOT NULL, events bigint NOT NULL,'
				   ' bounced bigint NOT NULL, duration bigint NOT NULL)',
				   name || '_kpi_buckets');
	EXECUTE format('CREATE TABLE sessionize.%I (grain text NOT NULL, bucket timestamptz NOT NULL, key %s NOT NULL,'
				   ' sessions bigint NOT NULL CHECK (sessions > 0))',
				   name || '_kpi_users', sessionize.sessionize_key_type(pipeline));
	EXECUTE format('CREATE TABLE sessionize.%I (grain text NOT NULL, bucket timestamptz NOT NULL, bin integer NOT NULL,'
				   ' sessions bigint NOT NULL CHECK (sessions > 0))',
				   name || '_kpi_durations');
	EXECUTE format('CREATE TABLE sessionize.%I (grain text NOT NULL, bucket timestamptz NOT NULL, type text NOT NULL,'
				   ' events bigint NOT NULL CHECK (events > 0))',
				   name || '_kpi_types');
	EXECUTE format('CREATE TABLE sessionize.%I (grain text NOT NULL, bucket timestamptz NOT NULL, measure text NOT NULL,'
				   ' sessions bigint NOT NULL CHECK (sessions > 0), total numeric NOT NULL)',
				   name || '_kpi_measures');
	EXECUTE format('COMMENT ON TABLE sessionize.%I IS %L', name || '_kpi_buckets',
				   'KPI rollups of pipeline ' || name || ' per hour and day, as its batches keep them; read them through the views');
	EXECUTE format('COMMENT ON TABLE sessionize.%I IS %L', name || '_kpi_users',
				   'sessions per key, hour and day of pipeline ' || name || ': its rollups'' distinct users');
	EXECUTE format('COMMENT ON TABLE sessionize.%I IS %L', name || '_kpi_durations',
				   'sessions per duration bin, hour and day of pipeline ' || name || ': its rollups'' percentiles');
	EXECUTE format('COMMENT ON TABLE sessionize.%I IS %L', name || '_kpi_types',
				   'events per type, hour and day of pipeline ' || name || ': its rollups'' type counts');
	EXECUTE format('COMMENT ON TABLE sessionize.%I IS %L', name || '_kpi_measures',
				   'measures summed per hour and day of pipeline ' || name || ': its rollups'' measure columns');

	sessions := format('(SELECT r.grain, pg_catalog.date_trunc(r.grain, s.session_start, ''UTC'') AS bucket, s.*,'
					   ' (EXTRACT(epoch FROM s.last_event_at - s.session_start) * 1000000)::bigint AS duration'
					   ' FROM %s s CROSS JOIN (VALUES (''hour''), (''day'')) r(grain)) s', stored);
	EXECUTE format('INSERT INTO sessionize.%I SELECT s.grain, s.bucket, s.key, count(*) FROM %s GROUP BY 1, 2, 3',
				   name || '_kpi_users', sessions);
	EXECUTE format('INSERT INTO sessionize.%I SELECT s.grain, s.bucket, count(*), u.users, sum(s.events),'
				   ' count(*) FILTER (WHERE s.events = 1), sum(s.duration)'
				   ' FROM %s JOIN (SELECT u.grain, u.bucket, count(*) AS users FROM sessionize.%I u GROUP BY 1, 2) u'
				   ' ON u.grain = s.grain AND u.bucket = s.bucket GROUP BY 1, 2, u.users',
				   name || '_kpi_buckets', sessions, name || '_kpi_users');
	EXECUTE format('INSERT INTO sessionize.%I SELECT s.grain, s.bucket, sessionize.sessionize_duration_bin(s.duration), count(*)'
				   ' FROM %s GROUP BY 1, 2, 3', name || '_kpi_durations', sessions);
	EXECUTE format('INSERT INTO sessionize.%I SELECT s.grain, s.bucket, t.type, sum(t.events::bigint)'
				   ' FROM %s, jsonb_each_text(s.type_counts) t(type, events) GROUP BY 1, 2, 3 HAVING sum(t.events::bigint) > 0',
				   name || '_kpi_types', sessions);
	SELECT string_agg(format('(%L, %s)', m.measure,
							 CASE WHEN m.kind = 'sum' THEN format('s.%I::numeric', m.measure)
								  ELSE format('CASE WHEN s.%I THEN 1 WHEN NOT s.%1$I THEN 0 END::numeric', m.measure) END), ', ')
	INTO measure_values
	FROM sessionize.sessionize_rollup_measures(name) m;
	IF measure_values IS NOT NULL THEN
		EXECUTE format('INSERT INTO sessionize.%I SELECT s.grain, s.bucket, m.measure, count(*), sum(m.value)'
					   ' FROM %s CROSS JOIN LATERAL (VALUES %s) m(measure, value) WHERE m.value IS NOT NULL GROUP BY 1, 2, 3',
					   name || '_kpi_measures', sessions, measure_values);
	END IF;
	-- the keys the batches find rows by, built once the rows are in
	EXECUTE format('ALTER TABLE sessionize.%I ADD PRIMARY KEY (grain, bucket)', name || '_kpi_buckets');
	EXECUTE format('ALTER TABLE sessionize.%I ADD PRIMARY KEY (grain, bucket, key)', name || '_kpi_users');
	EXECUTE format('ALTER TABLE sessionize.%I ADD PRIMARY KEY (grain, bucket, bin)', name || '_kpi_durations');
	EXECUTE format('ALTER TABLE sessionize.%I ADD PRIMARY KEY (grain, bucket, type)', name || '_kpi_types');
	EXECUTE format('ALTER TABLE sessionize.%I ADD PRIMARY KEY (grain, bucket, measure)', name || '_kpi_measures');
	PERFORM sessionize.sessionize_make_kpi_views(name, pipeline.owner);
END $$;

-- A pipeline's rollups, views and tables, gone.
CREATE FUNCTION sessionize.sessionize_drop_rollups(name text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF to_regclass(format('sessionize.%I', name || '_kpi_buckets')) IS NOT NULL THEN
		EXECUTE format('DROP VIEW IF EXISTS sessionize.%I, sessionize.%I', name || '_kpi_hourly', name || '_kpi_daily');
		EXECUTE format('DROP TABLE sessionize.%I, sessionize.%I, sessionize.%I, sessionize.%I, sessionize.%I',
					   name || '_kpi_buckets', name || '_kpi_users', name || '_kpi_durations', name || '_kpi_types',
					   name || '_kpi_measures');
	END IF;
END $$;

-- The rollups of measures alter_pipeline() drops or redefines: their sums
-- would no longer be of the sessions' values.
CREATE FUNCTION sessionize.sessionize_forget_rollup_measures(name text, dropped text[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF to_regclass(format('sessionize.%I', name || '_kpi_measures')) IS NOT NULL THEN
		EXECUTE format('DELETE FROM sessionize.%I WHERE measure = ANY ($1)', name || '_kpi_measures') USING dropped;
	END IF;
END $$;

-- A pipeline's rollups go with its row, whichever function removes it.
CREATE FUNCTION sessionize.sessionize_pipeline_dropped()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM sessionize.sessionize_drop_rollups(OLD.name);
	RETURN OLD;
END $$;
CREATE TRIGGER drop_rollups AFTER DELETE ON sessionize.pipelines
	FOR EACH ROW EXECUTE FUNCTION sessionize.sessionize_pipeline_dropped();

CREATE FUNCTION sessionize.set_rollups(pipeline text, enabled boolean)
RETURNS void
AS 'MODULE_PATHNAME', 'call_as_extension'
LANGUAGE C;
COMMENT ON FUNCTION sessionize.set_rollups(text, boolean) IS
	'makes the KPI rollups of a pipeline from its sessions and keeps them (true), or drops them (false)';

CREATE FUNCTION sessionize.sessionize_set_rollups(caller regrole, pipeline text, enabled boolean)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	found sessionize.pipelines;
BEGIN
	IF enabled IS NULL THEN
		RAISE EXCEPTION 'enabled must not be NULL' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	-- between batches: a batch moves the rollups it sees
	found := sessionize.sessionize_read_pipeline(caller, pipeline, true);
	IF enabled THEN
		PERFORM sessionize.sessionize_add_rollups(found);
	ELSE
		PERFORM sessionize.sessionize_drop_rollups(found.name);
	END IF;
END $$;

-- Readers: a role that may read one pipeline's result views, and nothing
-- else of sessionize.  The views read the tables as their owner; the
-- reader needs no other right.
CREATE FUNCTION sessionize.grant_reader(pipeline text, reader regrole)
RETURNS void
AS 'MODULE_PATHNAME', 'call_as_extension'
LANGUAGE C;
COMMENT ON FUNCTION sessionize.grant_reader(text, regrole) IS
	'lets a role read the result views of a pipeline: its sessions and KPI views';

CREATE FUNCTION sessionize.revoke_reader(pipeline text, reader regrole)
RETURNS void
AS 'MODULE_PATHNAME', 'call_as_extension'
LANGUAGE C;
COMMENT ON FUNCTION sessionize.revoke_reader(text, regrole) IS
	'takes back what grant_reader() gave a role on the result views of a pipeline';

CREATE FUNCTION sessionize.sessionize_grant_reader(caller regrole, pipeline text, reader regrole)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM sessionize.sessionize_set_reader(caller, pipeline, reader, true);
END $$;

CREATE FUNCTION sessionize.sessionize_revoke_reader(caller regrole, pipeline text, reader regrole)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM sessionize.sessionize_set_reader(caller, pipeline, reader, false);
END $$;

-- Every pipeline keeps rollups from the start, and comments on its views'
-- columns; in an upgrade, those made before get them here, the rollups
-- filled from their sessions, and like those of pipelines made later they
-- are no members of the extension.
DO $$
DECLARE
	pipeline sessionize.pipelines;
	made text;
BEGIN
	FOR pipeline IN SELECT * FROM sessionize.pipelines p ORDER BY p.name LOOP
		PERFORM sessionize.sessionize_comment_session_views(pipeline.name);
		PERFORM sessionize.sessionize_add_rollups(pipeline);
		FOREACH made IN ARRAY ARRAY['_kpi_hourly', '_kpi_daily'] LOOP
			EXECUTE format('ALTER EXTENSION sessionize DROP VIEW sessionize.%I', pipeline.name || made);
		END LOOP;
		FOREACH made IN ARRAY ARRAY['_kpi_buckets', '_kpi_users', '_kpi_durations', '_kpi_types', '_kpi_measures'] LOOP
			EXECUTE format('ALTER EXTENSION sessionize DROP TABLE sessionize.%I', pipeline.name || made);
		END LOOP;
	END LOOP;
END $$;
