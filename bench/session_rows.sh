#!/usr/bin/env bash
# One row per session, and every event labelled with its session, on events
# spread uniformly over a week (most sessions have one or two events): the
# plain GROUP BY user_id with count/min/max as the floor, session_rows() of
# session_set(), unnest() of sessions(), and the SQL idiom (LAG + running
# SUM).  The three ways to sessions are checked to agree before timing.
#
#   make bench BENCH=session_rows        (USERS=100000 EVENTS=10000000 ROUNDS=3)
set -euo pipefail
cd "$(dirname "$0")/.."
users=${USERS:-100000}
events=${EVENTS:-10000000}
rounds=${ROUNDS:-3}

psql -X -q -v ON_ERROR_STOP=1 <<SQL
CREATE EXTENSION IF NOT EXISTS sessionize;
DROP TABLE IF EXISTS bench_uniform;
SELECT setseed(0.5);
-- Stored in time order, as events are appended.
CREATE UNLOGGED TABLE bench_uniform AS
SELECT (random() * ($users - 1))::bigint + 1 AS user_id,
	   timestamptz '2024-01-01' + random() * interval '7 days' AS ts
FROM generate_series(1, $events)
ORDER BY ts;
VACUUM ANALYZE bench_uniform;
SELECT count(*) AS events, count(DISTINCT user_id) AS users,
	   pg_size_pretty(pg_relation_size('bench_uniform')) AS table_size FROM bench_uniform;
SQL

psql -X -q -v ON_ERROR_STOP=1 <<SQL
\i bench/measure.sql
SET work_mem = '256MB';
-- Every query reads each column of its rows (sum, min, max), so the planner
-- drops no aggregate it times and no query pays for building whole rows.
INSERT INTO bench_queries VALUES
 (1, 'GROUP BY user_id: count, min, max', \$q\$
	SELECT count(*), sum(events), min(started_at), max(ended_at)
	FROM (SELECT user_id, count(*) AS events, min(ts) AS started_at, max(ts) AS ended_at
		  FROM bench_uniform GROUP BY user_id) x \$q\$),
 (2, 'session_rows(session_set())', \$q\$
	SELECT count(*), sum(r.events), min(r.started_at), max(r.ended_at)
	FROM (SELECT user_id, sessionize.session_set(ts, '30 minutes') AS s
		  FROM bench_uniform GROUP BY user_id) g,
		 sessionize.session_rows(g.s) r \$q\$),
 (3, 'unnest(sessions())', \$q\$
	SELECT count(*), sum(s.events), min(s.started_at), max(s.ended_at)
	FROM (SELECT user_id, sessionize.sessions(ts, '30 minutes') AS a
		  FROM bench_uniform GROUP BY user_id) g,
		 unnest(g.a) s \$q\$),
 (4, 'SQL idiom (LAG + SUM, GROUP BY)', \$q\$
	SELECT count(*), sum(s.events), min(s.started_at), max(s.ended_at) FROM (
	  SELECT user_id, sid, min(ts) AS started_at, max(ts) AS ended_at, count(*) AS events
	  FROM (SELECT user_id, ts, sum(is_new) OVER (PARTITION BY user_id ORDER BY ts ROWS UNBOUNDED PRECEDING) AS sid
			FROM (SELECT user_id, ts,
						 CASE WHEN ts - lag(ts) OVER (PARTITION BY user_id ORDER BY ts) <= interval '30 minutes'
							  THEN 0 ELSE 1 END AS is_new
				  FROM bench_uniform) marked) numbered
	  GROUP BY user_id, sid) s \$q\$);
UPDATE bench_queries SET parallel_workers = 0;
INSERT INTO bench_queries
SELECT position + 4, name || ', 2 workers', query, 2 FROM bench_queries;

-- The three ways to sessions agree before anything is timed.
DO \$\$
DECLARE a text; b text; c text;
BEGIN
	SELECT count(*) || ' sessions, ' || sum(r.events) || ' events' INTO a
	FROM (SELECT user_id, sessionize.session_set(ts, '30 minutes') AS s FROM bench_uniform GROUP BY user_id) g,
		 sessionize.session_rows(g.s) r;
	SELECT count(*) || ' sessions, ' || sum(s.events) || ' events' INTO b
	FROM (SELECT user_id, sessionize.sessions(ts, '30 minutes') AS a FROM bench_uniform GROUP BY user_id) g,
		 unnest(g.a) s;
	SELECT count(*) || ' sessions, ' || sum(events) || ' events' INTO c
	FROM (SELECT user_id, sid, count(*) AS events
		  FROM (SELECT user_id, ts, sum(is_new) OVER (PARTITION BY user_id ORDER BY ts ROWS UNBOUNDED PRECEDING) AS sid
				FROM (SELECT user_id, ts,
							 CASE WHEN ts - lag(ts) OVER (PARTITION BY user_id ORDER BY ts) <= interval '30 minutes'
								  THEN 0 ELSE 1 END AS is_new
					  FROM bench_uniform) marked) numbered
		  GROUP BY user_id, sid) s;
	IF a IS DISTINCT FROM b OR a IS DISTINCT FROM c THEN
		RAISE EXCEPTION 'results differ: % / % / %', a, b, c;
	END IF;
	RAISE NOTICE 'all three agree: %', a;
END \$\$;

SELECT pg_temp.bench_run($rounds);
\echo
\echo One row per session, $events events of $users users, median of $rounds rounds:
SELECT name, runs, median_s, best_s,
	   round(median_s / (SELECT median_s FROM pg_temp.bench_report WHERE name = 'GROUP BY user_id: count, min, max'), 2) AS vs_group_by,
	   round((SELECT median_s FROM pg_temp.bench_report WHERE name = 'SQL idiom (LAG + SUM, GROUP BY)') / median_s, 2) AS speedup_vs_idiom
FROM pg_temp.bench_report;

\set table bench_uniform
\set workers 0
\set rounds $rounds
\i bench/label_events.sql
SQL
