#!/usr/bin/env bash
# Session measures: what six measures cost a pipeline, and the aggregates
# first(), last() and approx_count_distinct() against the SQL a user would
# otherwise write.
#
# Pipeline: 40k users, 400k deliveries in time order across users (10%
# re-delivered), each with a url, a type, a price on 5% of them and a
# product; drained by run_pipeline(name, 10000) with no measures and with
# six (landing page, exit page, page views, revenue, converted, distinct
# products), side by side, round-robin; medians are reported.
#
# Aggregates: over the same events, GROUP BY user_id, the first and last url
# and the distinct products with sessionize's aggregates and with
# array_agg(... ORDER BY ...)[1] and count(DISTINCT ...).
#
#   make bench BENCH=measures   (EVENTS=400000 USERS=40000 ROUNDS=3)
set -euo pipefail
cd "$(dirname "$0")/.."
events=${EVENTS:-400000}
users=${USERS:-40000}
rounds=${ROUNDS:-3}

psql -X -q -v ON_ERROR_STOP=1 <<SQL
CREATE EXTENSION IF NOT EXISTS sessionize;
DROP TABLE IF EXISTS measure_events, measure_runs;
SELECT setseed(0.5);
CREATE UNLOGGED TABLE measure_events AS
SELECT row_number() OVER (ORDER BY position) AS position, user_id, ts, url, event_type, price, product_id
FROM (SELECT e.*, extract(epoch FROM ts) + CASE WHEN copy = 2 THEN random() * 600 ELSE 0 END AS position
	  FROM (SELECT (n % $users) AS user_id,
				   timestamptz '2024-01-01' + (n / $users) * interval '3 minutes' + (n % $users) * interval '1 ms' AS ts,
				   (ARRAY['/', '/search', '/product', '/cart'])[1 + n % 4] AS url,
				   CASE WHEN n % 20 = 7 THEN 'buy' ELSE 'view' END AS event_type,
				   CASE WHEN n % 20 = 7 THEN (n % 997)::numeric / 10 END AS price,
				   ((n::bigint * 7919) % 5000)::int AS product_id
			FROM generate_series(0, $events * 10 / 11 - 1) n) e,
		   LATERAL (SELECT 1 AS copy UNION ALL SELECT 2 WHERE random() < 0.1 AND e.user_id >= 0) copies) all_events;
VACUUM ANALYZE measure_events;
CREATE TABLE measure_runs (variant text, round int, events bigint, seconds float8, cpu_seconds float8);

-- CPU time of this backend (Linux), which a busy machine disturbs less
-- than the wall clock; NULL elsewhere.
CREATE OR REPLACE FUNCTION backend_cpu_seconds() RETURNS float8
LANGUAGE plpgsql AS \$\$
DECLARE
	fields text[];
BEGIN
	fields := string_to_array(split_part(pg_read_file('/proc/self/stat'), ') ', 2), ' ');
	RETURN (fields[12]::float8 + fields[13]::float8) / 100;
EXCEPTION WHEN OTHERS THEN
	RETURN NULL;
END \$\$;

CREATE OR REPLACE PROCEDURE measure_drain(variant text, round int)
LANGUAGE plpgsql AS \$\$
DECLARE
	started timestamptz;
	cpu_started float8;
	done bigint;
