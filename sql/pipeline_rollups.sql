-- KPI rollups: <name>_kpi_hourly and <name>_kpi_daily equal, after every
-- batch, the same aggregates over <name>_sessions, through re-deliveries,
-- late events that bridge two sessions into one, and a change of measures;
-- readers read one pipeline's result views and nothing else.
SET TimeZone = 'America/New_York';
SELECT setseed(0.15);
CREATE ROLE rollups_tenant;
CREATE ROLE rollups_other;
CREATE ROLE rollups_reader;

-- A small example whose numbers can be checked by hand: buckets are UTC
-- hours and days whatever the session's time zone; a bounce is a session
-- of one event; durations are in seconds.
CREATE TABLE tiny_in (user_id int, ts timestamptz, kind text);
SELECT sessionize.create_pipeline('tiny', 'tiny_in', 'user_id', 'ts', '1 hour', type_column => 'kind');
INSERT INTO tiny_in VALUES
	(1, '2024-03-10 09:05+00', 'view'), (1, '2024-03-10 09:15+00', 'buy'),	-- 600 s
	(2, '2024-03-10 09:40+00', 'view'),										-- a bounce
	(1, '2024-03-10 10:30+00', 'view'), (1, '2024-03-10 11:00+00', 'view'),	-- 1,800 s
	(3, '2024-03-11 23:59+00', 'view');										-- a bounce, next day
SELECT consumed, merged FROM sessionize.run_pipeline('tiny');
-- percentiles within 2%: 600 s reads 606.1, 1,800 s reads 1,784.9
SELECT bucket AT TIME ZONE 'UTC' AS utc_hour, sessions, users, events, bounced, bounce_rate, avg_duration,
	   round(p50_duration::numeric, 1) AS p50_duration, round(p90_duration::numeric, 1) AS p90_duration, type_counts
FROM sessionize.tiny_kpi_hourly ORDER BY bucket;
SELECT bucket AT TIME ZONE 'UTC' AS utc_day, sessions, users, events, bounced, round(bounce_rate::numeric, 3) AS bounce_rate,
	   avg_duration, round(p50_duration::numeric, 1) AS p50_duration, round(p90_duration::numeric, 1) AS p90_duration,
	   type_counts
FROM sessionize.tiny_kpi_daily ORDER BY bucket;
-- a late event at 09:50 bridges user 1's sessions into one of 6,900 s and
-- 5 events: the 10:00 hour loses its session, the 09:00 hour's grows
INSERT INTO tiny_in VALUES (1, '2024-03-10 09:50+00', 'cart');
SELECT consumed, merged FROM sessionize.run_pipeline('tiny');
SELECT bucket AT TIME ZONE 'UTC' AS utc_hour, sessions, users, events, bounced, avg_duration, type_counts
FROM sessionize.tiny_kpi_hourly ORDER BY bucket;

