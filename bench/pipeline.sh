#!/usr/bin/env bash
# Pipelines: sustained throughput of run_pipeline() (claim, fingerprint, dedup,
# lateness, merge into sessions, change log, checkpoint) against a
# hand-written set-based SQL pipeline on the same rows, and end-to-end
# latency through the background worker at a steady rate.
#
# Throughput: 40k users, 400k deliveries in time order across users, 10% of
# them re-deliveries at a random later position.  Each round loads the same
# rows into a fresh pipeline's staging table and drains it with
# run_pipeline(name, batch_size) in a loop, then drains the same rows with
# the hand-written pipeline (batch 10,000): claim with DELETE ... RETURNING,
# md5 dedup through INSERT ... ON CONFLICT DO NOTHING, and one upsert per
# user of its current session (no session history, change log, lateness or
# dead letters).  Rounds run round-robin; medians are reported.
#
# Latency: a producer commits RATE/100 events every 10 ms with event time =
# the time it produced them; the worker consumes them.  For every session
# change the worker commits, latency = commit time of the batch
# (track_commit_timestamp) minus the newest event time of the session,
# i.e. insert-to-visible.
#
#   make bench BENCH=pipeline   (EVENTS=400000 USERS=40000 ROUNDS=3 RATE=20000 SECONDS_PER_RUN=20)
set -euo pipefail
cd "$(dirname "$0")/.."
events=${EVENTS:-400000}
users=${USERS:-40000}
rounds=${ROUNDS:-3}
rate=${RATE:-20000}
seconds=${SECONDS_PER_RUN:-20}

psql -X -q -v ON_ERROR_STOP=1 <<SQL
CREATE EXTENSION IF NOT EXISTS sessionize;
DROP TABLE IF EXISTS bench_events, bench_throughput, bench_latency;
SELECT setseed(0.7);
-- clicks 3 minutes apart per user, in time order across users; 10% of the
-- deliveries are copies delivered again at a random later position
CREATE UNLOGGED TABLE bench_events AS
SELECT row_number() OVER (ORDER BY position) AS position, user_id, ts, url
FROM (SELECT user_id, ts, url, extract(epoch FROM ts) AS position
	  FROM (SELECT (n % $users) AS user_id,
				   timestamptz '2024-01-01' + (n / $users) * interval '3 minutes' + (n % $users) * interval '1 ms' AS ts,
				   (ARRAY['/', '/search', '/product', '/cart'])[1 + n % 4] AS url
			FROM generate_series(0, $events * 10 / 11 - 1) n) e
	  UNION ALL
	  SELECT user_id, ts, url, extract(epoch FROM ts) + random() * 600
	  FROM (SELECT (n % $users) AS user_id,
				   timestamptz '2024-01-01' + (n / $users) * interval '3 minutes' + (n % $users) * interval '1 ms' AS ts,
				   (ARRAY['/', '/search', '/product', '/cart'])[1 + n % 4] AS url
			FROM generate_series(0, $events * 10 / 11 - 1) n) d
	  WHERE random() < 0.1) all_events;
VACUUM ANALYZE bench_events;
SELECT count(*) AS deliveries, count(DISTINCT (user_id, ts)) AS distinct_events, count(DISTINCT user_id) AS users
FROM bench_events;
CREATE TABLE bench_throughput (engine text, batch_size int, round int, events bigint, seconds float8,
							   merged bigint, duplicates bigint);

CREATE OR REPLACE PROCEDURE bench_drain(batch_size int, round int)
LANGUAGE plpgsql AS \$\$
DECLARE
	started timestamptz;
	done bigint;
