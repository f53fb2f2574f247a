-- Properties of the session functions on generated data, each checked against
-- an independent reference: the classic SQL idiom, a recursive walk, a
-- shuffled input, a serial plan.
\set ON_ERROR_STOP 1
\set QUIET 1
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS sessionize;
RESET client_min_messages;
BEGIN;
SELECT plan(20);
SET LOCAL timezone = 'UTC';
SELECT setseed(0.42);

-- 30k events for 400 keys over three days: bursts, pauses, exact-gap steps,
-- ties and some far outliers.
CREATE TABLE events AS
SELECT (random() * 399)::int AS k,
	   timestamptz '2024-03-01' + make_interval(secs => CASE
			WHEN random() < 0.1 THEN (random() * 30)::int * 1800      -- exact multiples of the gap
			WHEN random() < 0.05 THEN 86400 * 2 + random() * 86400
			ELSE random() * 86400 END) AS ts,
	   make_interval(mins => 5 + (random() * 60)::int) AS dynamic_gap
FROM generate_series(1, 30000);
INSERT INTO events SELECT k, NULL, dynamic_gap FROM events LIMIT 50;
ANALYZE events;

-- 1. session_id equals the LAG + running SUM idiom (constant gap).
SELECT bag_eq(
	$$ SELECT k, ts, sessionize.session_id(ts, '30 minutes') OVER (PARTITION BY k ORDER BY ts)
	   FROM events WHERE ts IS NOT NULL $$,
	$$ SELECT k, ts, sum(is_new) OVER (PARTITION BY k ORDER BY ts ROWS UNBOUNDED PRECEDING)
	   FROM (SELECT k, ts, CASE WHEN ts - lag(ts) OVER (PARTITION BY k ORDER BY ts) <= interval '30 minutes'
								THEN 0 ELSE 1 END AS is_new
			 FROM events WHERE ts IS NOT NULL) marked $$,
	'session_id equals the LAG + running SUM idiom');

