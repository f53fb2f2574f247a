-- Shared by bench/sessions.sh and bench/session_rows.sh: labelling every
-- event of table :table (user_id, ts) with its session number, by the SQL
-- idiom and by session_id(), without and then with an index on (user_id, ts)
-- that delivers the order.  Expects bench/measure.sql loaded and :rounds and
-- :workers (max_parallel_workers_per_gather) set.
TRUNCATE bench_queries, bench_times;
INSERT INTO bench_queries
SELECT v.position, v.name, format(v.query, :'table'), :workers
FROM (VALUES
 (1, 'label events: SQL idiom', $q$
	SELECT max(sid) FROM (SELECT sum(is_new) OVER (PARTITION BY user_id ORDER BY ts ROWS UNBOUNDED PRECEDING) AS sid
		FROM (SELECT user_id, ts,
					 CASE WHEN ts - lag(ts) OVER (PARTITION BY user_id ORDER BY ts) <= interval '30 minutes'
						  THEN 0 ELSE 1 END AS is_new
			  FROM %I) marked) numbered $q$),
 (2, 'label events: session_id()', $q$
	SELECT max(sid) FROM (SELECT sessionize.session_id(ts, '30 minutes') OVER (PARTITION BY user_id ORDER BY ts) AS sid
		FROM %I) numbered $q$)) v(position, name, query);
SELECT pg_temp.bench_run(:rounds);
\echo
\echo Labelling events, no index:
SELECT * FROM pg_temp.bench_report;

SELECT format('CREATE INDEX ON %I (user_id, ts)', :'table') \gexec
SELECT format('VACUUM ANALYZE %I', :'table') \gexec
TRUNCATE bench_times;
SELECT pg_temp.bench_run(:rounds);
\echo
\echo Labelling events, index on (user_id, ts):
SELECT * FROM pg_temp.bench_report;