BEGIN
	DROP TABLE IF EXISTS measure_in;
	IF EXISTS (SELECT FROM sessionize.pipelines WHERE name = 'measured') THEN
		PERFORM sessionize.drop_pipeline('measured');
	END IF;
	CREATE TABLE measure_in (id bigserial, user_id int, ts timestamptz, url text, event_type text, price numeric,
							 product_id int);
	PERFORM sessionize.create_pipeline('measured', 'measure_in', 'user_id', 'ts', '30 minutes',
		fingerprint_exclude => '{id}',
		measures => CASE variant WHEN 'six measures' THEN
			'first(url) AS landing_page, last(url) AS exit_page,
			 count(*) FILTER (WHERE event_type = ''view'') AS pageviews, sum(price) AS revenue,
			 bool_or(event_type = ''buy'') AS converted, approx_count_distinct(product_id) AS products' END);
	PERFORM sessionize.pause_pipeline('measured');
	INSERT INTO measure_in (user_id, ts, url, event_type, price, product_id)
	SELECT user_id, ts, url, event_type, price, product_id FROM measure_events ORDER BY position;
	COMMIT;
	ANALYZE measure_in;
	CHECKPOINT;
	started := clock_timestamp();
	cpu_started := backend_cpu_seconds();
	LOOP
		SELECT consumed INTO done FROM sessionize.run_pipeline('measured', 10000);
		COMMIT;
		EXIT WHEN done = 0;
	END LOOP;
	INSERT INTO measure_runs
	SELECT variant, round, consumed, extract(epoch FROM clock_timestamp() - started),
		   backend_cpu_seconds() - cpu_started
	FROM sessionize.pipeline_state WHERE pipeline = 'measured';
	COMMIT;
END \$\$;
SQL

for round in $(seq 1 "$rounds"); do
	for variant in 'no measures' 'six measures'; do
		psql -X -q -v ON_ERROR_STOP=1 -c "CALL measure_drain('$variant', $round)"
	done
	for query in aggregates sql; do
		if [ "$query" = aggregates ]; then
			sql="SELECT user_id, sessionize.first(url, ts), sessionize.last(url, ts), sessionize.approx_count_distinct(product_id) FROM measure_events GROUP BY user_id"
		else
			sql="SELECT user_id, (array_agg(url ORDER BY ts, url))[1], (array_agg(url ORDER BY ts DESC, url DESC))[1], count(DISTINCT product_id) FROM measure_events GROUP BY user_id"
		fi
		psql -X -q -v ON_ERROR_STOP=1 <<SQL
SET work_mem = '64MB';
SET max_parallel_workers_per_gather = 0;
DO \$\$
DECLARE
	started timestamptz := clock_timestamp();
BEGIN
	-- count(q.*) needs every column: with count(*) the planner drops the aggregates
	PERFORM count(q.*) FROM ($sql) q;
	INSERT INTO measure_runs VALUES ('GROUP BY user_id: $query', $round, (SELECT count(*) FROM measure_events),
									 extract(epoch FROM clock_timestamp() - started), NULL);
END \$\$;
SQL
	done
done
psql -X -q -c "SELECT sessionize.drop_pipeline('measured')" -c "DROP TABLE measure_in" >/dev/null

echo
echo "== Session measures: $(psql -X -qAt -c 'SELECT count(*) FROM measure_events') deliveries (median of $rounds rounds)"
psql -X -v ON_ERROR_STOP=1 <<'SQL'
WITH medians AS (
	SELECT variant, count(*) AS rounds, max(events) AS events,
		   percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) AS median_s,
		   percentile_cont(0.5) WITHIN GROUP (ORDER BY cpu_seconds) AS median_cpu_s
	FROM measure_runs GROUP BY variant)
SELECT variant, rounds, events, round(median_s::numeric, 2) AS median_s,
	   round((events / median_s)::numeric) AS events_per_s,
	   round((median_s / CASE WHEN variant LIKE 'GROUP BY%'
							  THEN (SELECT median_s FROM medians WHERE variant = 'GROUP BY user_id: sql')
							  ELSE (SELECT median_s FROM medians WHERE variant = 'no measures') END)::numeric, 2)
		 AS time_ratio,
	   round(median_cpu_s::numeric, 2) AS median_cpu_s,
	   round((median_cpu_s / (SELECT median_cpu_s FROM medians WHERE variant = 'no measures'))::numeric, 2)
		 AS cpu_ratio
FROM medians ORDER BY variant DESC;
SQL