-- 2. With a dynamic gap it equals the running-max idiom: an event starts a
-- session iff it is later than every earlier ts + gap.
SELECT bag_eq(
	$$ SELECT k, ts, sessionize.session_id(ts, dynamic_gap) OVER (PARTITION BY k ORDER BY ts)
	   FROM events WHERE ts IS NOT NULL $$,
	$$ SELECT k, ts, max(sid) OVER (PARTITION BY k ORDER BY ts)
	   FROM (SELECT k, ts, sum(is_new) OVER (PARTITION BY k ORDER BY ts RANGE UNBOUNDED PRECEDING) AS sid
			 FROM (SELECT k, ts, CASE WHEN ts <= max(ts + dynamic_gap) OVER (PARTITION BY k ORDER BY ts
										ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
									  THEN 0 ELSE 1 END AS is_new
				   FROM events WHERE ts IS NOT NULL) marked) numbered $$,
	'session_id with a dynamic gap equals the running-max idiom');

-- 3. With max_duration it equals a recursive walk over each key's events.
CREATE TABLE few AS SELECT * FROM events WHERE k < 20 AND ts IS NOT NULL;
SELECT bag_eq(
	$$ SELECT k, ts, sessionize.session_id(ts, '30 minutes', '75 minutes') OVER (PARTITION BY k ORDER BY ts)
	   FROM few $$,
	$$ WITH RECURSIVE ordered AS (
		   SELECT k, ts, row_number() OVER (PARTITION BY k ORDER BY ts) AS n FROM few),
	   walk AS (
		   SELECT k, ts, n, 1::bigint AS sid, ts AS started, ts + interval '30 minutes' AS expires
		   FROM ordered WHERE n = 1
		   UNION ALL
		   SELECT o.k, o.ts, o.n,
				  CASE WHEN o.ts <= w.expires AND o.ts - w.started <= interval '75 minutes' THEN w.sid ELSE w.sid + 1 END,
				  CASE WHEN o.ts <= w.expires AND o.ts - w.started <= interval '75 minutes' THEN w.started ELSE o.ts END,
				  CASE WHEN o.ts <= w.expires AND o.ts - w.started <= interval '75 minutes'
					   THEN greatest(w.expires, o.ts + interval '30 minutes') ELSE o.ts + interval '30 minutes' END
		   FROM walk w JOIN ordered o ON o.k = w.k AND o.n = w.n + 1)
	   SELECT k, ts, sid FROM walk $$,
	'session_id with max_duration equals a recursive walk');

-- 4-6. The three faces agree: sessions() equals the sessions read off the
-- window functions, for a constant gap, a dynamic gap and max_duration.
SELECT bag_eq(
	$$ SELECT k, (s).started_at, (s).ended_at, (s).events
	   FROM (SELECT k, unnest(sessionize.sessions(ts, '30 minutes')) AS s FROM events GROUP BY k) x $$,
	$$ SELECT k, min(ts), max(ts), count(*)
	   FROM (SELECT k, ts, sessionize.session_start(ts, '30 minutes') OVER (PARTITION BY k ORDER BY ts) AS started
			 FROM events WHERE ts IS NOT NULL) w GROUP BY k, started $$,
	'sessions() agrees with session_start() (constant gap)');
SELECT bag_eq(
	$$ SELECT k, (s).started_at, (s).ended_at, (s).events
	   FROM (SELECT k, unnest(sessionize.sessions(ts, dynamic_gap)) AS s FROM events GROUP BY k) x $$,
	$$ SELECT k, min(ts), max(ts), count(*)
	   FROM (SELECT k, ts, sessionize.session_id(ts, dynamic_gap) OVER (PARTITION BY k ORDER BY ts) AS sid
			 FROM events WHERE ts IS NOT NULL) w GROUP BY k, sid $$,
	'sessions() agrees with session_id() (dynamic gap)');
SELECT bag_eq(
	$$ SELECT k, (s).started_at, (s).ended_at, (s).events
	   FROM (SELECT k, unnest(sessionize.sessions(ts, '30 minutes', '75 minutes')) AS s FROM events GROUP BY k) x $$,
	$$ SELECT k, min(ts), max(ts), count(*)
	   FROM (SELECT k, ts, sessionize.session_start(ts, '30 minutes', '75 minutes') OVER (PARTITION BY k ORDER BY ts) AS started
			 FROM events WHERE ts IS NOT NULL) w GROUP BY k, started $$,
	'sessions() agrees with session_start() (max_duration)');

-- 7. session_id numbers a key's sessions 1, 2, ... in time order.
SELECT is_empty(
	$$ SELECT k FROM (SELECT k, sessionize.session_id(ts, '30 minutes') OVER (PARTITION BY k ORDER BY ts) AS sid,
							 sessionize.session_start(ts, '30 minutes') OVER (PARTITION BY k ORDER BY ts) AS started
					  FROM events WHERE ts IS NOT NULL) w
	   GROUP BY k HAVING max(sid) <> count(DISTINCT started) OR min(sid) <> 1 $$,
	'session numbers are 1..n per key');

-- 8-10. sessions() depends only on the multiset of events, not on their order.
SELECT results_eq(
	$$ SELECT k, sessionize.sessions(ts, '30 minutes' ORDER BY random()) FROM events GROUP BY k ORDER BY k $$,
	$$ SELECT k, sessionize.sessions(ts, '30 minutes' ORDER BY ts) FROM events GROUP BY k ORDER BY k $$,
	'sessions() over shuffled input equals sessions() over sorted input');
SELECT results_eq(
	$$ SELECT k, sessionize.sessions(ts, dynamic_gap ORDER BY random()) FROM events GROUP BY k ORDER BY k $$,
	$$ SELECT k, sessionize.sessions(ts, dynamic_gap ORDER BY ts DESC) FROM events GROUP BY k ORDER BY k $$,
	'sessions() with a dynamic gap: shuffled equals reverse-sorted');
SELECT results_eq(
	$$ SELECT k, sessionize.sessions(ts, '30 minutes', '75 minutes' ORDER BY random()) FROM events GROUP BY k ORDER BY k $$,
	$$ SELECT k, sessionize.sessions(ts, '30 minutes', '75 minutes' ORDER BY ts) FROM events GROUP BY k ORDER BY k $$,
	'sessions() with max_duration: shuffled equals sorted');

-- 11. One big key (all events) exercises coalescing of many pieces.
SELECT results_eq(
	$$ SELECT sessionize.sessions(ts, '2 minutes' ORDER BY random()) FROM events $$,
	$$ SELECT array_agg(ROW(started, last, n)::sessionize.session ORDER BY started)
	   FROM (SELECT min(ts) AS started, max(ts) AS last, count(*) AS n
			 FROM (SELECT ts, sessionize.session_start(ts, '2 minutes') OVER (ORDER BY ts) AS s
				   FROM events WHERE ts IS NOT NULL) w GROUP BY s) g $$,
	'sessions() of one key with thousands of sessions equals the window function');

-- 12-18. A parallel plan with partial aggregation gives the serial result.
CREATE TEMP TABLE serial_result AS
	SELECT k, sessionize.sessions(ts, '30 minutes') AS s,
			  sessionize.sessions(ts, dynamic_gap) AS d,
			  sessionize.sessions(ts, '30 minutes', '75 minutes') AS m
	FROM events GROUP BY k;
CREATE TEMP TABLE serial_total AS SELECT sessionize.sessions(ts, '3 seconds') AS s FROM events;
SET LOCAL parallel_setup_cost = 0;
SET LOCAL parallel_tuple_cost = 0;
SET LOCAL min_parallel_table_scan_size = 0;
SET LOCAL max_parallel_workers_per_gather = 2;
SET LOCAL enable_hashagg = off;
-- Without the leader, both workers get rows, so partial states really merge.
SET LOCAL parallel_leader_participation = off;
CREATE FUNCTION pg_temp.plan_of(query text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE line text; plan text := '';
BEGIN
	FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || query LOOP plan := plan || line || E'\n'; END LOOP;
	RETURN plan;
END $$;
SELECT matches(
	pg_temp.plan_of('SELECT k, sessionize.sessions(ts, ''30 minutes'') FROM events GROUP BY k'),
	'Partial (Group|Hash)?Aggregate',
	'the planner chooses partial aggregation for sessions()');
SELECT matches(
	pg_temp.plan_of('SELECT sessionize.sessions(ts, ''3 seconds'') FROM events'),
	'Partial Aggregate',
	'the planner chooses partial aggregation for sessions() without GROUP BY');
-- pgTAP reads results through cursors, which never run in parallel, so the
-- parallel results are materialized by EXPLAIN ANALYZE CREATE TABLE AS, whose
-- plan also shows how many partial states reached the combine step.
CREATE FUNCTION pg_temp.partial_rows(query text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE plan json;
BEGIN
	EXECUTE 'EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) ' || query INTO plan;
	RETURN (plan -> 0 -> 'Plan' -> 'Plans' -> 0 ->> 'Actual Rows')::bigint;
END $$;
-- Whether several workers really get rows depends on how fast they start,
-- so the parallel plans are only held to the serial result; that partial
-- states are combined is shown deterministically by a partitionwise plan,
-- which aggregates each partition apart and combines their states.
SELECT pg_temp.partial_rows($$ CREATE TEMP TABLE parallel_result AS
	SELECT k, sessionize.sessions(ts, '30 minutes') AS s,
			  sessionize.sessions(ts, dynamic_gap) AS d,
			  sessionize.sessions(ts, '30 minutes', '75 minutes') AS m
	FROM events GROUP BY k $$);
SELECT pg_temp.partial_rows($$ CREATE TEMP TABLE parallel_total AS
	SELECT sessionize.sessions(ts, '3 seconds') AS s FROM events $$);
SET LOCAL max_parallel_workers_per_gather = 0;
SET LOCAL enable_partitionwise_aggregate = on;
CREATE TEMP TABLE partitioned_events (k int, ts timestamptz, dynamic_gap interval) PARTITION BY HASH (ts);
CREATE TEMP TABLE partitioned_events_0 PARTITION OF partitioned_events FOR VALUES WITH (MODULUS 3, REMAINDER 0);
CREATE TEMP TABLE partitioned_events_1 PARTITION OF partitioned_events FOR VALUES WITH (MODULUS 3, REMAINDER 1);
CREATE TEMP TABLE partitioned_events_2 PARTITION OF partitioned_events FOR VALUES WITH (MODULUS 3, REMAINDER 2);
INSERT INTO partitioned_events SELECT k, ts, dynamic_gap FROM events;
ANALYZE partitioned_events;
SELECT cmp_ok(
	pg_temp.partial_rows($$ CREATE TEMP TABLE partitionwise_result AS
		SELECT k, sessionize.sessions(ts, '30 minutes') AS s,
				  sessionize.sessions(ts, dynamic_gap) AS d,
				  sessionize.sessions(ts, '30 minutes', '75 minutes') AS m
		FROM partitioned_events GROUP BY k $$),
	'>', (SELECT count(DISTINCT k) FROM events),
	'partial states of several partitions reach the combine step');
SELECT results_eq(
	$$ SELECT k, s, d, m FROM partitionwise_result ORDER BY k $$,
	$$ SELECT k, s, d, m FROM serial_result ORDER BY k $$,
	'combined partial states give the serial result');
SELECT cmp_ok(
	pg_temp.partial_rows($$ CREATE TEMP TABLE partitionwise_total AS
		SELECT sessionize.sessions(ts, '3 seconds') AS s FROM partitioned_events $$),
	'>', 1::bigint,
	'partial states of one group from several partitions reach the combine step');
SELECT results_eq(
	$$ SELECT s FROM partitionwise_total $$,
	$$ SELECT s FROM serial_total $$,
	'combined partial states of one group give the serial result');
RESET parallel_leader_participation;
SELECT results_eq(
	$$ SELECT k, s, d, m FROM parallel_result ORDER BY k $$,
	$$ SELECT k, s, d, m FROM serial_result ORDER BY k $$,
	'a parallel plan gives the serial result');
SELECT results_eq(
	$$ SELECT s FROM parallel_total $$,
	$$ SELECT s FROM serial_total $$,
	'a parallel plan of one group gives the serial result');
SELECT ok(
	(SELECT count(*) FROM unnest((SELECT s FROM serial_total))) > 100,
	'the one-group case has many sessions to merge across workers');

SELECT * FROM finish();
ROLLBACK;
