-- session_set: the stored form of a key's sessions, session_rows(), merge(),
-- and sessions() whose state it is.
SET timezone = 'UTC';

CREATE TABLE set_clicks (user_id int, ts timestamptz);
INSERT INTO set_clicks VALUES
	(1, '2024-05-01 10:00'), (1, '2024-05-01 10:20'), (1, '2024-05-01 10:50'),
	(1, '2024-05-01 12:00'), (1, '2024-05-01 12:30'), (1, NULL),
	(2, '2024-05-01 09:00'), (2, '2024-05-01 09:00'), (2, '2024-05-01 09:45');

-- A set shows each session with the time it expires; session_rows() makes
-- one row per session.
SELECT user_id, sessionize.session_set(ts, '30 minutes') FROM set_clicks GROUP BY user_id ORDER BY user_id;
SELECT user_id, r.*
FROM (SELECT user_id, sessionize.session_set(ts, '30 minutes') AS s FROM set_clicks GROUP BY user_id) g,
	 sessionize.session_rows(g.s) r
ORDER BY user_id, r.started_at;

-- With max_duration the set keeps the events; session_rows() cuts them.
SELECT sessionize.session_set(ts, '30 minutes', '40 minutes') FROM set_clicks WHERE user_id = 1;
SELECT * FROM sessionize.session_rows(
	(SELECT sessionize.session_set(ts, '30 minutes', '40 minutes') FROM set_clicks WHERE user_id = 1));

-- NULLs: no rows give NULL, only NULL times an empty set, NULL no rows.
SELECT sessionize.session_set(ts, '30 minutes') FROM set_clicks WHERE false;
SELECT sessionize.session_set(ts, '30 minutes') FROM set_clicks WHERE ts IS NULL;
SELECT count(*) FROM sessionize.session_rows(NULL);
SELECT count(*) FROM sessionize.session_rows('{}');
SELECT sessionize.merge(s) FROM (VALUES (NULL::sessionize.session_set), (NULL)) v(s);
SELECT sessionize.merge(s) FROM (VALUES (NULL::sessionize.session_set), ('{}'), (NULL)) v(s);
SELECT sessionize.merge(s) FROM (SELECT NULL::sessionize.session_set WHERE false) v(s);

-- The same errors as sessions().
SELECT sessionize.session_set(ts, NULL) FROM set_clicks;
SELECT sessionize.session_set(ts, '1 month') FROM set_clicks;
SELECT sessionize.session_set(ts, '30 minutes', '10 minutes') FROM set_clicks;
SELECT sessionize.session_set(ts, '30 minutes') FROM (VALUES (timestamptz 'infinity')) v(ts);
SELECT sessionize.session_set(ts, '30 minutes', CASE WHEN ts < '2024-05-01 11:00' THEN interval '1 hour' END)
FROM set_clicks WHERE user_id = 1;

-- Support functions refuse to run outside an aggregate.
SELECT sessionize.sessionize_session_set_transition(NULL, timestamptz '2024-05-01', '1 hour');
SELECT sessionize.sessionize_session_set_combine(NULL, NULL);

-- Text form ------------------------------------------------------------------

-- Times are written in UTC whatever TimeZone and DateStyle say, and read
-- back to the same value.
SET timezone = 'America/New_York';
SET datestyle = 'SQL, DMY';
SELECT sessionize.session_set(ts, '30 minutes') FROM set_clicks WHERE user_id = 1;
SELECT s::text::sessionize.session_set::text = s::text AS round_trip
FROM (SELECT sessionize.session_set(ts, '30 minutes') AS s FROM set_clicks) x;
SELECT s::text::sessionize.session_set::text = s::text AS round_trip
FROM (SELECT sessionize.session_set(ts, '30 minutes', '40 minutes') AS s FROM set_clicks) x;
RESET datestyle;
SET timezone = 'UTC';

-- Input in any order, with any offset, is coalesced to the canonical set.
SELECT '{(2024-05-01 12:40:00+02,2024-05-01 12:40:00+02,2024-05-01 13:10:00+02,1),
		 (2024-05-01 10:00:00+00,2024-05-01 10:20:00+00,2024-05-01 10:50:00+00,2)}'::sessionize.session_set;
