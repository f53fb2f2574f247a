#!/usr/bin/env bash
# User profiles: what keeping one costs a pipeline, and what reading one
# costs a reader.
#
# Ingest: 200k deliveries of 20k users (10% re-delivered) over 10 days,
# each with two categorical fields (color of 12 values, make of 40) and two
# numeric ones (price, mileage), drained by run_pipeline(name, 10000) with
# sessions only and with sessions plus a profile of those four dimensions,
# round-robin; medians are reported, and their ratio.
#
# Serving: a profile holding KEYS keys x DAYS days (1M x 30 by default,
# 30M key-days of 3 colors, 2 makes and both numeric dimensions each),
# written in bulk with SQL (no batch would make them in minutes), then
# profile() over the 30 days with a half life and a prior, for 10,000
# random keys, timed by pgbench -M prepared from its per-transaction log
# (-l), three runs; p50 and p99 of each run are reported, beside those of
# a query of about the same CPU time that reads no table, timed alike (what
# the machine's scheduling alone costs), and of the same calls timed inside
# the server by clock_timestamp().
#
#   make bench BENCH=profiles   (EVENTS=200000 USERS=20000 ROUNDS=3 KEYS=1000000 DAYS=30 LOOKUPS=10000;
#                                ROUNDS=0 times the serving alone)
set -euo pipefail
cd "$(dirname "$0")/.."
events=${EVENTS:-200000}
users=${USERS:-20000}
rounds=${ROUNDS:-3}
keys=${KEYS:-1000000}
days=${DAYS:-30}
lookups=${LOOKUPS:-10000}
pgbench=$(command -v pgbench || echo "$("${PG_CONFIG:-pg_config}" --bindir)/pgbench")
work=$(mktemp -d /tmp/sessionize-bench.XXXXXX)
chmod 777 "$work"

psql -X -q -v ON_ERROR_STOP=1 <<SQL
CREATE EXTENSION IF NOT EXISTS sessionize;
DROP TABLE IF EXISTS profile_runs, profile_events;
CREATE TABLE profile_runs (variant text, round int, events bigint, seconds float8);
SELECT setseed(0.5);
CREATE UNLOGGED TABLE profile_events AS
SELECT row_number() OVER (ORDER BY position) AS position, user_id, ts, color, make, price, mileage
FROM (SELECT e.*, extract(epoch FROM ts) + CASE WHEN copy = 2 THEN random() * 600 ELSE 0 END AS position
	  FROM (SELECT (n % $users) AS user_id,
				   timestamptz '2024-01-01' + (n / $users) * (interval '10 days' / ($events / $users))
				   + (n % $users) * interval '1 ms' AS ts,
				   'color' || (n * 7 % 12) AS color,
				   'make' || (n * 13 % 40) AS make,
				   (5000 + n * 37 % 45000)::numeric AS price,
				   CASE WHEN n % 9 <> 0 THEN n * 101 % 200000 END AS mileage
			FROM generate_series(0, $events * 10 / 11 - 1) n) e,
		   LATERAL (SELECT 1 AS copy UNION ALL SELECT 2 WHERE random() < 0.1 AND e.user_id >= 0) copies) all_events;
VACUUM ANALYZE profile_events;

CREATE OR REPLACE PROCEDURE profile_drain(variant text, round int)
LANGUAGE plpgsql AS \$\$
DECLARE
	started timestamptz;
	done bigint;
BEGIN
	DROP TABLE IF EXISTS profile_in;
	IF EXISTS (SELECT FROM sessionize.pipelines WHERE name = 'profiled') THEN
		PERFORM sessionize.drop_pipeline('profiled');
	END IF;
	CREATE TABLE profile_in (id bigserial, user_id int, ts timestamptz, color text, make text, price numeric,
							 mileage int);
	PERFORM sessionize.create_pipeline('profiled', 'profile_in', 'user_id', 'ts', '30 minutes',
		fingerprint_exclude => '{id}');
	IF variant = 'pipeline with a profile' THEN
		PERFORM sessionize.add_profile('profiled', 'p', '{color,make}', '{price,mileage}');
	END IF;
	PERFORM sessionize.pause_pipeline('profiled');
	INSERT INTO profile_in (user_id, ts, color, make, price, mileage)
	SELECT user_id, ts, color, make, price, mileage FROM profile_events ORDER BY position;
	COMMIT;
	ANALYZE profile_in;
	CHECKPOINT;
	started := clock_timestamp();
	LOOP
		SELECT consumed INTO done FROM sessionize.run_pipeline('profiled', 10000);
		COMMIT;
		EXIT WHEN done = 0;
	END LOOP;
	INSERT INTO profile_runs
	SELECT variant, round, consumed, extract(epoch FROM clock_timestamp() - started)
	FROM sessionize.pipeline_state WHERE pipeline = 'profiled';
	COMMIT;