BEGIN
	DROP TABLE IF EXISTS bench_in;
	IF EXISTS (SELECT FROM sessionize.pipelines WHERE name = 'bench') THEN
		PERFORM sessionize.drop_pipeline('bench');
	END IF;
	CREATE TABLE bench_in (id bigserial, user_id int, ts timestamptz, url text);
	-- created paused, in one transaction: the worker never sees it active
	PERFORM sessionize.create_pipeline('bench', 'bench_in', 'user_id', 'ts', '30 minutes',
									   fingerprint_exclude => '{id}', type_column => 'url');
	PERFORM sessionize.pause_pipeline('bench');
	INSERT INTO bench_in (user_id, ts, url) SELECT user_id, ts, url FROM bench_events ORDER BY position;
	COMMIT;
	ANALYZE bench_in;
	CHECKPOINT;
	started := clock_timestamp();
	LOOP
		SELECT consumed INTO done FROM sessionize.run_pipeline('bench', batch_size);
		COMMIT;
		EXIT WHEN done = 0;
	END LOOP;
	INSERT INTO bench_throughput
	SELECT 'run_pipeline()', batch_size, round, consumed, extract(epoch FROM clock_timestamp() - started), merged, duplicates
	FROM sessionize.pipeline_state WHERE pipeline = 'bench';
	COMMIT;
END \$\$;

-- The hand-written pipeline the issue tracker measured run_pipeline() against.
CREATE OR REPLACE PROCEDURE bench_hand_written(batch_size int, round int)
LANGUAGE plpgsql AS \$\$
DECLARE
	started timestamptz;
	claimed bigint;
	total bigint := 0;
BEGIN
	DROP TABLE IF EXISTS hand_in, hand_seen, hand_sessions;
	CREATE TABLE hand_in (id bigserial, user_id int, ts timestamptz, url text);
	CREATE INDEX ON hand_in (ts);
	CREATE TABLE hand_seen (fingerprint uuid PRIMARY KEY);
	CREATE TABLE hand_sessions (user_id int PRIMARY KEY, session_start timestamptz, last_event_at timestamptz,
								events bigint);
	INSERT INTO hand_in (user_id, ts, url) SELECT user_id, ts, url FROM bench_events ORDER BY position;
	COMMIT;
	ANALYZE hand_in;
	CHECKPOINT;
	started := clock_timestamp();
	LOOP
		WITH claimed AS (
			DELETE FROM hand_in
			WHERE ctid = ANY (ARRAY(SELECT ctid FROM hand_in ORDER BY ts LIMIT batch_size FOR UPDATE SKIP LOCKED))
			RETURNING user_id, ts, url, md5(user_id || '|' || ts || '|' || url)::uuid AS fingerprint),
		fresh AS (
			INSERT INTO hand_seen SELECT DISTINCT fingerprint FROM claimed
			ON CONFLICT DO NOTHING RETURNING fingerprint),
		per_user AS (
			SELECT c.user_id, min(c.ts) AS first_ts, max(c.ts) AS last_ts, count(*) AS events
			FROM claimed c JOIN fresh f USING (fingerprint) GROUP BY c.user_id),
		upserted AS (
			INSERT INTO hand_sessions AS s SELECT * FROM per_user
			ON CONFLICT (user_id) DO UPDATE
			SET session_start = CASE WHEN EXCLUDED.session_start > s.last_event_at + interval '30 minutes'
									 THEN EXCLUDED.session_start ELSE s.session_start END,
				events = CASE WHEN EXCLUDED.session_start > s.last_event_at + interval '30 minutes'
							  THEN EXCLUDED.events ELSE s.events + EXCLUDED.events END,
				last_event_at = greatest(s.last_event_at, EXCLUDED.last_event_at)
			RETURNING 1)
		SELECT count(*) INTO claimed FROM claimed;
		COMMIT;
		total := total + claimed;
		EXIT WHEN claimed = 0;
	END LOOP;
	INSERT INTO bench_throughput
	SELECT 'hand-written SQL', batch_size, round, total, extract(epoch FROM clock_timestamp() - started),
		   NULL, total - (SELECT count(*) FROM hand_seen);
	COMMIT;
END \$\$;
SQL

for round in $(seq 1 "$rounds"); do
	psql -X -q -v ON_ERROR_STOP=1 -c "CALL bench_hand_written(10000, $round)"
	for batch in 1000 10000 50000; do
		psql -X -q -v ON_ERROR_STOP=1 -c "CALL bench_drain($batch, $round)"
	done
done