SELECT ' { } '::sessionize.session_set,
	   '{(2024-05-01 10:00:00.25+00,2024-05-01 10:00:00.25+00,infinity,1)}'::sessionize.session_set,
	   '{(0044-03-15 12:00:00+00 BC,0044-03-15 12:00:00+00 BC,0044-03-15 12:30:00+00 BC,1)}'::sessionize.session_set;
SELECT 'max_duration=2400000000us {(2024-05-01 10:20:00+00,2024-05-01 10:20:00+00,2024-05-01 10:50:00+00,1),
		(2024-05-01 10:00:00+00,2024-05-01 10:00:00+00,2024-05-01 10:30:00+00,1)}'::sessionize.session_set;

-- Garbage is refused with a reason, never guessed at.
SELECT ''::sessionize.session_set;
SELECT 'garbage'::sessionize.session_set;
SELECT '{'::sessionize.session_set;
SELECT '{}x'::sessionize.session_set;
SELECT '{(now,now,now,1)}'::sessionize.session_set;
SELECT '{(2024-05-01 10:00:00,2024-05-01 10:00:00+00,2024-05-01 10:30:00+00,1)}'::sessionize.session_set;
SELECT '{(2024-02-30 10:00:00+00,2024-02-30 10:00:00+00,2024-02-30 10:30:00+00,1)}'::sessionize.session_set;
SELECT '{(2024-05-01 25:00:00+00,2024-05-01 25:00:00+00,2024-05-01 25:30:00+00,1)}'::sessionize.session_set;
SELECT '{(2024-05-01 10:00:00.1234567+00,2024-05-01 10:00:00+00,2024-05-01 10:30:00+00,1)}'::sessionize.session_set;
SELECT '{(2024-05-01 10:00:00.+00,2024-05-01 10:00:00+00,2024-05-01 10:30:00+00,1)}'::sessionize.session_set;
SELECT '{(2024-05-01 10:00:00+0,2024-05-01 10:00:00+00,2024-05-01 10:30:00+00,1)}'::sessionize.session_set;
SELECT '{(2024-05-01 10:00:00+16,2024-05-01 10:00:00+16,2024-05-01 10:30:00+16,1)}'::sessionize.session_set;
SELECT '{(infinity,infinity,infinity,1)}'::sessionize.session_set;
SELECT '{(999999999-01-01 00:00:00+00,999999999-01-01 00:00:00+00,infinity,1)}'::sessionize.session_set;
SELECT '{(2024-05-01 10:30:00+00,2024-05-01 10:00:00+00,2024-05-01 11:00:00+00,2)}'::sessionize.session_set;
SELECT '{(2024-05-01 10:00:00+00,2024-05-01 10:30:00+00,2024-05-01 10:30:00+00,2)}'::sessionize.session_set;
SELECT '{(2024-05-01 10:00:00+00,2024-05-01 10:00:00+00,2024-05-01 10:30:00+00,0)}'::sessionize.session_set;
SELECT '{(2024-05-01 10:00:00+00,2024-05-01 10:20:00+00,2024-05-01 10:50:00+00,1)}'::sessionize.session_set;
SELECT '{(2024-05-01 10:00:00+00,2024-05-01 10:00:00+00,2024-05-01 10:30:00+00,-1)}'::sessionize.session_set;
SELECT '{(2024-05-01 10:00:00+00,2024-05-01 10:00:00+00,2024-05-01 10:30:00+00,9999999999999999999)}'::sessionize.session_set;
SELECT '{(2024-05-01 10:00:00+00,2024-05-01 10:00:00+00,2024-05-01 10:30:00+00,1) (2024-05-01 12:00:00+00,2024-05-01 12:00:00+00,2024-05-01 12:30:00+00,1)}'::sessionize.session_set;
SELECT '{(2024-05-01 10:00:00+00,2024-05-01 10:00:00+00,2024-05-01 10:30:00+00)}'::sessionize.session_set;
SELECT 'max_duration=0us {}'::sessionize.session_set;
SELECT 'max_duration=-5us {}'::sessionize.session_set;
SELECT 'max_duration=60 {}'::sessionize.session_set;
SELECT 'max_duration=600000000us {(2024-05-01 10:00:00+00,2024-05-01 10:00:00+00,2024-05-01 10:30:00+00,1)}'::sessionize.session_set;
SELECT 'max_duration=2400000000us {(2024-05-01 10:00:00+00,2024-05-01 10:00:00+00,2024-05-01 10:30:00+00,2)}'::sessionize.session_set;
-- Whatever the output writes reads back: 19-digit max_duration and event
-- counts, and a session that expires at the end of time.  Numbers beyond
-- int64 are refused, not wrapped.
SELECT sessionize.session_set(ts, '1 hour', '2000000000 hours')::text::sessionize.session_set
FROM (VALUES (timestamptz '2024-05-01 10:00:00+00')) v(ts);
SELECT sessionize.merge(s)::text::sessionize.session_set
FROM (VALUES ('{(2024-05-01 10:00:00+00,2024-05-01 11:00:00+00,2024-05-01 11:30:00+00,999999999999999999)}'::sessionize.session_set),
			 ('{(2024-05-01 10:00:00+00,2024-05-01 11:00:00+00,2024-05-01 11:30:00+00,999999999999999999)}')) v(s);
