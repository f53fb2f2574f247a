#!/usr/bin/env bash
# KPI rollups: what a dashboard pays to read them, and what keeping them
# costs a pipeline.
#
# Reading: a pipeline holding 10M sessions of 1M users over 120 days (a
# tenth as many users as sessions, each with a session every 12 days).  The
# sessions are written in bulk into its sessions table (no batch would make
# them in minutes), then set_rollups() builds its rollups from them in bulk,
# as an upgrade does; the benchmark checks the rollups against the sessions
# on one day and times 90 days of <name>_kpi_daily and the last 7 days of
# <name>_kpi_hourly (every column), three times each.
#
# Keeping: 200k deliveries of 20k users in time order across users (10%
# re-delivered) with an event type and two measures, drained by
# run_pipeline(name, 10000) with and without rollups (set_rollups(name,
# false)), round-robin; medians are reported.
#
#   make bench BENCH=rollups   (SESSIONS=10000000 EVENTS=200000 USERS=20000 ROUNDS=3)
set -euo pipefail
cd "$(dirname "$0")/.."
sessions=${SESSIONS:-10000000}
events=${EVENTS:-200000}
users=${USERS:-20000}
rounds=${ROUNDS:-3}

psql -X -q -v ON_ERROR_STOP=1 <<SQL
CREATE EXTENSION IF NOT EXISTS sessionize;
DROP TABLE IF EXISTS rollup_runs, rollup_events, kpis_in;
CREATE TABLE rollup_runs (variant text, round int, events bigint, seconds float8);
CREATE TABLE kpis_in (user_id int, ts timestamptz, kind text);
SELECT sessionize.create_pipeline('kpis', 'kpis_in', 'user_id', 'ts', '30 minutes', type_column => 'kind');
SELECT sessionize.set_rollups('kpis', false);
SELECT setseed(0.25);
-- sessions of 1 to 20 events (a third of them bounces) lasting up to an hour
INSERT INTO sessionize.kpis_stored_sessions (key, session_start, last_event_at, expires_at, events, type_counts,
											 revision, updated_at)
SELECT s.key, s.start, s.start + s.length, s.start + s.length + interval '30 minutes', s.events,
	   jsonb_build_object('view', s.events), 1, now()
FROM (SELECT n % ($sessions / 10) AS key,
			 -- each user every 12 days, the users spread over them
			 timestamptz '2024-01-01' + (n / ($sessions / 10)) * interval '12 days'
			 + (n % ($sessions / 10)) * (1036800 / ($sessions / 10)) * interval '1 s' AS start,
			 CASE WHEN n % 3 = 0 THEN 1 ELSE 2 + n % 19 END AS events,
			 CASE WHEN n % 3 = 0 THEN interval '0' ELSE (n % 3600) * interval '1 s' END AS length
	  FROM generate_series(0, $sessions - 1) n) s;
VACUUM ANALYZE sessionize.kpis_stored_sessions;
SQL
started=$(date +%s%N)
psql -X -q -v ON_ERROR_STOP=1 -c "SELECT sessionize.set_rollups('kpis', true)" >/dev/null
built_ms=$((($(date +%s%N) - started) / 1000000))
psql -X -q -v ON_ERROR_STOP=1 <<'SQL'
VACUUM ANALYZE sessionize.kpis_kpi_buckets, sessionize.kpis_kpi_users, sessionize.kpis_kpi_durations,
	sessionize.kpis_kpi_types, sessionize.kpis_kpi_measures;
-- the rollups equal the sessions on a day (the regression tests hold every row)
DO $$
DECLARE
	day timestamptz := (SELECT min(bucket) + interval '1 day' FROM sessionize.kpis_kpi_daily);
BEGIN
	IF (SELECT (sessions, users, events, bounced) FROM sessionize.kpis_kpi_daily WHERE bucket = day)
	   IS DISTINCT FROM
	   (SELECT (count(*), count(DISTINCT key), sum(events)::bigint, count(*) FILTER (WHERE events = 1))
		FROM sessionize.kpis_sessions
		WHERE session_start >= day AND session_start < day + interval '1 day') THEN
		RAISE EXCEPTION 'the rollups differ from the sessions';
	END IF;
END $$;
DO $$
DECLARE
	last_bucket timestamptz := (SELECT max(bucket) FROM sessionize.kpis_kpi_daily);
	started timestamptz;
	read_rows bigint;
BEGIN
	FOR round IN 1..3 LOOP
		started := clock_timestamp();
		SELECT count(*) INTO read_rows FROM (SELECT * FROM sessionize.kpis_kpi_daily
										WHERE bucket > last_bucket - interval '90 days') d;
		INSERT INTO rollup_runs VALUES ('read: 90 days of kpi_daily', round, read_rows,
										extract(epoch FROM clock_timestamp() - started));
		started := clock_timestamp();
		SELECT count(*) INTO read_rows FROM (SELECT * FROM sessionize.kpis_kpi_hourly
										WHERE bucket > last_bucket + interval '1 day' - interval '7 days') h;
		INSERT INTO rollup_runs VALUES ('read: 7 days of kpi_hourly', round, read_rows,
										extract(epoch FROM clock_timestamp() - started));
	END LOOP;
