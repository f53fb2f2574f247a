#!/usr/bin/env bash
# Logical-replication source: events/s from an application table followed
# through its WAL (pgoutput), through dedup and sessions, against the same
# events through a staging table, and the share of the time that decoding
# takes.  Measured side by side, round-robin, medians reported.
#
# Each round inserts the same events (100k users, 10% re-delivered) into the
# source in transactions of 1,000 rows, then measures on the unchanged slot:
#   decode only   - pg_logical_slot_peek_binary_changes() over every change
#   decode + read - the same, each message read into a row of the source table
# and then drains the pipeline with run_pipeline(name, batch_size).
#
#   make bench BENCH=logical          (EVENTS=300000 ROUNDS=3 BATCH=10000)
set -euo pipefail
cd "$(dirname "$0")/.."
events=${EVENTS:-300000}
rounds=${ROUNDS:-3}
batch=${BATCH:-10000}

psql -X -q -v ON_ERROR_STOP=1 <<SQL
CREATE EXTENSION IF NOT EXISTS sessionize;
DROP TABLE IF EXISTS bench_events, bench_logical;
SELECT setseed(0.3);
CREATE UNLOGGED TABLE bench_events AS
SELECT row_number() OVER (ORDER BY position) AS position, user_id, ts, url
FROM (SELECT (n % 100000) AS user_id,
			 timestamptz '2024-01-01' + (n / 100000) * interval '3 minutes' + (n % 100000) * interval '1 ms' AS ts,
			 (ARRAY['/', '/search', '/product', '/cart'])[1 + n % 4] AS url,
			 n + CASE WHEN copy = 2 THEN random() * 5000 ELSE 0 END AS position
	  FROM generate_series(0, $events * 10 / 11 - 1) n,
		   LATERAL (SELECT 1 AS copy UNION ALL SELECT 2 WHERE random() < 0.1 AND n >= 0) copies) e;
VACUUM ANALYZE bench_events;
SELECT count(*) AS events, count(DISTINCT (user_id, ts)) AS distinct_events FROM bench_events;
CREATE TABLE bench_logical (round int, step text, events bigint, seconds float8);

-- Inserts the events into the source, 1,000 rows a transaction, flushed at
-- commit so that decoding sees them at once.
CREATE OR REPLACE PROCEDURE bench_feed(source regclass)
LANGUAGE plpgsql AS \$\$
DECLARE
	total bigint := (SELECT count(*) FROM bench_events);
BEGIN
	PERFORM set_config('synchronous_commit', 'on', false);
	FOR start IN 0..total - 1 BY 1000 LOOP
		EXECUTE format('INSERT INTO %s (user_id, ts, url) SELECT user_id, ts, url FROM bench_events
						WHERE position > \$1 AND position <= \$1 + 1000 ORDER BY position', source)
		USING start;
		COMMIT;
	END LOOP;
END \$\$;

CREATE OR REPLACE PROCEDURE bench_round(round int, batch_size int)
LANGUAGE plpgsql AS \$\$
DECLARE
	started timestamptz;
	done bigint;
	total bigint := (SELECT count(*) FROM bench_events);
	changes bigint;
BEGIN
	-- staging table
	DROP TABLE IF EXISTS bench_staging;
	CREATE TABLE bench_staging (id bigserial, user_id int, ts timestamptz, url text);
	PERFORM sessionize.create_pipeline('bench_staged', 'bench_staging', 'user_id', 'ts', '30 minutes',
									   fingerprint_exclude => '{id}', type_column => 'url');
	PERFORM sessionize.pause_pipeline('bench_staged');
	COMMIT;
	CALL bench_feed('bench_staging');
	started := clock_timestamp();
	LOOP
		SELECT consumed INTO done FROM sessionize.run_pipeline('bench_staged', batch_size);
		COMMIT;
		EXIT WHEN done = 0;
	END LOOP;
	INSERT INTO bench_logical VALUES (round, 'staging table: run_pipeline', total, extract(epoch FROM clock_timestamp() - started));
	PERFORM sessionize.drop_pipeline('bench_staged');
	COMMIT;

	-- logical source: the pipeline is created in a transaction of its own
	DROP TABLE IF EXISTS bench_source;
	CREATE TABLE bench_source (id bigserial PRIMARY KEY, user_id int, ts timestamptz, url text);
	COMMIT;
	PERFORM sessionize.create_pipeline('bench_wal', 'bench_source', 'user_id', 'ts', '30 minutes',
									   fingerprint_exclude => '{id}', type_column => 'url', source_kind => 'logical');
	PERFORM sessionize.pause_pipeline('bench_wal');
	COMMIT;
	CALL bench_feed('bench_source');
	changes := total + 3 * (total / 1000 + 1);

	started := clock_timestamp();
	PERFORM count(*) FROM pg_logical_slot_peek_binary_changes(sessionize.sessionize_slot_name('bench_wal'), NULL, changes::int,
			'proto_version', '1', 'publication_names', 'sessionize_pipelines');
	INSERT INTO bench_logical VALUES (round, 'decode only', total, extract(epoch FROM clock_timestamp() - started));
	COMMIT;

	started := clock_timestamp();
	PERFORM count(sessionize.sessionize_pgoutput_row(p.data, NULL::bench_source))
	FROM pg_logical_slot_peek_binary_changes(sessionize.sessionize_slot_name('bench_wal'), NULL, changes::int,
			'proto_version', '1', 'publication_names', 'sessionize_pipelines') p,
		 sessionize.sessionize_pgoutput_message(p.data) m;
	INSERT INTO bench_logical VALUES (round, 'decode + read rows', total, extract(epoch FROM clock_timestamp() - started));
	COMMIT;

	started := clock_timestamp();
	LOOP
		SELECT consumed INTO done FROM sessionize.run_pipeline('bench_wal', batch_size);
		COMMIT;
		EXIT WHEN done = 0;
	END LOOP;
	INSERT INTO bench_logical
	SELECT round, 'logical source: run_pipeline', consumed, extract(epoch FROM clock_timestamp() - started)
	FROM sessionize.pipeline_state WHERE pipeline = 'bench_wal';
	PERFORM sessionize.drop_pipeline('bench_wal');
	COMMIT;
END \$\$;
SQL

for round in $(seq 1 "$rounds"); do
	psql -X -q -v ON_ERROR_STOP=1 -c "CALL bench_round($round, $batch)"
done

echo
echo "== Logical source: $events events, batch_size $batch (median of $rounds rounds)"
psql -X -v ON_ERROR_STOP=1 <<'SQL'
WITH medians AS (
	SELECT step, min(round) AS first_round, max(events) AS events,
		   percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) AS median
	FROM bench_logical GROUP BY step)
SELECT step, events, round(median::numeric, 2) AS median_s, round((events / median)::numeric) AS events_per_s,
	   CASE WHEN step = 'logical source: run_pipeline' THEN
		   round((100 * (SELECT median FROM medians WHERE step = 'decode only') / median)::numeric, 1) END
		 AS decoding_share_pct
FROM medians
ORDER BY CASE step WHEN 'staging table: run_pipeline' THEN 1 WHEN 'logical source: run_pipeline' THEN 2
				   WHEN 'decode only' THEN 3 ELSE 4 END;
SQL