SELECT sessionize.merge(s)
FROM (VALUES ('{(2024-05-01 10:00:00+00,2024-05-01 11:00:00+00,2024-05-01 11:30:00+00,9223372036854775807)}'::sessionize.session_set),
			 ('{(2024-05-01 10:30:00+00,2024-05-01 10:30:00+00,2024-05-01 11:00:00+00,1)}')) v(s);
SELECT 'max_duration=9223372036854775807us {}'::sessionize.session_set::text::sessionize.session_set;
SELECT 'max_duration=9223372036854775808us {}'::sessionize.session_set;
SELECT '{(2024-05-01 10:00:00+00,2024-05-01 11:00:00+00,2024-05-01 11:30:00+00,9223372036854775808)}'::sessionize.session_set;
SELECT '{(2024-05-01 10:00:00+00,2024-05-01 11:00:00+00,2024-05-01 11:30:00+00,10000000000000000000)}'::sessionize.session_set;
SELECT sessionize.session_set(ts, '1 hour')::text::sessionize.session_set
FROM (VALUES (timestamptz '294276-12-31 23:00:00+00')) v(ts);
-- Events further apart than int64 counts are longer than any max_duration.
SELECT r.* FROM (SELECT sessionize.session_set(ts, '2562047788 hours', '2562047788 hours') s
				 FROM (VALUES (timestamptz '4713-01-01 00:00:00+00 BC'), ('100000-01-01 00:00:00+00'),
							  ('294276-12-31 00:00:00+00')) v(ts)) g,
		 sessionize.session_rows(g.s) r;

-- Binary form ------------------------------------------------------------------

CREATE TABLE stored_sets (id int, s sessionize.session_set);
INSERT INTO stored_sets
SELECT user_id, sessionize.session_set(ts, '30 minutes') FROM set_clicks GROUP BY user_id
UNION ALL
SELECT 3, sessionize.session_set(ts, '30 minutes', '40 minutes') FROM set_clicks;
-- files of this backend only, so that concurrent runs do not meet
SELECT '/tmp/sessionize_session_set_' || pg_backend_pid() || '.bin' AS copy_file \gset
COPY stored_sets TO :'copy_file' WITH (FORMAT binary);
CREATE TABLE copied_sets (LIKE stored_sets);
COPY copied_sets FROM :'copy_file' WITH (FORMAT binary);
SELECT id, s::text = (SELECT s::text FROM stored_sets t WHERE t.id = c.id) AS round_trip FROM copied_sets c ORDER BY id;

