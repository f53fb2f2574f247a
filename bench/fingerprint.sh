#!/usr/bin/env bash
# Fingerprints and the dedup memory.
#  1. fingerprint() against the SQL a user writes today, on 1M events of
#     10 keys: md5 of the jsonb text after removing a key (not Snowplow's
#     fingerprint), and the Snowplow definition spelled out in SQL.
#  2. first_seen() throughput with 20% duplicates, row by row and as a batch,
#     and the size of the memory per million fingerprints.
#
#   make bench BENCH=fingerprint        (EVENTS=1000000 ROUNDS=3)
set -euo pipefail
cd "$(dirname "$0")/.."
events=${EVENTS:-1000000}
rounds=${ROUNDS:-3}

psql -X -q -v ON_ERROR_STOP=1 <<SQL
CREATE EXTENSION IF NOT EXISTS sessionize;
DROP TABLE IF EXISTS bench_events;
SELECT setseed(0.3);
CREATE UNLOGGED TABLE bench_events AS
SELECT n, jsonb_build_object(
	'event_id', md5(n::text), 'app_id', 'shop', 'platform', 'web', 'event', 'page_view',
	'user_id', 'u' || (n % 100000), 'page_url', 'https://shop.example/p/' || (n % 5000),
	'referrer', 'https://search.example/?q=' || (n % 777), 'useragent', 'Mozilla/5.0 (X11; Linux x86_64)',
	'dvce_created_tstamp', '2024-05-01 10:00:00.' || (n % 1000), 'received_at', now()::text) AS event
FROM generate_series(1, $events) n;
VACUUM ANALYZE bench_events;
SQL

psql -X -q -v ON_ERROR_STOP=1 <<SQL
\i bench/measure.sql
INSERT INTO bench_queries (position, name, query) VALUES
 (1, 'SQL: md5(event - key)', \$q\$ SELECT max(md5((event - 'received_at')::text)) FROM bench_events \$q\$),
 (2, 'SQL: Snowplow definition', \$q\$ SELECT max((SELECT md5(string_agg(key || chr(31) || value || chr(31), '' ORDER BY key COLLATE "C"))
																 FROM jsonb_each_text(event - 'received_at'))) FROM bench_events \$q\$),
 (3, 'fingerprint()', \$q\$ SELECT max(sessionize.fingerprint(event, '{received_at}')) FROM bench_events \$q\$),
 (4, 'fingerprint_bytes()', \$q\$ SELECT count(sessionize.fingerprint_bytes(event, '{received_at}')) FROM bench_events \$q\$);
SELECT pg_temp.bench_run($rounds);
\echo
\echo Fingerprints of $events events of 10 keys, median of $rounds rounds (speed relative to md5 of the jsonb text):
SELECT * FROM pg_temp.bench_report;
SQL

# The dedup memory: 20% of the checks are re-deliveries, in random order.
psql -X -q -v ON_ERROR_STOP=1 <<SQL
DROP TABLE IF EXISTS bench_checks;
CREATE UNLOGGED TABLE bench_checks AS
SELECT row_number() OVER (ORDER BY random()) AS arrival, fingerprint
FROM (SELECT sessionize.fingerprint_bytes(event) AS fingerprint FROM bench_events WHERE n <= $events * 0.8
	  UNION ALL
	  SELECT sessionize.fingerprint_bytes(event) FROM bench_events WHERE n <= $events * 0.2) c;
VACUUM ANALYZE bench_checks;
TRUNCATE sessionize.seen_fingerprints;
\i bench/measure.sql
TRUNCATE bench_queries, bench_times;
INSERT INTO bench_queries (position, name, query) VALUES
 (1, 'first_seen() row by row', \$q\$ SELECT count(*) FILTER (WHERE sessionize.first_seen('bench-row', fingerprint))
									 FROM (SELECT fingerprint FROM bench_checks ORDER BY arrival) c \$q\$),
 (2, 'first_seen_many() one batch', \$q\$ SELECT cardinality(array_positions(
										 sessionize.first_seen_many('bench-batch', array_agg(fingerprint ORDER BY arrival)), true))
									 FROM bench_checks \$q\$);
-- Each round starts from an empty memory, so every round does the same work.
CREATE OR REPLACE FUNCTION pg_temp.bench_run_fresh(rounds int) RETURNS void LANGUAGE plpgsql AS \$\$
DECLARE q record; started timestamptz;
BEGIN
	FOR r IN 1..rounds LOOP
		FOR q IN SELECT * FROM bench_queries ORDER BY position LOOP
			TRUNCATE sessionize.seen_fingerprints;
			started := clock_timestamp();
			EXECUTE q.query;
			INSERT INTO bench_times VALUES (q.name, r, extract(epoch FROM clock_timestamp() - started));
		END LOOP;
	END LOOP;
END \$\$;
SELECT pg_temp.bench_run_fresh($rounds);
\echo
\echo Dedup checks: $(( events )) checks with 20% duplicates, median of $rounds rounds:
SELECT name, median_s, round(($events / median_s)::numeric) AS checks_per_second
FROM pg_temp.bench_report;
SELECT pg_catalog.count(*) AS remembered,
	   pg_size_pretty(pg_relation_size('sessionize.seen_fingerprints') * 1000000 / count(*)) AS table_per_million,
	   pg_size_pretty(pg_indexes_size('sessionize.seen_fingerprints') * 1000000 / count(*)) AS indexes_per_million
FROM sessionize.seen_fingerprints;
SQL