END \$\$;
SQL
for round in $(seq 1 "$rounds"); do
	for variant in 'pipeline without a profile' 'pipeline with a profile'; do
		psql -X -q -v ON_ERROR_STOP=1 -c "CALL profile_drain('$variant', $round)"
	done
done
# the last drain kept a profile: it equals a GROUP BY over the distinct events
[ "$rounds" -eq 0 ] || psql -X -q -v ON_ERROR_STOP=1 <<'SQL'
DO $$
BEGIN
	IF EXISTS ((SELECT key, day, dimension, value, count FROM sessionize.profiled_profile_p
				EXCEPT ALL
				SELECT user_id, (ts AT TIME ZONE 'UTC')::date, d.dimension, d.value, count(*)
				FROM (SELECT DISTINCT user_id, ts, color, make, price, mileage FROM profile_events) e,
					 LATERAL (VALUES ('color', color), ('make', make)) d(dimension, value)
				GROUP BY 1, 2, 3, 4)
			   UNION ALL
			   (SELECT user_id, (ts AT TIME ZONE 'UTC')::date, d.dimension, d.value, count(*)
				FROM (SELECT DISTINCT user_id, ts, color, make, price, mileage FROM profile_events) e,
					 LATERAL (VALUES ('color', color), ('make', make)) d(dimension, value)
				GROUP BY 1, 2, 3, 4
				EXCEPT ALL
				SELECT key, day, dimension, value, count FROM sessionize.profiled_profile_p)) THEN
		RAISE EXCEPTION 'the profile differs from a GROUP BY over the distinct events';
	END IF;
END $$;
SQL
[ "$rounds" -eq 0 ] || psql -X -q -c "SELECT sessionize.drop_pipeline('profiled')" -c "DROP TABLE profile_in" >/dev/null

# Serving: the days of KEYS keys written in bulk.  Value ids 1-12 are the
# colors, 13-52 the makes; each key-day holds 3 colors and 2 makes, and
# the moments of a few prices and mileages.
psql -X -q -v ON_ERROR_STOP=1 <<SQL
DROP TABLE IF EXISTS served_in;
CREATE TABLE served_in (user_id bigint, ts timestamptz, color text, make text, price numeric, mileage int);
SELECT sessionize.create_pipeline('served', 'served_in', 'user_id', 'ts', '30 minutes');
SELECT sessionize.add_profile('served', 'p', '{color,make}', '{price,mileage}');
INSERT INTO sessionize.served_profile_p_values (id, dimension, value)
SELECT i, 'color', 'color' || i FROM generate_series(1, 12) i
UNION ALL SELECT 12 + i, 'make', 'make' || i FROM generate_series(1, 40) i;
SELECT setval(pg_get_serial_sequence('sessionize.served_profile_p_values', 'id'), 52);
ALTER TABLE sessionize.served_profile_p_days DROP CONSTRAINT served_profile_p_days_pkey;
INSERT INTO sessionize.served_profile_p_days (key, day, counts, moments)
SELECT k, date '2024-01-01' + d,
	   ARRAY[1 + (k + d) % 4, 1 + (k * d) % 3, 5 + (k + d) % 4, 2, 9 + (k + 2 * d) % 4, 1 + k % 5,
			 13 + (k + d) % 20, 1 + d % 2, 33 + (k * 3 + d) % 20, 1],
	   ARRAY[3, 3 * (10000 + k % 20000), 4.5e6, 8000, 12000 + k % 20000,
			 2, 2 * (50000 + d * 100), 2e7, 40000, 60000 + d * 200]::float8[]
FROM generate_series(0, $keys - 1) k, generate_series(0, $days - 1) d
ORDER BY k, d;
ALTER TABLE sessionize.served_profile_p_days ADD PRIMARY KEY (key, day);
INSERT INTO sessionize.served_profile_p_population (day, counts)
SELECT d.day, array_agg(x ORDER BY p.id, o)
FROM (SELECT date '2024-01-01' + g AS day FROM generate_series(0, $days - 1) g) d,
	 LATERAL (SELECT id, ($keys * 3 / 12 + id * 97)::bigint AS count FROM generate_series(1, 52) id) p,
	 LATERAL (VALUES (1, p.id::bigint), (2, p.count)) v(o, x)
