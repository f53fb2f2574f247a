#!/usr/bin/env bash
# Session windows on a clickstream: the classic SQL idiom (LAG + running SUM,
# then GROUP BY) against session_id() and against the sessions() aggregate.
# All three produce the same sessions; each is checked against the idiom.
#
#   make bench BENCH=sessions            (USERS=100000 EVENTS_PER_USER=100 ROUNDS=3)
set -euo pipefail
cd "$(dirname "$0")/.."
users=${USERS:-100000}
per_user=${EVENTS_PER_USER:-100}
rounds=${ROUNDS:-3}

psql -X -q -v ON_ERROR_STOP=1 <<SQL
CREATE EXTENSION IF NOT EXISTS sessionize;
DROP TABLE IF EXISTS bench_clicks;
SELECT setseed(0.5);
-- Each user: sessions hours apart, events minutes apart, stored in arrival
-- (time) order across users.
CREATE UNLOGGED TABLE bench_clicks AS
SELECT user_id,
	   timestamptz '2024-01-01' + session * interval '5 hours' + (user_id % 3600) * interval '1 second'
		 + event * interval '3 minutes' + (random() * 150)::int * interval '1 second' AS ts
FROM generate_series(1, $users) AS user_id,
	 generate_series(0, $per_user / 10 - 1) AS session,
	 generate_series(0, 9) AS event
ORDER BY ts;
VACUUM ANALYZE bench_clicks;
SELECT count(*) AS events, count(DISTINCT user_id) AS users,
	   pg_size_pretty(pg_relation_size('bench_clicks')) AS table_size FROM bench_clicks;
SQL

psql -X -q -v ON_ERROR_STOP=1 <<SQL
\i bench/measure.sql
SET max_parallel_workers_per_gather = 2;
SET work_mem = '256MB';
INSERT INTO bench_queries VALUES
 (1, 'SQL idiom (LAG + SUM)', \$q\$
	SELECT count(*), sum(events) FROM (
	  SELECT user_id, sid, min(ts), max(ts), count(*) AS events
	  FROM (SELECT user_id, ts, sum(is_new) OVER (PARTITION BY user_id ORDER BY ts ROWS UNBOUNDED PRECEDING) AS sid
			FROM (SELECT user_id, ts,
						 CASE WHEN ts - lag(ts) OVER (PARTITION BY user_id ORDER BY ts) <= interval '30 minutes'
							  THEN 0 ELSE 1 END AS is_new
				  FROM bench_clicks) marked) numbered
	  GROUP BY user_id, sid) s \$q\$),
 (2, 'session_id() window', \$q\$
	SELECT count(*), sum(events) FROM (
	  SELECT user_id, sid, min(ts), max(ts), count(*) AS events
	  FROM (SELECT user_id, ts, sessionize.session_id(ts, '30 minutes') OVER (PARTITION BY user_id ORDER BY ts) AS sid
			FROM bench_clicks) numbered
	  GROUP BY user_id, sid) s \$q\$),
 (3, 'sessions() aggregate', \$q\$
	SELECT count(*), sum((s).events) FROM (
	  SELECT unnest(sessionize.sessions(ts, '30 minutes')) AS s FROM bench_clicks GROUP BY user_id) x \$q\$);
-- The same three without parallel workers.
INSERT INTO bench_queries
SELECT position + 3, name || ', serial', query, 0 FROM bench_queries;

-- The three agree before anything is timed.
DO \$\$
DECLARE a text; b text; c text;
BEGIN
	SET LOCAL max_parallel_workers_per_gather = 2;
	EXECUTE (SELECT 'SELECT row(r.*)::text FROM (' || query || ') r' FROM bench_queries WHERE position = 1) INTO a;
	EXECUTE (SELECT 'SELECT row(r.*)::text FROM (' || query || ') r' FROM bench_queries WHERE position = 2) INTO b;
	EXECUTE (SELECT 'SELECT row(r.*)::text FROM (' || query || ') r' FROM bench_queries WHERE position = 3) INTO c;
	IF a IS DISTINCT FROM b OR a IS DISTINCT FROM c THEN
		RAISE EXCEPTION 'results differ: % / % / %', a, b, c;
	END IF;
	RAISE NOTICE 'all three agree: (sessions, events) = %', a;
END \$\$;

SELECT pg_temp.bench_run($rounds);
\echo
\echo Sessions of $users users, $per_user events each, median of $rounds rounds:
SELECT * FROM pg_temp.bench_report;

\set table bench_clicks
\set workers 2
\set rounds $rounds
\i bench/label_events.sql
SQL
