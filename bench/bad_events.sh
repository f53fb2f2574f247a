#!/usr/bin/env bash
# Bad events: what one malformed event costs a batch.  A pipeline over JSON
# documents takes a batch of 10,000 events; in one of the two runs of each
# round, one event's time is not a time, so the set-based apply fails and
# the batch is split in halves until that event is found and dead-lettered.
# Rounds alternate clean and bad runs; medians and their ratio are printed.
#
#   make bench BENCH=bad_events       (EVENTS=10000 ROUNDS=5)
set -euo pipefail
cd "$(dirname "$0")/.."
events=${EVENTS:-10000}
rounds=${ROUNDS:-5}

psql -X -q -v ON_ERROR_STOP=1 <<SQL
CREATE EXTENSION IF NOT EXISTS sessionize;
DROP TABLE IF EXISTS bench_bad_results;
CREATE TABLE bench_bad_results (kind text, round int, seconds float8, merged bigint, dead_lettered bigint);
CREATE OR REPLACE PROCEDURE bench_bad_run(kind text, round int)
LANGUAGE plpgsql AS \$\$
DECLARE
	started timestamptz;
	result record;
BEGIN
	IF EXISTS (SELECT FROM sessionize.pipelines WHERE name = 'bench_bad') THEN
		PERFORM sessionize.drop_pipeline('bench_bad');
	END IF;
	DROP TABLE IF EXISTS bench_bad_in;
	CREATE TABLE bench_bad_in (doc jsonb);
	PERFORM sessionize.create_pipeline('bench_bad', 'bench_bad_in', 'user', 'at', '30 minutes', payload_column => 'doc');
	PERFORM sessionize.pause_pipeline('bench_bad');
	INSERT INTO bench_bad_in
	SELECT jsonb_build_object('user', (n % 1000)::text,
							  'at', CASE WHEN kind = 'bad' AND n = $events / 3 THEN 'not a time'
										 ELSE (timestamptz '2024-01-01' + n * interval '1 second')::text END)
	FROM generate_series(1, $events) n;
	COMMIT;
	started := clock_timestamp();
	SELECT * INTO result FROM sessionize.run_pipeline('bench_bad', $events);
	INSERT INTO bench_bad_results
	VALUES (kind, round, extract(epoch FROM clock_timestamp() - started), result.merged, result.dead_lettered);
	COMMIT;
END \$\$;
SQL

for round in $(seq 1 "$rounds"); do
	psql -X -q -v ON_ERROR_STOP=1 -c "CALL bench_bad_run('clean', $round)" -c "CALL bench_bad_run('bad', $round)"
done

psql -X -q -v ON_ERROR_STOP=1 <<SQL
SELECT sessionize.drop_pipeline('bench_bad');
DROP TABLE bench_bad_in;
\echo 'one batch of $events events over JSON documents (median of $rounds rounds)'
WITH medians AS (
	SELECT kind, percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) AS seconds,
		   max(merged) AS merged, max(dead_lettered) AS dead_lettered
	FROM bench_bad_results GROUP BY kind)
SELECT kind, round(seconds::numeric, 3) AS seconds, merged, dead_lettered,
	   round((seconds / (SELECT seconds FROM medians WHERE kind = 'clean'))::numeric, 2) AS ratio_to_clean
FROM medians ORDER BY kind DESC;
SQL