echo
echo "== Throughput: $events deliveries of $users users (median of $rounds rounds)"
psql -X -v ON_ERROR_STOP=1 <<'SQL'
WITH medians AS (
	SELECT engine, batch_size, count(*) AS rounds, max(events) AS events, max(merged) AS merged,
		   max(duplicates) AS duplicates,
		   percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) AS median_s
	FROM bench_throughput GROUP BY engine, batch_size)
SELECT m.engine, m.batch_size, m.rounds, m.events, m.merged, m.duplicates, round(m.median_s::numeric, 2) AS median_s,
	   round((m.events / m.median_s)::numeric) AS events_per_s,
	   round((h.median_s / m.median_s)::numeric, 2) AS vs_hand_written
FROM medians m, medians h WHERE h.engine = 'hand-written SQL'
ORDER BY m.engine DESC, m.batch_size;
-- every round must give the same accounting
SELECT CASE WHEN count(DISTINCT (events, merged, duplicates)) = 1 THEN 'consistent' ELSE 'INCONSISTENT' END AS accounting
FROM bench_throughput WHERE engine = 'run_pipeline()';
SQL

# Latency through the worker.
psql -X -q -v ON_ERROR_STOP=1 <<'SQL'
SELECT sessionize.drop_pipeline('bench');
DROP TABLE IF EXISTS bench_in, bench_latency;
CREATE TABLE bench_latency (position int, setting text, latency_ms float8);
CREATE TABLE bench_in (id bigserial, user_id int, ts timestamptz);
SELECT sessionize.create_pipeline('bench', 'bench_in', 'user_id', 'ts', '30 minutes', fingerprint_exclude => '{id}');
SQL

produce() {
	psql -X -q -v ON_ERROR_STOP=1 <<SQL
DO \$\$
DECLARE
	started timestamptz := clock_timestamp();
	produced bigint := 0;
BEGIN
	WHILE clock_timestamp() < started + interval '$seconds seconds' LOOP
		INSERT INTO bench_in (user_id, ts)
		SELECT (random() * 99999)::int, clock_timestamp() FROM generate_series(1, $rate / 100);
		COMMIT;
		produced := produced + $rate / 100;
		-- $rate events/s: sleep until event number 'produced' is due
		PERFORM pg_sleep(greatest(0, extract(epoch FROM started + produced * interval '1 second' / $rate - clock_timestamp())));
	END LOOP;
END \$\$;
SQL
}

position=0
for setting in "1s 10000" "250ms 10000" "250ms 1000" "100ms 1000"; do
	set -- $setting
	position=$((position + 1))
	psql -X -q -v ON_ERROR_STOP=1 -c "ALTER SYSTEM SET sessionize.naptime = '$1'" \
		-c "ALTER SYSTEM SET sessionize.batch_size = $2" -c "SELECT pg_reload_conf()" >/dev/null
	sleep 2
	first_change=$(psql -X -qAt -c "SELECT coalesce(max(change_id), 0) FROM sessionize.bench_changes")
	produce
	until [ "$(psql -X -qAt -c "SELECT backlog FROM sessionize.pipeline_status WHERE name = 'bench'")" = 0 ]; do
		sleep 0.5
	done
	psql -X -q -v ON_ERROR_STOP=1 -c "
		INSERT INTO bench_latency
		SELECT $position, 'naptime $1, batch_size $2',
			   1000 * extract(epoch FROM pg_xact_commit_timestamp(xmin) - last_event_at)
		FROM sessionize.bench_changes WHERE change_id > $first_change AND change <> 'closed'"
done
psql -X -q -c "ALTER SYSTEM RESET sessionize.naptime" -c "ALTER SYSTEM RESET sessionize.batch_size" -c "SELECT pg_reload_conf()" >/dev/null

echo
echo "== Latency at $rate events/s through the worker, insert to visible in sessions ($seconds s each)"
psql -X -v ON_ERROR_STOP=1 <<'SQL'
SELECT setting, count(*) AS samples,
	   round(percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms)::numeric) AS p50_ms,
	   round(percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms)::numeric) AS p99_ms,
	   round(max(latency_ms)::numeric) AS max_ms
FROM bench_latency GROUP BY position, setting ORDER BY position;
SQL