-- Untrusted bytes: a bytea column copied out in binary is its raw bytes,
-- which session_set's receive function then reads.
CREATE TABLE raw_sets (id int, b bytea);
INSERT INTO raw_sets
SELECT 1, '\x'::bytea
UNION ALL SELECT 2, '\x02'::bytea || substr(sessionize.sessionize_session_set_send(s), 2) FROM stored_sets WHERE id = 1
UNION ALL SELECT 3, substr(sessionize.sessionize_session_set_send(s), 1, 20) FROM stored_sets WHERE id = 1
UNION ALL SELECT 4, sessionize.sessionize_session_set_send(s) || '\x00'::bytea FROM stored_sets WHERE id = 1
UNION ALL SELECT 5, overlay(sessionize.sessionize_session_set_send(s) PLACING '\xffffffff'::bytea FROM 10) FROM stored_sets WHERE id = 1
UNION ALL SELECT 6, overlay(sessionize.sessionize_session_set_send(s) PLACING '\x0000000000000000'::bytea FROM 38) FROM stored_sets WHERE id = 1
UNION ALL SELECT 7, overlay(sessionize.sessionize_session_set_send(s) PLACING '\x7fffffffffffffff'::bytea FROM 14) FROM stored_sets WHERE id = 1
UNION ALL SELECT 8, overlay(sessionize.sessionize_session_set_send(s) PLACING '\xffffffffffffffff'::bytea FROM 2) FROM stored_sets WHERE id = 1
-- times that are neither infinite nor within the range of timestamptz
UNION ALL SELECT 9, overlay(sessionize.sessionize_session_set_send(s) PLACING '\x8000000000000001'::bytea FROM 14) FROM stored_sets WHERE id = 1
UNION ALL SELECT 10, overlay(sessionize.sessionize_session_set_send(s) PLACING '\x7ffffffffffffffe'::bytea FROM 30) FROM stored_sets WHERE id = 1;
CREATE TABLE received_sets (id int, s sessionize.session_set);
DO $$
DECLARE
	r record;
BEGIN
	FOR r IN SELECT id FROM raw_sets ORDER BY id LOOP
		EXECUTE format('COPY (SELECT id, b FROM raw_sets WHERE id = %s) TO %L WITH (FORMAT binary)',
					   r.id, '/tmp/sessionize_session_set_raw_' || pg_backend_pid() || '.bin');
		BEGIN
			EXECUTE format('COPY received_sets FROM %L WITH (FORMAT binary)',
						   '/tmp/sessionize_session_set_raw_' || pg_backend_pid() || '.bin');
			RAISE NOTICE 'bytes %: accepted', r.id;
		EXCEPTION WHEN OTHERS THEN
			RAISE NOTICE 'bytes %: % (%)', r.id, SQLERRM, SQLSTATE;
		END;
	END LOOP;
END $$;
SELECT count(*) AS accepted_garbage FROM received_sets;

-- Properties on random events ----------------------------------------------------

SELECT setseed(0.18);
CREATE TABLE random_clicks AS
SELECT (random() * 40)::int AS user_id,
	   timestamptz '2024-05-01' + random() * interval '3 days' AS ts,
	   CASE WHEN random() < 0.2 THEN interval '2 hours' ELSE interval '30 minutes' END AS gap
FROM generate_series(1, 4000);
INSERT INTO random_clicks SELECT user_id, NULL, '30 minutes' FROM random_clicks LIMIT 5;

-- session_rows(session_set()) equals unnest(sessions()), with a dynamic
-- gap and with max_duration.
SELECT count(*) AS differences FROM (
	(SELECT user_id, r.* FROM (SELECT user_id, sessionize.session_set(ts, gap) s FROM random_clicks GROUP BY user_id) g,
			sessionize.session_rows(g.s) r
	 EXCEPT ALL
	 SELECT user_id, u.* FROM (SELECT user_id, sessionize.sessions(ts, gap) a FROM random_clicks GROUP BY user_id) g,
			unnest(g.a) u)
	UNION ALL
	(SELECT user_id, u.* FROM (SELECT user_id, sessionize.sessions(ts, gap) a FROM random_clicks GROUP BY user_id) g,
			unnest(g.a) u
	 EXCEPT ALL
	 SELECT user_id, r.* FROM (SELECT user_id, sessionize.session_set(ts, gap) s FROM random_clicks GROUP BY user_id) g,
			sessionize.session_rows(g.s) r)) d;
