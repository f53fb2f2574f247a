#!/usr/bin/env bash
# Logical-replication sources: events/s from an application table followed
# through its WAL by the pipeline's worker (which streams the slot: each
# change decoded once), for three shapes of load, against the same events
# through a staging table, and run_pipeline() by hand on the one-transaction
# load (which peeks, decoding the transaction again for each batch).
#
# Events: 40k users, 10% of the deliveries re-delivered.  Each run creates
# the pipeline paused, loads the source, resumes the pipeline and measures
# from the resume to the commit of the batch that took the last event
# (pipeline_state.last_batch_at); the worker's private resident memory
# (RssAnon: shared buffers left out) is read when it is done.  Shapes:
#   1,000-row transactions   - EVENTS rows, committed 1,000 at a time
#   one transaction          - EVENTS rows in one INSERT
#   one large transaction    - LARGE_FACTOR x EVENTS rows in one INSERT
#                              (the events again, a day later each time)
# Rounds run the shapes round-robin; medians are reported.  run_pipeline()
# by hand runs in the first round only.
#
#   make bench BENCH=logical
#     (EVENTS=400000 ROUNDS=3 LARGE_ROUNDS=1 LARGE_FACTOR=10 BATCH=10000)
set -euo pipefail
cd "$(dirname "$0")/.."
events=${EVENTS:-400000}
rounds=${ROUNDS:-3}
large_rounds=${LARGE_ROUNDS:-1}
large_factor=${LARGE_FACTOR:-10}
batch=${BATCH:-10000}

psql -X -q -v ON_ERROR_STOP=1 -c "ALTER SYSTEM SET sessionize.batch_size = $batch" -c "SELECT pg_reload_conf()" >/dev/null
psql -X -q -v ON_ERROR_STOP=1 <<SQL
CREATE EXTENSION IF NOT EXISTS sessionize;
DROP TABLE IF EXISTS bench_events, bench_logical;
SELECT setseed(0.3);
CREATE UNLOGGED TABLE bench_events AS
SELECT row_number() OVER (ORDER BY position) AS position, user_id, ts, url
FROM (SELECT (n % 40000) AS user_id,
			 timestamptz '2024-01-01' + (n / 40000) * interval '3 minutes' + (n % 40000) * interval '1 ms' AS ts,
			 (ARRAY['/', '/search', '/product', '/cart'])[1 + n % 4] AS url,
			 n + CASE WHEN copy = 2 THEN random() * 5000 ELSE 0 END AS position
	  FROM generate_series(0, $events * 10 / 11 - 1) n,
		   LATERAL (SELECT 1 AS copy UNION ALL SELECT 2 WHERE random() < 0.1 AND n >= 0) copies) e;
VACUUM ANALYZE bench_events;
SELECT count(*) AS deliveries, count(DISTINCT (user_id, ts)) AS distinct_events FROM bench_events;
CREATE TABLE bench_logical (round int, shape text, events bigint, seconds float8, worker_rss_kb bigint);

-- Loads the events into a table, 1,000 rows a transaction.
CREATE OR REPLACE PROCEDURE bench_feed(target regclass)
LANGUAGE plpgsql AS \$\$
DECLARE
	total bigint := (SELECT count(*) FROM bench_events);
BEGIN
	FOR start IN 0..total - 1 BY 1000 LOOP
		EXECUTE format('INSERT INTO %s (user_id, ts, url) SELECT user_id, ts, url FROM bench_events
						WHERE position > \$1 AND position <= \$1 + 1000 ORDER BY position', target)
		USING start;
		COMMIT;
	END LOOP;
END \$\$;
SQL

# Makes a paused pipeline 'bench' over a fresh table; $1: table or logical.
make_pipeline() {
	psql -X -q -v ON_ERROR_STOP=1 <<SQL
SELECT sessionize.drop_pipeline('bench') FROM sessionize.pipelines WHERE name = 'bench';
DROP TABLE IF EXISTS bench_source;
CREATE TABLE bench_source (id bigserial PRIMARY KEY, user_id int, ts timestamptz, url text);
SQL
	psql -X -q -v ON_ERROR_STOP=1 -c "SELECT sessionize.create_pipeline('bench', 'bench_source', 'user_id', 'ts', '30 minutes',
		fingerprint_exclude => '{id}', type_column => 'url', source_kind => '$1')" \
		-c "SELECT sessionize.pause_pipeline('bench')" >/dev/null
}