END $$;
SQL
psql -X -q -c "INSERT INTO rollup_runs VALUES ('build rollups of $sessions sessions in bulk', 1, $sessions, $built_ms / 1000.0)"
sessions_size=$(psql -X -qAt -c "SELECT pg_size_pretty(pg_total_relation_size('sessionize.kpis_stored_sessions'))")
rollups_size=$(psql -X -qAt -c "SELECT pg_size_pretty(sum(pg_total_relation_size(format('sessionize.%I', t))))
	FROM unnest(ARRAY['kpis_kpi_buckets', 'kpis_kpi_users', 'kpis_kpi_durations', 'kpis_kpi_types', 'kpis_kpi_measures']) t")
psql -X -q -c "SELECT sessionize.drop_pipeline('kpis')" -c "DROP TABLE kpis_in" >/dev/null

psql -X -q -v ON_ERROR_STOP=1 <<SQL
SELECT setseed(0.5);
CREATE UNLOGGED TABLE rollup_events AS
SELECT row_number() OVER (ORDER BY position) AS position, user_id, ts, kind, price
FROM (SELECT e.*, extract(epoch FROM ts) + CASE WHEN copy = 2 THEN random() * 600 ELSE 0 END AS position
	  FROM (SELECT (n % $users) AS user_id,
				   timestamptz '2024-01-01' + (n / $users) * interval '3 minutes' + (n % $users) * interval '1 ms' AS ts,
				   CASE WHEN n % 20 = 7 THEN 'buy' ELSE 'view' END AS kind,
				   CASE WHEN n % 20 = 7 THEN (n % 997)::numeric / 10 END AS price
			FROM generate_series(0, $events * 10 / 11 - 1) n) e,
		   LATERAL (SELECT 1 AS copy UNION ALL SELECT 2 WHERE random() < 0.1 AND e.user_id >= 0) copies) all_events;
VACUUM ANALYZE rollup_events;

CREATE OR REPLACE PROCEDURE rollup_drain(variant text, round int)
LANGUAGE plpgsql AS \$\$
DECLARE
	started timestamptz;
	done bigint;
BEGIN
	DROP TABLE IF EXISTS rollup_in;
	IF EXISTS (SELECT FROM sessionize.pipelines WHERE name = 'rolled') THEN
		PERFORM sessionize.drop_pipeline('rolled');
	END IF;
	CREATE TABLE rollup_in (id bigserial, user_id int, ts timestamptz, kind text, price numeric);
	PERFORM sessionize.create_pipeline('rolled', 'rollup_in', 'user_id', 'ts', '30 minutes',
		fingerprint_exclude => '{id}', type_column => 'kind',
		measures => 'sum(price) AS revenue, bool_or(kind = ''buy'') AS converted');
	IF variant = 'pipeline without rollups' THEN
		PERFORM sessionize.set_rollups('rolled', false);
	END IF;
	PERFORM sessionize.pause_pipeline('rolled');
	INSERT INTO rollup_in (user_id, ts, kind, price) SELECT user_id, ts, kind, price FROM rollup_events ORDER BY position;
	COMMIT;
	ANALYZE rollup_in;
	CHECKPOINT;
	started := clock_timestamp();
	LOOP
		SELECT consumed INTO done FROM sessionize.run_pipeline('rolled', 10000);
		COMMIT;
		EXIT WHEN done = 0;
	END LOOP;
	INSERT INTO rollup_runs
	SELECT variant, round, consumed, extract(epoch FROM clock_timestamp() - started)
	FROM sessionize.pipeline_state WHERE pipeline = 'rolled';
	COMMIT;
END \$\$;
SQL
for round in $(seq 1 "$rounds"); do
	for variant in 'pipeline without rollups' 'pipeline with rollups'; do
		psql -X -q -v ON_ERROR_STOP=1 -c "CALL rollup_drain('$variant', $round)"
	done
done
psql -X -q -c "SELECT sessionize.drop_pipeline('rolled')" -c "DROP TABLE rollup_in" >/dev/null

echo
echo "== KPI rollups: reads from $sessions sessions ($sessions_size; rollups $rollups_size), $(psql -X -qAt -c 'SELECT count(*) FROM rollup_events') deliveries (median of $rounds rounds)"
psql -X -v ON_ERROR_STOP=1 <<'SQL'
WITH medians AS (
	SELECT variant, count(*) AS rounds, max(events) AS rows_or_events,
		   percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) AS median_s
	FROM rollup_runs GROUP BY variant)
SELECT variant, rounds, rows_or_events,
	   CASE WHEN variant LIKE 'read%' THEN round((median_s * 1000)::numeric, 2) || ' ms'
			ELSE round(median_s::numeric, 2) || ' s' END AS median,
	   CASE WHEN variant LIKE 'pipeline%' THEN round((rows_or_events / median_s)::numeric) END AS events_per_s,
	   CASE WHEN variant LIKE 'pipeline%' THEN
			round((median_s / (SELECT median_s FROM medians WHERE variant = 'pipeline without rollups'))::numeric, 2)
	   END AS time_ratio
FROM medians ORDER BY variant;
SQL
psql -X -q -c "DROP TABLE rollup_events, rollup_runs" -c "DROP PROCEDURE rollup_drain(text, int)"