SELECT count(*) AS differences FROM (
	SELECT user_id, r.* FROM (SELECT user_id, sessionize.session_set(ts, gap, '3 hours') s FROM random_clicks GROUP BY user_id) g,
		   sessionize.session_rows(g.s) r
	EXCEPT ALL
	SELECT user_id, u.* FROM (SELECT user_id, sessionize.sessions(ts, gap, '3 hours') a FROM random_clicks GROUP BY user_id) g,
		   unnest(g.a) u) d;

-- In the select list session_rows() gives the same rows, and in FROM it
-- gives them in time order.
CREATE TEMP VIEW random_sets AS
SELECT user_id, sessionize.session_set(ts, gap) s FROM random_clicks GROUP BY user_id;
SELECT count(*) AS differences FROM (
	(SELECT user_id, (r).started_at, (r).ended_at, (r).events
	 FROM (SELECT user_id, sessionize.session_rows(s) r FROM random_sets) p
	 EXCEPT ALL
	 SELECT user_id, r.* FROM random_sets g, sessionize.session_rows(g.s) r)
	UNION ALL
	(SELECT user_id, r.* FROM random_sets g, sessionize.session_rows(g.s) r
	 EXCEPT ALL
	 SELECT user_id, (r).started_at, (r).ended_at, (r).events
	 FROM (SELECT user_id, sessionize.session_rows(s) r FROM random_sets) p)) d;
SELECT count(*) AS out_of_order FROM (
	SELECT r.started_at, lag(r.ended_at) OVER (PARTITION BY g.user_id ORDER BY r.position) AS previous_end
	FROM random_sets g, sessionize.session_rows(g.s) WITH ORDINALITY r(started_at, ended_at, events, position)) o
WHERE o.previous_end >= o.started_at;

-- One row per session equals the SQL idiom (LAG + running SUM).
CREATE TEMP VIEW idiom_sessions AS
SELECT user_id, min(ts) AS started_at, max(ts) AS ended_at, count(*) AS events
FROM (SELECT user_id, ts, sum(is_new) OVER (PARTITION BY user_id ORDER BY ts ROWS UNBOUNDED PRECEDING) AS sid
	  FROM (SELECT user_id, ts,
				   CASE WHEN ts - lag(ts) OVER (PARTITION BY user_id ORDER BY ts) <= interval '30 minutes'
						THEN 0 ELSE 1 END AS is_new
			FROM random_clicks WHERE ts IS NOT NULL) marked) numbered
GROUP BY user_id, sid;
CREATE TEMP VIEW set_sessions AS
SELECT user_id, r.*
FROM (SELECT user_id, sessionize.session_set(ts, '30 minutes') s FROM random_clicks GROUP BY user_id) g,
	 sessionize.session_rows(g.s) r;
SELECT (SELECT count(*) FROM idiom_sessions) AS sessions,
	   (SELECT count(*) FROM (SELECT * FROM idiom_sessions EXCEPT ALL SELECT * FROM set_sessions) d) +
	   (SELECT count(*) FROM (SELECT * FROM set_sessions EXCEPT ALL SELECT * FROM idiom_sessions) d) AS differences;

-- merge() of per-day sets equals the set of all events, also when a
-- session spans midnight or a two-hour gap bridges days, and when the
-- partial sets are stored and read back as text.
CREATE TABLE daily_sets AS
SELECT user_id, date_trunc('day', ts) AS day, sessionize.session_set(ts, gap) AS s,
	   sessionize.session_set(ts, gap, '3 hours') AS s_max
FROM random_clicks GROUP BY user_id, date_trunc('day', ts);
SELECT count(*) AS users,
	   count(*) FILTER (WHERE m::text = w::text) AS merged_equal,
	   count(*) FILTER (WHERE m_max::text = w_max::text) AS merged_equal_max_duration
