#!/usr/bin/env bash
# Pipelines: sustained throughput of run_pipeline() (claim, fingerprint, dedup,
# lateness, merge into sessions, change log, checkpoint) for several batch
# sizes, and end-to-end latency through the background worker at a steady
# 5,000 events/s.
#
# Throughput: 100k users, events in time order across users with 10% of them
# re-delivered at random; each round loads the same events into a fresh
# pipeline's staging table and drains it with run_pipeline(name, batch_size)
# in a loop.  Rounds run the batch sizes round-robin; medians are reported.
#
# Latency: a producer commits 50 events every 10 ms with event time = the
# time it produced them; the worker consumes them.  For every session change
# the worker commits, latency = commit time of the batch (track_commit_timestamp)
# minus the newest event time of the session, i.e. insert-to-visible.
#
#   make bench BENCH=pipeline       (EVENTS=300000 ROUNDS=3 SECONDS=20)
set -euo pipefail
cd "$(dirname "$0")/.."
events=${EVENTS:-300000}
rounds=${ROUNDS:-3}
seconds=${SECONDS_PER_RUN:-20}

psql -X -q -v ON_ERROR_STOP=1 <<SQL
CREATE EXTENSION IF NOT EXISTS sessionize;
DROP TABLE IF EXISTS bench_events, bench_throughput, bench_latency;
SELECT setseed(0.7);
-- 100k users, clicks about 3 minutes apart within visits 5 hours apart, in
-- time order across users; 10% re-delivered later at a random position.
CREATE UNLOGGED TABLE bench_events AS
SELECT row_number() OVER (ORDER BY position) AS position, user_id, ts, url
FROM (SELECT user_id, ts, url, extract(epoch FROM ts) AS position
	  FROM (SELECT (n % 100000) AS user_id,
				   timestamptz '2024-01-01' + (n / 100000) * interval '3 minutes' + (n % 100000) * interval '1 ms' AS ts,
				   (ARRAY['/', '/search', '/product', '/cart'])[1 + n % 4] AS url
			FROM generate_series(0, $events * 10 / 11 - 1) n) e
	  UNION ALL
	  SELECT user_id, ts, url, extract(epoch FROM ts) + random() * 600
	  FROM (SELECT (n % 100000) AS user_id,
				   timestamptz '2024-01-01' + (n / 100000) * interval '3 minutes' + (n % 100000) * interval '1 ms' AS ts,
				   (ARRAY['/', '/search', '/product', '/cart'])[1 + n % 4] AS url
			FROM generate_series(0, $events * 10 / 11 - 1) n) d
	  WHERE random() < 0.1) all_events;
VACUUM ANALYZE bench_events;
SELECT count(*) AS events, count(DISTINCT (user_id, ts)) AS distinct_events, count(DISTINCT user_id) AS users
FROM bench_events;
CREATE TABLE bench_throughput (batch_size int, round int, events bigint, seconds float8, merged bigint, duplicates bigint);

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
	started := clock_timestamp();
	LOOP
		SELECT consumed INTO done FROM sessionize.run_pipeline('bench', batch_size);
		COMMIT;
		EXIT WHEN done = 0;
	END LOOP;
	INSERT INTO bench_throughput
	SELECT batch_size, round, consumed, extract(epoch FROM clock_timestamp() - started), merged, duplicates
	FROM sessionize.pipeline_state WHERE pipeline = 'bench';
	COMMIT;
END \$\$;
SQL

for round in $(seq 1 "$rounds"); do
	for batch in 1000 10000 50000; do
		psql -X -q -v ON_ERROR_STOP=1 -c "CALL bench_drain($batch, $round)"
	done
done

echo
echo "== Throughput: run_pipeline() draining $events events (median of $rounds rounds)"
psql -X -v ON_ERROR_STOP=1 <<'SQL'
SELECT batch_size, count(*) AS rounds, max(events) AS events, max(merged) AS merged, max(duplicates) AS duplicates,
	   round(percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds)::numeric, 2) AS median_s,
	   round((max(events) / percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds))::numeric) AS events_per_s
FROM bench_throughput GROUP BY batch_size ORDER BY batch_size;
-- every round must give the same sessions count and accounting
SELECT CASE WHEN count(DISTINCT (events, merged, duplicates)) = 1 THEN 'consistent' ELSE 'INCONSISTENT' END AS accounting
FROM bench_throughput;
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
		SELECT (random() * 99999)::int, clock_timestamp() FROM generate_series(1, 50);
		COMMIT;
		produced := produced + 50;
		-- 5,000 events/s: sleep until event number 'produced' is due
		PERFORM pg_sleep(greatest(0, extract(epoch FROM started + produced * interval '200 microseconds' - clock_timestamp())));
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
echo "== Latency at 5,000 events/s through the worker, insert to visible in sessions ($seconds s each)"
psql -X -v ON_ERROR_STOP=1 <<'SQL'
SELECT setting, count(*) AS samples,
	   round(percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms)::numeric) AS p50_ms,
	   round(percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms)::numeric) AS p99_ms,
	   round(max(latency_ms)::numeric) AS max_ms
FROM bench_latency GROUP BY position, setting ORDER BY position;
SQL