GROUP BY d.day;
VACUUM ANALYZE sessionize.served_profile_p_days, sessionize.served_profile_p_population;
SQL
size=$(psql -X -qAt -c "SELECT pg_size_pretty(pg_total_relation_size('sessionize.served_profile_p_days'))")
heap_per_row=$(psql -X -qAt -c "SELECT round(pg_relation_size('sessionize.served_profile_p_days')::numeric / count(*), 1) FROM sessionize.served_profile_p_days")
total_per_row=$(psql -X -qAt -c "SELECT round(pg_total_relation_size('sessionize.served_profile_p_days')::numeric / count(*), 1) FROM sessionize.served_profile_p_days")
row_bytes=$(psql -X -qAt -c "SELECT round(avg(pg_column_size(d.*)), 1) FROM (SELECT * FROM sessionize.served_profile_p_days LIMIT 100000) d")

last_day=$(psql -X -qAt -c "SELECT date '2024-01-01' + $days - 1")
cat >"$work/profile.sql" <<PGBENCH
\set k random(0, $((keys - 1)))
SELECT sessionize.profile('served', 'p', :k::bigint, '2024-01-01', '$last_day', '7 days', 5);
PGBENCH
# one warm-up pass over the table, then three timed runs
psql -X -q -c "SELECT count(*) FROM sessionize.served_profile_p_days" >/dev/null
echo
echo "== Profiles: $(psql -X -qAt -c 'SELECT count(*) FROM profile_events') deliveries (median of $rounds rounds); profile() over $days days of $keys keys ($size, $heap_per_row bytes of heap and $total_per_row with the index per key-day; a row is $row_bytes bytes)"
psql -X -v ON_ERROR_STOP=1 <<'SQL'
WITH medians AS (
	SELECT variant, count(*) AS rounds, max(events) AS events,
		   percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) AS median_s
	FROM profile_runs GROUP BY variant)
SELECT variant, rounds, events, round(median_s::numeric, 2) || ' s' AS median,
	   round((events / median_s)::numeric) AS events_per_s,
	   round(((SELECT median_s FROM medians WHERE variant = 'pipeline without a profile') / median_s)::numeric, 2)
		   AS throughput_ratio
FROM medians ORDER BY variant DESC;
SQL
echo 'SELECT sum(x) FROM generate_series(1, 800) x;' >"$work/baseline.sql"
echo "| run | query | lookups | p50 | p99 | mean |"
echo "|---|---|---|---|---|---|"
for run in 1 2 3; do
	for script in profile baseline; do
		rm -f "$work"/pgbench_log.*
		(cd "$work" && "$pgbench" -n -M prepared -f "$script.sql" -t "$lookups" -c 1 -l >/dev/null 2>"$work/pgbench.err") ||
			{ cat "$work/pgbench.err"; exit 1; }
		# the log's third column is the latency in microseconds
		sort -n -k3,3 "$work"/pgbench_log.* | awk -v run="$run" -v query="$script" '
			{ latency[NR] = $3; sum += $3 }
			END {
				p50 = latency[int(NR * 0.50 + 0.5)]; p99 = latency[int(NR * 0.99 + 0.5)];
				printf "| %d | %s (pgbench) | %d | %.3f ms | %.3f ms | %.3f ms |\n", run, query == "profile" ? "profile()" : "sum over generate_series(1, 800)", NR, p50 / 1000, p99 / 1000, sum / NR / 1000
			}'
	done
	psql -X -qAt -v ON_ERROR_STOP=1 <<SQL
CREATE TEMP TABLE latencies (us float8);
DO \$\$
DECLARE
	started timestamptz;
	result jsonb;
BEGIN
	FOR i IN 1..$lookups LOOP
		started := clock_timestamp();
		result := sessionize.profile('served', 'p', (random() * ($keys - 1))::bigint, '2024-01-01', '$last_day', '7 days', 5);
		INSERT INTO latencies VALUES (extract(epoch FROM clock_timestamp() - started) * 1e6);
	END LOOP;
END \$\$;
SELECT format('| %s | profile() (in the server) | %s | %s ms | %s ms | %s ms |', $run, count(*),
			  round((percentile_cont(0.5) WITHIN GROUP (ORDER BY us) / 1000)::numeric, 3),
			  round((percentile_cont(0.99) WITHIN GROUP (ORDER BY us) / 1000)::numeric, 3),
			  round((avg(us) / 1000)::numeric, 3))
FROM latencies;
SQL
done
psql -X -q -c "SELECT sessionize.drop_pipeline('served')" -c "DROP TABLE served_in, profile_events, profile_runs" \
	-c "DROP PROCEDURE profile_drain(text, int)" >/dev/null
rm -rf "$work"
