#!/usr/bin/env bash
# Multi-slot upserts against the naive (and wrong under re-delivery) upsert
# INSERT ... ON CONFLICT DO UPDATE SET sent = sent + EXCLUDED.sent, in one run.
# 100k messages for 20k campaign sends, 10% of them re-delivered.
#
#   make bench BENCH=slots           (MESSAGES=100000 ROUNDS=3)
set -euo pipefail
cd "$(dirname "$0")/.."
messages=${MESSAGES:-100000}
rounds=${ROUNDS:-3}

psql -X -q -v ON_ERROR_STOP=1 <<SQL
CREATE EXTENSION IF NOT EXISTS sessionize;
DROP TABLE IF EXISTS bench_messages, bench_naive, bench_single, bench_single_overflow, bench_single_conflicts,
	bench_many, bench_many_overflow, bench_many_conflicts;
DELETE FROM sessionize.slot_tables WHERE table_id::text LIKE 'bench_%';
SELECT setseed(0.9);
CREATE UNLOGGED TABLE bench_messages AS
SELECT row_number() OVER (ORDER BY random()) AS arrival, id, day, sent
FROM (SELECT (n % ($messages / 5)) AS id, date '2024-01-01' + (n / ($messages / 5))::int AS day, 100 + n % 7 AS sent
	  FROM generate_series(0, $messages * 9 / 10 - 1) n
	  UNION ALL
	  SELECT (n % ($messages / 5)), date '2024-01-01' + (n / ($messages / 5))::int, 100 + n % 7
	  FROM generate_series(0, $messages / 10 - 1) n) m;
CREATE TABLE bench_naive (id int PRIMARY KEY, sent bigint);
SELECT sessionize.create_slot_table('bench_single', '{id}', '{int}', 'date', 'int', slots => 3, value_name => 'sent', slot_key_name => 'day');
SELECT sessionize.create_slot_table('bench_many', '{id}', '{int}', 'date', 'int', slots => 3, value_name => 'sent', slot_key_name => 'day');
VACUUM ANALYZE bench_messages;
SQL

psql -X -q -v ON_ERROR_STOP=1 <<SQL
\i bench/measure.sql
INSERT INTO bench_queries (position, name, query) VALUES
 (1, 'naive upsert, batch per key', \$q\$ INSERT INTO bench_naive SELECT id, sum(sent) FROM bench_messages GROUP BY id
								   ON CONFLICT (id) DO UPDATE SET sent = bench_naive.sent + EXCLUDED.sent \$q\$),
 (2, 'naive upsert per message', \$q\$ SELECT pg_temp.naive_per_message() \$q\$),
 (3, 'slot_upsert() per message', \$q\$ SELECT count(sessionize.slot_upsert('bench_single', id, day, sent))
								   FROM (SELECT * FROM bench_messages ORDER BY arrival) m \$q\$),
 (4, 'slot_upsert_many()', \$q\$ SELECT sessionize.slot_upsert_many('bench_many', array_agg(id ORDER BY arrival),
								   array_agg(day ORDER BY arrival), array_agg(sent ORDER BY arrival)) FROM bench_messages \$q\$);
CREATE FUNCTION pg_temp.naive_per_message() RETURNS void LANGUAGE plpgsql AS \$\$
DECLARE m record;
BEGIN
	FOR m IN SELECT id, sent FROM bench_messages ORDER BY arrival LOOP
		INSERT INTO bench_naive VALUES (m.id, m.sent)
		ON CONFLICT (id) DO UPDATE SET sent = bench_naive.sent + EXCLUDED.sent;
	END LOOP;
END \$\$;
-- Every round starts from empty tables, so that each does the same work.
CREATE OR REPLACE FUNCTION pg_temp.bench_run_fresh(rounds int) RETURNS void LANGUAGE plpgsql AS \$\$
DECLARE q record; started timestamptz;
BEGIN
	FOR r IN 1..rounds LOOP
		FOR q IN SELECT * FROM bench_queries ORDER BY position LOOP
			TRUNCATE bench_naive, bench_single, bench_single_overflow, bench_many, bench_many_overflow;
			started := clock_timestamp();
			EXECUTE q.query;
			INSERT INTO bench_times VALUES (q.name, r, extract(epoch FROM clock_timestamp() - started));
		END LOOP;
	END LOOP;
END \$\$;
SELECT pg_temp.bench_run_fresh($rounds);
\echo
\echo $messages messages (10% re-delivered) for $(( messages / 5 )) keys, median of $rounds rounds:
SELECT name, median_s, round(($messages / median_s)::numeric) AS messages_per_second,
	   round(median_s / (SELECT median_s FROM pg_temp.bench_report LIMIT 1), 2) AS time_vs_naive
FROM pg_temp.bench_report;
\echo Totals: the naive upsert counts every re-delivery again; the slot tables do not.
SELECT (SELECT sum(sent) FROM bench_messages) AS naive_total,
	   (SELECT sum(computed) FROM bench_many) AS slot_total,
	   (SELECT sum(sent) FROM (SELECT DISTINCT id, day, sent FROM bench_messages) d) AS true_total;
SQL