FROM (SELECT user_id, sessionize.merge(s) m, sessionize.merge(s_max) m_max,
			 sessionize.merge(s::text::sessionize.session_set) m_text
	  FROM (SELECT * FROM daily_sets ORDER BY random()) shuffled GROUP BY user_id) merged
JOIN (SELECT user_id, sessionize.session_set(ts, gap) w, sessionize.session_set(ts, gap, '3 hours') w_max
	  FROM random_clicks GROUP BY user_id) whole USING (user_id)
WHERE m_text::text = m::text;
SELECT count(*) AS sessions_across_midnight
FROM daily_sets d, LATERAL (SELECT sessionize.merge(s) m FROM daily_sets x WHERE x.user_id = d.user_id) w,
	 sessionize.session_rows(w.m) r
WHERE d.day = date_trunc('day', r.started_at) AND date_trunc('day', r.ended_at) > d.day;

-- Sets cut at different max_durations, or with and without, do not merge.
SELECT sessionize.merge(s) FROM (VALUES
	('max_duration=3600000000us {(2024-05-01 10:00:00+00,2024-05-01 10:00:00+00,2024-05-01 10:30:00+00,1)}'::sessionize.session_set),
	('max_duration=7200000000us {(2024-05-01 12:00:00+00,2024-05-01 12:00:00+00,2024-05-01 12:30:00+00,1)}')) v(s);
SELECT sessionize.merge(s) FROM (VALUES
	('{(2024-05-01 10:00:00+00,2024-05-01 10:00:00+00,2024-05-01 10:30:00+00,1)}'::sessionize.session_set),
	('max_duration=7200000000us {(2024-05-01 12:00:00+00,2024-05-01 12:00:00+00,2024-05-01 12:30:00+00,1)}')) v(s);

-- Every plan gives the same sets: hashed, sorted, grouping sets, parallel
-- partial aggregation, and sessions() as a running window aggregate.
CREATE TEMP TABLE plan_results (plan text, user_id int, s text);
INSERT INTO plan_results
SELECT 'hash', user_id, sessionize.session_set(ts, gap)::text FROM random_clicks GROUP BY user_id;
SET enable_hashagg = off;
INSERT INTO plan_results
SELECT 'sort', user_id, sessionize.session_set(ts, gap)::text FROM random_clicks GROUP BY user_id;
INSERT INTO plan_results
SELECT 'grouping sets', user_id, sessionize.session_set(ts, gap)::text FROM random_clicks
GROUP BY GROUPING SETS ((user_id), (user_id, gap)) HAVING GROUPING(gap) = 1;
RESET enable_hashagg;
-- hashed with too little memory: groups go to disk and come back in batches
SET work_mem = '64kB';
SET hash_mem_multiplier = 1;
SET enable_sort = off;
DO $$
DECLARE
	plan jsonb;