# Resumes the pipeline and waits until its worker has consumed $2 events;
# records the time from the resume to the last batch's commit.
measure_worker() {
	local round=$1 total=$2 shape=$3 started pid rss
	started=$(psql -X -qAt -v ON_ERROR_STOP=1 -c "SELECT clock_timestamp()")
	psql -X -q -v ON_ERROR_STOP=1 -c "SELECT sessionize.resume_pipeline('bench')" >/dev/null
	until [ "$(psql -X -qAt -c "SELECT consumed FROM sessionize.pipeline_state WHERE pipeline = 'bench'")" = "$total" ]; do
		sleep 0.2
	done
	pid=$(psql -X -qAt -c "SELECT worker_pid FROM sessionize.pipeline_status WHERE name = 'bench'")
	rss=$(awk '/RssAnon/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo '')
	psql -X -q -v ON_ERROR_STOP=1 -c "INSERT INTO bench_logical
		SELECT $round, '$shape', $total, extract(epoch FROM last_batch_at - '$started'::timestamptz), nullif('$rss', '')::bigint
		FROM sessionize.pipeline_state WHERE pipeline = 'bench'"
}

total=$(psql -X -qAt -c "SELECT count(*) FROM bench_events")
for round in $(seq 1 "$rounds"); do
	make_pipeline table
	psql -X -q -v ON_ERROR_STOP=1 -c "CALL bench_feed('bench_source')"
	measure_worker "$round" "$total" 'staging table, worker'

	make_pipeline logical
	psql -X -q -v ON_ERROR_STOP=1 -c "CALL bench_feed('bench_source')"
	measure_worker "$round" "$total" 'logical, 1,000-row transactions, worker'

	make_pipeline logical
	psql -X -q -v ON_ERROR_STOP=1 -c "INSERT INTO bench_source (user_id, ts, url)
		SELECT user_id, ts, url FROM bench_events ORDER BY position"
	measure_worker "$round" "$total" 'logical, one transaction, worker'

	# the same transaction by hand: each batch peeks from the slot (once:
	# its cost grows with the square of the transaction)
	[ "$round" = 1 ] || continue
	make_pipeline logical
	psql -X -q -v ON_ERROR_STOP=1 -c "INSERT INTO bench_source (user_id, ts, url)
		SELECT user_id, ts, url FROM bench_events ORDER BY position"
	psql -X -q -v ON_ERROR_STOP=1 <<SQL
DO \$\$
DECLARE
	started timestamptz := clock_timestamp();
	done bigint;
BEGIN
	-- until every event is taken: with synchronous_commit = off a peek sees
	-- a commit only once the WAL writer has flushed it
	LOOP
		PERFORM sessionize.run_pipeline('bench', $batch);
		COMMIT;
		SELECT s.consumed INTO done FROM sessionize.pipeline_state s WHERE s.pipeline = 'bench';
		EXIT WHEN done >= $total;
	END LOOP;
	INSERT INTO bench_logical
	VALUES ($round, 'logical, one transaction, run_pipeline() by hand', $total,
			extract(epoch FROM clock_timestamp() - started), NULL);
END \$\$;
SQL
done
for round in $(seq 1 "$large_rounds"); do
	make_pipeline logical
	psql -X -q -v ON_ERROR_STOP=1 -c "INSERT INTO bench_source (user_id, ts, url)
		SELECT user_id, ts + copy * interval '1 day', url
		FROM generate_series(0, $large_factor - 1) copy, LATERAL (SELECT * FROM bench_events ORDER BY position) e"
	measure_worker "$round" "$((large_factor * total))" "logical, one transaction of ${large_factor}x, worker"
done
psql -X -q -c "SELECT sessionize.drop_pipeline('bench')" -c "ALTER SYSTEM RESET sessionize.batch_size" -c "SELECT pg_reload_conf()" >/dev/null

echo
echo "== Logical sources: $total deliveries a run, batch_size $batch (median of $rounds rounds; the large transaction: $large_rounds)"
psql -X -v ON_ERROR_STOP=1 <<'SQL'
WITH medians AS (
	SELECT shape, count(*) AS rounds, max(events) AS events,
		   percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) AS median_s,
		   max(worker_rss_kb) AS worker_rss_kb
	FROM bench_logical GROUP BY shape)
SELECT shape, rounds, events, round(median_s::numeric, 2) AS median_s, round((events / median_s)::numeric) AS events_per_s,
	   round((median_s / (SELECT median_s FROM medians WHERE shape = 'logical, one transaction, worker'))::numeric, 1)
		 AS time_vs_one_transaction,
	   round(worker_rss_kb / 1024.0) AS worker_private_rss_mb
FROM medians
ORDER BY events, shape DESC;
SQL