-- Every row of a pipeline's KPI view against the aggregates over its
-- sessions view: exact but for the percentiles, within 2%.
CREATE FUNCTION kpi_mismatches(pipeline text, grain text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
	view_name text := pipeline || CASE grain WHEN 'hour' THEN '_kpi_hourly' ELSE '_kpi_daily' END;
	measure_columns text;
	mismatches bigint;
BEGIN
	SELECT coalesce(string_agg(
			   CASE WHEN m.aggregate IN ('count', 'sum') THEN format(', %L, sum(s.%I)', m.name || '_sum', m.name)
					ELSE format(', %L, count(*) FILTER (WHERE s.%I), %L, (count(*) FILTER (WHERE s.%2$I))::float8 / nullif(count(s.%2$I), 0)',
								m.name || '_sessions', m.name, m.name || '_rate') END, '' ORDER BY m.position), '')
	INTO measure_columns
	FROM sessionize.pipeline_measures m
	WHERE m.pipeline = kpi_mismatches.pipeline AND m.aggregate IN ('count', 'sum', 'bool_or', 'bool_and');
	EXECUTE format($q$
		WITH s AS (SELECT s.*, date_trunc(%1$L, s.session_start, 'UTC') AS bucket,
						  (extract(epoch FROM s.last_event_at - s.session_start) * 1000000)::bigint AS duration
				   FROM sessionize.%2$I s),
		expected AS (
			SELECT s.bucket, count(*) AS sessions, count(DISTINCT s.key) AS users, sum(s.events) AS events,
				   count(*) FILTER (WHERE s.events = 1) AS bounced,
				   (count(*) FILTER (WHERE s.events = 1))::float8 / count(*) AS bounce_rate,
				   sum(s.duration)::float8 / count(*) / 1e6 AS avg_duration,
				   percentile_disc(0.5) WITHIN GROUP (ORDER BY s.duration / 1e6) AS p50,
				   percentile_disc(0.9) WITHIN GROUP (ORDER BY s.duration / 1e6) AS p90,
				   jsonb_build_object('x', 0%3$s) - 'x' AS measures
			FROM s GROUP BY s.bucket),
		types AS (
			SELECT t.bucket, jsonb_object_agg(t.type, t.events) AS type_counts
			FROM (SELECT s.bucket, c.key AS type, sum(c.value::bigint) AS events
				  FROM s, jsonb_each_text(s.type_counts) c GROUP BY 1, 2) t
			GROUP BY t.bucket),
		actual AS (SELECT v.*, to_jsonb(v) - ARRAY['bucket', 'sessions', 'users', 'events', 'bounced', 'bounce_rate',
													'avg_duration', 'p50_duration', 'p90_duration', 'type_counts'] AS measures
				   FROM sessionize.%4$I v)
		SELECT count(*)
		FROM expected e
		FULL JOIN actual a ON a.bucket = e.bucket
		LEFT JOIN types t ON t.bucket = e.bucket
		WHERE e.bucket IS NULL OR a.bucket IS NULL
		   OR (e.sessions, e.users, e.events, e.bounced, e.bounce_rate, e.avg_duration, e.measures)
			  IS DISTINCT FROM (a.sessions, a.users, a.events, a.bounced, a.bounce_rate, a.avg_duration, a.measures)
		   OR t.type_counts IS DISTINCT FROM (to_jsonb(a) -> 'type_counts')
		   OR abs(a.p50_duration - e.p50::float8) > 0.02 * e.p50::float8 + 1e-9
		   OR abs(a.p90_duration - e.p90::float8) > 0.02 * e.p90::float8 + 1e-9$q$,
		grain, pipeline || '_sessions', measure_columns, view_name)
	INTO mismatches;
	RETURN mismatches;
END $$;
SELECT kpi_mismatches('tiny', 'hour') AS hourly, kpi_mismatches('tiny', 'day') AS daily;

-- The property: 3,000 distinct events of 40 users over three days, a fifth
-- re-delivered, in random order and random batches; a sixth held back and
-- delivered last, reopening, extending and bridging sessions.
CREATE TABLE shop_in (user_id int, ts timestamptz, kind text, price numeric, bought boolean);
ALTER TABLE shop_in OWNER TO rollups_tenant;
CREATE TABLE shop_distinct AS
SELECT n % 40 AS user_id,
	   timestamptz '2024-03-09 12:00+00' + (random() * 4320)::int * interval '1 minute' AS ts,
	   (ARRAY['view', 'cart', 'buy'])[1 + (random() * 2)::int] AS kind,
	   CASE WHEN random() < 0.4 THEN round((random() * 50)::numeric, 2) END AS price,
	   random() < 0.2 AS bought,
	   random() < 0.17 AS held_back
FROM generate_series(1, 3000) n;
SELECT sessionize.create_pipeline('shop', 'shop_in', 'user_id', 'ts', '20 minutes', dedup_window => NULL,
								  type_column => 'kind',
								  measures => 'count(*) AS views, sum(price) AS revenue, bool_or(bought) AS converted');

CREATE FUNCTION drain_shop(held_back boolean) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
	taken bigint;
	mismatches bigint := 0;
BEGIN
	INSERT INTO shop_in
	SELECT user_id, ts, kind, price, bought
	FROM (SELECT * FROM shop_distinct d WHERE d.held_back = drain_shop.held_back
		  UNION ALL
		  SELECT * FROM shop_distinct d WHERE d.held_back = drain_shop.held_back AND random() < 0.2) d
	ORDER BY random();
	LOOP
		SELECT consumed INTO taken FROM sessionize.run_pipeline('shop', 1 + (random() * 300)::int);
		EXIT WHEN taken = 0;
		mismatches := mismatches + kpi_mismatches('shop', 'hour') + kpi_mismatches('shop', 'day');
	END LOOP;
	RETURN mismatches;
END $$;
SELECT drain_shop(false) AS mismatches_in_order;
SELECT drain_shop(true) AS mismatches_after_late_events;
-- the late events did merge sessions
SELECT count(*) > 0 AS sessions_merged FROM sessionize.shop_changes WHERE change = 'merged';
SELECT count(*) AS sessions, sum(events) AS events FROM sessionize.shop_sessions;

-- The measures change: revenue dropped, converted kept, refunds added
-- (NULL for the sessions stored before); the rollups follow.
SET ROLE rollups_tenant;
SELECT sessionize.grant_reader('shop', 'rollups_reader');
SELECT sessionize.alter_pipeline('shop', measures => 'count(*) AS views, bool_or(bought) AS converted, sum(price) FILTER (WHERE kind = ''buy'') AS refunds');
RESET ROLE;
SELECT string_agg(column_name::text, ', ' ORDER BY ordinal_position) AS columns
FROM information_schema.columns WHERE table_schema = 'sessionize' AND table_name = 'shop_kpi_daily';
-- the views were made anew; the reader still reads them
SELECT has_table_privilege('rollups_reader', 'sessionize.shop_kpi_daily', 'SELECT') AS reader_reads;
-- every result view and every column of them says what it is
SELECT c.relname, count(*) FILTER (WHERE col_description(c.oid, a.attnum) IS NULL) AS uncommented_columns,
	   obj_description(c.oid, 'pg_class') IS NOT NULL AS commented
FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.oid = ANY (ARRAY['sessionize.shop_sessions', 'sessionize.shop_sessions_live', 'sessionize.shop_sessions_final',
						 'sessionize.shop_kpi_hourly', 'sessionize.shop_kpi_daily']::regclass[])
GROUP BY c.oid, c.relname ORDER BY c.relname;
SELECT a.attrelid::regclass AS view, a.attname AS column, col_description(a.attrelid, a.attnum) AS comment
FROM pg_attribute a
WHERE (a.attrelid = 'sessionize.shop_kpi_daily'::regclass AND a.attname IN ('bucket', 'bounced', 'p50_duration', 'converted_rate'))
   OR (a.attrelid = 'sessionize.shop_sessions'::regclass AND a.attname = 'refunds')
ORDER BY a.attrelid::regclass::text, a.attnum;
SELECT kpi_mismatches('shop', 'hour') AS hourly, kpi_mismatches('shop', 'day') AS daily;
UPDATE shop_distinct SET ts = ts + interval '1 day', held_back = false;
SELECT drain_shop(false) AS mismatches_after_alter;
SELECT count(*) FILTER (WHERE refunds_sum IS NOT NULL) > 0 AS refunds_summed FROM sessionize.shop_kpi_daily;

-- Rollups made in bulk from the sessions (set_rollups, and the upgrade)
-- equal those the batches kept.
CREATE TABLE kept AS SELECT * FROM sessionize.shop_kpi_hourly UNION ALL SELECT * FROM sessionize.shop_kpi_daily;
SET ROLE rollups_tenant;
SELECT sessionize.set_rollups('shop', false);
SELECT to_regclass('sessionize.shop_kpi_daily') AS daily_view, to_regclass('sessionize.shop_kpi_buckets') AS table;
-- without rollups the batches go on
INSERT INTO shop_in VALUES (99, '2024-03-13 00:00+00', 'view', 1, true);
SELECT consumed FROM sessionize.run_pipeline('shop');
SELECT sessionize.set_rollups('shop', true);
RESET ROLE;
SELECT kpi_mismatches('shop', 'hour') AS hourly, kpi_mismatches('shop', 'day') AS daily;
SELECT count(*) AS differences
FROM ((SELECT * FROM kept EXCEPT ALL (SELECT * FROM sessionize.shop_kpi_hourly UNION ALL SELECT * FROM sessionize.shop_kpi_daily))
	  UNION ALL
	  ((SELECT * FROM sessionize.shop_kpi_hourly UNION ALL SELECT * FROM sessionize.shop_kpi_daily) EXCEPT ALL SELECT * FROM kept)) d
WHERE d.bucket <> '2024-03-13 00:00+00';

-- Readers.  set_rollups() made the views anew: the reader is granted again.
SET ROLE rollups_tenant;
SELECT sessionize.grant_reader('shop', 'rollups_reader');
RESET ROLE;
CREATE TABLE other_in (user_id int, ts timestamptz);
ALTER TABLE other_in OWNER TO rollups_other;
SELECT sessionize.create_pipeline('other', 'other_in', 'user_id', 'ts', '30 minutes');
-- what the reader may read of sessionize: one pipeline's results, and the
-- views every role reads (rows of the pipelines it may use only)
SELECT c.relname FROM pg_class c
WHERE c.relnamespace = 'sessionize'::regnamespace AND c.relkind IN ('r', 'v', 'm', 'p', 'f')
  AND has_table_privilege('rollups_reader', c.oid, 'SELECT')
ORDER BY 1;
-- three events wait in the staging table
INSERT INTO shop_in VALUES (1, '2024-03-20 00:00+00', 'view', 1, false), (2, '2024-03-20 00:00+00', 'view', 1, false),
	(3, '2024-03-20 00:00+00', 'view', 1, false);
SET ROLE rollups_reader;
SELECT count(*) > 0 AS reads_kpis FROM sessionize.shop_kpi_daily;
SELECT count(*) > 0 AS reads_sessions FROM sessionize.shop_sessions_final;
SELECT count(*) FROM sessionize.other_kpi_daily;
SELECT count(*) FROM sessionize.other_sessions;
SELECT count(*) FROM sessionize.shop_kpi_buckets;
SELECT count(*) FROM sessionize.shop_stored_sessions;
SELECT count(*) FROM sessionize.shop_changes;
SELECT count(*) FROM sessionize.pipelines;
-- the status row of the pipeline it reads says how fresh the results are
SELECT name, consumed > 0 AS consumed, last_batch_at IS NOT NULL AS has_batched, watermark IS NOT NULL AS has_watermark,
	   backlog
FROM sessionize.pipeline_status;
-- how many events wait, and nothing of them; not for another pipeline
SELECT sessionize.pipeline_backlog('shop');
SELECT count(*) FROM shop_in;
SELECT sessionize.pipeline_backlog('other');
-- a reader is no owner
SELECT sessionize.grant_reader('shop', 'rollups_other');
SELECT sessionize.set_rollups('shop', false);
RESET ROLE;

-- errors: unknown pipeline, not the owner, NULL arguments
SET ROLE rollups_other;
SELECT sessionize.grant_reader('shop', 'rollups_other');
SELECT sessionize.revoke_reader('shop', 'rollups_reader');
SELECT sessionize.grant_reader('nope', 'rollups_reader');
SELECT sessionize.grant_reader(NULL, 'rollups_reader');
SELECT sessionize.grant_reader('other', NULL);
SELECT sessionize.set_rollups('other', NULL);
SELECT sessionize.set_rollups(NULL, true);
RESET ROLE;

SET ROLE rollups_tenant;
SELECT sessionize.revoke_reader('shop', 'rollups_reader');
RESET ROLE;
SELECT count(*) AS readable FROM pg_class c
WHERE c.relnamespace = 'sessionize'::regnamespace AND has_table_privilege('rollups_reader', c.oid, 'SELECT')
  AND c.relname LIKE 'shop%';

-- A dropped pipeline takes its rollups along.
SELECT sessionize.drop_pipeline('shop');
SELECT count(*) AS left_behind FROM pg_class c
WHERE c.relnamespace = 'sessionize'::regnamespace AND c.relname LIKE 'shop%';
SELECT sessionize.drop_pipeline('other');
SELECT sessionize.drop_pipeline('tiny');
DROP TABLE tiny_in, shop_in, shop_distinct, other_in, kept;
DROP FUNCTION kpi_mismatches(text, text), drain_shop(boolean);
DROP ROLE rollups_tenant, rollups_other, rollups_reader;