BEGIN
	EXECUTE 'EXPLAIN (ANALYZE, FORMAT JSON) SELECT user_id, sessionize.session_set(ts, gap) FROM random_clicks GROUP BY user_id'
		INTO plan;
	IF coalesce((plan #>> '{0,Plan,HashAgg Batches}')::int, 0) < 2 THEN
		RAISE EXCEPTION 'the hashed plan did not spill: %', plan;
	END IF;
END $$;
INSERT INTO plan_results
SELECT 'hash spilled', user_id, sessionize.session_set(ts, gap)::text FROM random_clicks GROUP BY user_id;
RESET work_mem;
RESET hash_mem_multiplier;
RESET enable_sort;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
SET parallel_leader_participation = off;
EXPLAIN (COSTS OFF)
SELECT user_id, sessionize.session_set(ts, gap) FROM random_clicks GROUP BY user_id;
EXPLAIN (COSTS OFF)
SELECT user_id, sessionize.merge(s) FROM daily_sets GROUP BY user_id;
INSERT INTO plan_results
SELECT 'parallel', user_id, sessionize.session_set(ts, gap)::text FROM random_clicks GROUP BY user_id;
INSERT INTO plan_results
SELECT 'parallel merge', user_id, sessionize.merge(s)::text FROM daily_sets GROUP BY user_id;
RESET parallel_setup_cost;
RESET parallel_tuple_cost;
RESET min_parallel_table_scan_size;
RESET max_parallel_workers_per_gather;
RESET parallel_leader_participation;
INSERT INTO plan_results
SELECT DISTINCT ON (user_id) 'window', user_id,
	   sessionize.session_set(ts, gap) OVER (PARTITION BY user_id ORDER BY ts NULLS FIRST
											  ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)::text
FROM random_clicks;
SELECT p.plan, count(*) AS users,
	   count(*) FILTER (WHERE p.s = h.s) AS equal_to_hash
FROM plan_results p JOIN plan_results h USING (user_id)
WHERE h.plan = 'hash'
GROUP BY p.plan ORDER BY p.plan;

-- sessions() as a running window aggregate sees every prefix correctly.
SELECT count(*) AS rows, count(*) FILTER (WHERE running = prefix) AS equal
FROM (SELECT user_id, ts, sessionize.sessions(ts, '30 minutes') OVER (PARTITION BY user_id ORDER BY ts) AS running
	  FROM random_clicks WHERE user_id < 3 AND ts IS NOT NULL) w,
	 LATERAL (SELECT sessionize.sessions(r.ts, '30 minutes') AS prefix FROM random_clicks r
			  WHERE r.user_id = w.user_id AND r.ts <= w.ts) p;

-- A large set is stored compressed or out of line and reads back whole.
CREATE TABLE big_set AS
SELECT sessionize.session_set(ts, '30 minutes') AS s
FROM generate_series(timestamptz '2024-01-01', '2024-12-31', '1 hour') ts;
SELECT count(*), sum(events) FROM big_set, sessionize.session_rows(big_set.s);
SELECT pg_column_size(s) < octet_length(s::text) AS stored_compactly FROM big_set;

-- Many sessions of one key, in random, descending and ascending order, with a
-- dynamic gap, against a walk in time order: an event starts a session when
-- it comes after every earlier event's ts + gap.
SELECT setseed(0.3);
CREATE TABLE one_key AS
SELECT timestamptz '2024-01-01' + random() * interval '365 days' AS ts,
	   CASE WHEN random() < 0.1 THEN interval '5 hours' ELSE interval '90 minutes' END AS gap
FROM generate_series(1, 8000);
CREATE TEMP VIEW walked AS
WITH ordered AS (
	SELECT ts, max(ts + gap) OVER (ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS reach
	FROM one_key),
numbered AS (
	SELECT ts, sum(CASE WHEN reach IS NULL OR ts > reach THEN 1 ELSE 0 END) OVER (ORDER BY ts ROWS UNBOUNDED PRECEDING) AS sid
	FROM ordered)
SELECT min(ts) AS started_at, max(ts) AS ended_at, count(*) AS events FROM numbered GROUP BY sid;
SELECT o.input_order, (SELECT count(*) FROM walked) AS sessions,
	   (SELECT count(*) FROM (SELECT * FROM walked EXCEPT ALL SELECT r.* FROM sessionize.session_rows(o.s) r) a) +
	   (SELECT count(*) FROM (SELECT r.* FROM sessionize.session_rows(o.s) r EXCEPT ALL SELECT * FROM walked) b) AS differences
FROM (SELECT 'random' AS input_order, sessionize.session_set(ts, gap ORDER BY random()) AS s FROM one_key
	  UNION ALL SELECT 'descending', sessionize.session_set(ts, gap ORDER BY ts DESC) FROM one_key
	  UNION ALL SELECT 'ascending', sessionize.session_set(ts, gap ORDER BY ts) FROM one_key) o;

-- An event out of order right after the array of a set was coalesced to
-- make room: the set must still come out in time order.
SELECT sessionize.session_set(ts, '30 minutes' ORDER BY position)
FROM (SELECT position, timestamptz '2024-05-01' + hours * interval '1 hour' AS ts
	  FROM unnest(ARRAY[0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, -10, 200, 150])
		   WITH ORDINALITY AS e(hours, position)) e;
