-- Behavioral aggregates: ClickHouse's documented examples and regression
-- cases, every error, and property tests against independent SQL references
-- on random events, in any input order and in a parallel plan.
SET search_path = sessionize, public;
SET TimeZone = 'UTC';

-- window_funnel: ClickHouse's documentation example (level 4 for user 1).
CREATE TABLE trend (user_id int, ts timestamp, event_id int);
INSERT INTO trend VALUES
	(1, '2019-01-29 10:00:00', 1003), (1, '2019-01-31 09:00:00', 1007),
	(1, '2019-01-30 08:00:00', 1009), (1, '2019-02-01 08:00:00', 1010);
SELECT user_id, window_funnel('70 days', ts, event_id = 1003, event_id = 1009, event_id = 1007, event_id = 1010) AS level
FROM trend GROUP BY user_id;
SELECT window_funnel_events('70 days', '', ts, event_id = 1003, event_id = 1009, event_id = 1007, event_id = 1010) FROM trend;
-- the window is measured from the chain's first event; exactly the window is inside
SELECT window_funnel('2 days', ts, event_id = 1003, event_id = 1009, event_id = 1007, event_id = 1010) AS two_days,
	   window_funnel('1 day 23 hours', ts, event_id = 1003, event_id = 1009, event_id = 1007) AS just_inside,
	   window_funnel('1 day 22 hours 59 minutes', ts, event_id = 1003, event_id = 1009, event_id = 1007) AS just_outside
FROM trend;

-- ClickHouse's regression test 00632_aggregation_window_funnel (seconds).
CREATE TABLE funnel_test (ts timestamptz, event int, u int DEFAULT 1);
INSERT INTO funnel_test (ts, event)
SELECT timestamptz '2020-01-01 00:00:00+00' + n * interval '1 second', 1000 + n FROM generate_series(0, 8) n;
SELECT 1 = window_funnel('10000 s', ts, event = 1000) AS a,
	   2 = window_funnel('10000 s', ts, event = 1000, event = 1001) AS b,
	   3 = window_funnel('10000 s', ts, event = 1000, event = 1001, event = 1002) AS c,
	   4 = window_funnel('10000 s', ts, event = 1000, event = 1001, event = 1002, event = 1008) AS d,
	   1 = window_funnel('1 s', ts, event = 1000) AS e,
	   3 = window_funnel('2 s', ts, event = 1003, event = 1004, event = 1005, event = 1006, event = 1007) AS f,
	   4 = window_funnel('3 s', ts, event = 1003, event = 1004, event = 1005, event = 1006, event = 1007) AS g,
	   5 = window_funnel('4 s', ts, event = 1003, event = 1004, event = 1005, event = 1006, event = 1007) AS h,
	   1 = window_funnel('10000 s', ts, event = 1008, event = 1001) AS i,
	   4 = window_funnel('4 s', ts, event <= 1007, event >= 1002, event <= 1006, event >= 1004) AS j
FROM funnel_test;
TRUNCATE funnel_test;
INSERT INTO funnel_test (ts, event) VALUES
	('2020-01-01 00:00:00+00', 1000), ('2020-01-01 00:00:10+00', 1001), ('2020-01-01 00:00:20+00', 1002),
	('2020-01-01 00:00:30+00', 1003), ('2020-01-01 00:00:40+00', 1004), ('2020-01-01 00:00:50+00', 1005),
	('2020-01-01 00:00:51+00', 1005), ('2020-01-01 00:01:00+00', 1006), ('2020-01-01 00:01:10+00', 1007),
	('2020-01-01 00:01:20+00', 1008);
SELECT 6 = window_funnel('10000 s', 'strict_deduplication', ts, event = 1000, event = 1001, event = 1002, event = 1003, event = 1004, event = 1005, event = 1006) AS dedup,
	   7 = window_funnel('10000 s', ts, event = 1000, event = 1001, event = 1002, event = 1003, event = 1004, event = 1005, event = 1006) AS plain
FROM funnel_test;
CREATE TABLE funnel_order (u int, ts timestamptz, event text);
INSERT INTO funnel_order
SELECT u, timestamptz '2020-01-01 00:00:00+00' + (i - 1) * interval '1 second', e
FROM (VALUES (1, 'abc'), (2, 'adbc'), (3, 'aabbcc'), (4, 'aaaabbcc'), (5, 'aabbdcc'), (6, 'ccbbaa'), (7, 'acb')) v(u, s),
	 LATERAL (SELECT i, substr(s, i, 1) AS e FROM generate_series(1, length(s)) i) x;
SELECT u, window_funnel('1 day', ts, event = 'a', event = 'b', event = 'c') AS plain,
	   window_funnel('1 day', 'strict_order', ts, event = 'a', event = 'b', event = 'c') AS strict_order,
	   window_funnel('1 day', 'strict_deduplication, strict_order', ts, event = 'a', event = 'b', event = 'c') AS dedup_order,
	   window_funnel('1 day', 'strict_order, allow_reentry', ts, event = 'a', event = 'b', event = 'c') AS reentry
FROM funnel_order GROUP BY u ORDER BY u;
-- issue 27469 of ClickHouse: a repeated step stops strict_deduplication at the level reached
TRUNCATE funnel_test;
INSERT INTO funnel_test (ts, event)
SELECT timestamptz '2020-01-01 00:00:00+00' + n * interval '1 second', e
FROM (VALUES (1, 1), (2, 2), (3, 3), (4, 2), (5, 4)) v(n, e);
SELECT 3 = window_funnel('1 day', 'strict_deduplication', ts, event = 1, event = 2, event = 3, event = 4) AS dedup FROM funnel_test;
-- NULL conditions are false
CREATE TABLE funnel_nulls (u int, ts timestamptz, a text, b text);
INSERT INTO funnel_nulls VALUES
	(1, '2020-01-01 00:00:01+00', 'a1', 'b1'), (1, '2020-01-01 00:00:02+00', 'a2', 'b2'),
	(2, '2020-01-01 00:00:01+00', 'a1', NULL), (2, '2020-01-01 00:00:02+00', 'a2', NULL),
	(3, '2020-01-01 00:00:01+00', NULL, NULL),
	(4, '2020-01-01 00:00:01+00', NULL, 'b1'), (4, '2020-01-01 00:00:02+00', 'a2', NULL), (4, '2020-01-01 00:00:03+00', NULL, 'b3');
SELECT u, window_funnel('1 day', ts, a = 'a1', a = 'a2') AS a1a2,
	   window_funnel('1 day', ts, a = 'a1', b = 'b2') AS a1b2,
	   window_funnel('1 day', ts, a IS NULL AND b IS NULL) AS both_null,
	   window_funnel('1 day', ts, a IS NULL, b = 'b3') AS a_null_b3,
	   window_funnel('1 day', 'strict_order', ts, a IS NULL, b = 'b3') AS strict_order
FROM funnel_nulls GROUP BY u ORDER BY u;
-- strict_increase and strict_once: one event satisfying three steps
TRUNCATE funnel_test;
INSERT INTO funnel_test (ts, event) VALUES
	('2020-01-01 00:00:00+00', 1000), ('2020-01-01 00:00:01+00', 1001), ('2020-01-01 00:00:01+00', 1002),
	('2020-01-01 00:00:01+00', 1003), ('2020-01-01 00:00:02+00', 1004);
SELECT 5 = window_funnel('10000 s', ts, event = 1000, event = 1001, event = 1002, event = 1003, event = 1004) AS plain,
	   2 = window_funnel('10000 s', 'strict_increase', ts, event = 1000, event = 1001, event = 1002, event = 1003, event = 1004) AS increase,
	   3 = window_funnel('10000 s', ts, event = 1004, event = 1004, event = 1004) AS same_event,
	   1 = window_funnel('10000 s', 'strict_once', ts, event = 1004, event = 1004, event = 1004) AS once,
	   1 = window_funnel('10000 s', 'strict_increase', ts, event = 1004, event = 1004, event = 1004) AS increase_same
FROM funnel_test;
CREATE TABLE funnel_results (ts int, result text, uid int);
INSERT INTO funnel_results VALUES (100, 'failure', 234), (200, 'success', 345), (210, 'failure', 345),
	(230, 'success', 345), (250, 'failure', 234), (180, 'failure', 123), (220, 'failure', 123), (250, 'success', 123);
SELECT uid,
	   window_funnel('200 s', 'strict_once, strict_increase', to_timestamp(ts), result = 'failure', result = 'failure', result = 'success') AS once_increase,
	   window_funnel('200 s', 'strict_once', to_timestamp(ts), result = 'failure', result = 'failure', result = 'success') AS once,
	   window_funnel('200 s', 'strict_once, strict_deduplication', to_timestamp(ts), result = 'failure', result = 'failure', result = 'success') AS once_dedup
FROM funnel_results GROUP BY uid ORDER BY uid;
-- strict_increase takes the best chain among events of equal times
SELECT window_funnel('1 hour', 'strict_increase', ts, e = 'a', e = 'b', e = 'c') AS level,
	   window_funnel_events('1 hour', 'strict_increase', ts, e = 'a', e = 'b', e = 'c') AS times
FROM (VALUES (timestamp '2020-01-01 00:00:00', 'a'), ('2020-01-01 00:00:01', 'b'),
			 ('2020-01-01 00:00:02', 'b'), ('2020-01-01 00:00:02', 'c')) v(ts, e);
-- no rows: level 0, no times
SELECT window_funnel('1 hour', ts, true) AS level, window_funnel_events('1 hour', '', ts, true) AS times
FROM funnel_test WHERE false;

-- retention: ClickHouse's documentation example.
CREATE TABLE retention_test (d date, uid int);
INSERT INTO retention_test SELECT '2020-01-01', n FROM generate_series(0, 4) n;
INSERT INTO retention_test SELECT '2020-01-02', n FROM generate_series(0, 9) n;
INSERT INTO retention_test SELECT '2020-01-03', n FROM generate_series(0, 14) n;
SELECT r, array_agg(uid ORDER BY uid) AS uids
FROM (SELECT uid, retention(d = '2020-01-01', d = '2020-01-02', d = '2020-01-03') AS r
	  FROM retention_test GROUP BY uid) s
GROUP BY r ORDER BY r;
SELECT sum(CASE WHEN r[1] THEN 1 ELSE 0 END) AS r1, sum(CASE WHEN r[2] THEN 1 ELSE 0 END) AS r2,
	   sum(CASE WHEN r[3] THEN 1 ELSE 0 END) AS r3
FROM (SELECT uid, retention(d = '2020-01-01', d = '2020-01-02', d = '2020-01-03') AS r
	  FROM retention_test GROUP BY uid) s;
SELECT retention(NULL, true) AS null_first, retention(true, NULL) AS null_second,
	   retention(VARIADIC NULL::boolean[]) AS null_array
FROM (VALUES (1)) v;
SELECT retention(true) AS no_rows FROM retention_test WHERE false;

-- sequence_match, sequence_count: ClickHouse's documentation examples.
CREATE TABLE seq (ts timestamp, number int);
INSERT INTO seq VALUES ('2020-01-01 00:00:01', 1), ('2020-01-01 00:00:02', 3), ('2020-01-01 00:00:03', 2);
SELECT sequence_match('(?1)(?2)', ts, number = 1, number = 2) AS one_two,
	   sequence_match('(?1)(?2)', ts, number = 1, number = 2, number = 3) AS three_between,
	   sequence_match('(?1)(?2)', ts, number = 1, number = 2, number = 4) AS four_never,
	   sequence_match('(?1).(?2)', ts, number = 1, number = 2, number = 3) AS any_between,
	   sequence_match('(?2)', ts, number = 1, number = 2) AS anchored,
	   sequence_match('.*(?2)', ts, number = 1, number = 2) AS anywhere
FROM seq;
INSERT INTO seq VALUES ('2020-01-01 00:00:04', 1), ('2020-01-01 00:00:05', 3), ('2020-01-01 00:00:06', 2);
SELECT sequence_count('(?1).*(?2)', ts, number = 1, number = 2) AS count,
	   sequence_count('(?1)(?2)', ts, number = 1, number = 2) AS adjacent,
	   sequence_count('.*(?1)(?2)', ts, number = 1, number = 2, number = 5) AS anywhere,
	   sequence_match_events('(?1).*(?2)', ts, number = 1, number = 2) AS times
FROM seq;
-- time conditions: seconds since the previous step's event, any events between
SELECT sequence_match('(?1)(?t>=5)(?2)', ts, number = 1, number = 2) AS ge5,
	   sequence_match('(?1)(?t>5)(?2)', ts, number = 1, number = 2) AS gt5,
	   sequence_match('(?1)(?t<=2)(?2)', ts, number = 1, number = 2) AS le2,
	   sequence_match('(?1)(?t<2)(?2)', ts, number = 1, number = 2) AS lt2,
	   sequence_match('(?1)(?t==2)(?2)', ts, number = 1, number = 2) AS eq2,
	   sequence_match('(?1)(?t!=2)(?2)', ts, number = 1, number = 2) AS ne2,
	   sequence_count('(?1)(?t<=2)(?2)', ts, number = 1, number = 2) AS count_le2,
	   sequence_match_events('(?1)(?t > 3)(?2)', ts, number = 1, number = 2) AS times_gt3
FROM seq;
SELECT sequence_match('(?1)', ts, true) AS no_rows, sequence_count('(?1)', ts, true) AS none,
	   sequence_match_events('(?1)', ts, true) AS no_times
FROM seq WHERE false;

-- sequence_next_node: ClickHouse's documentation examples.
CREATE TABLE test_flow (dt timestamptz, id int, page text);
INSERT INTO test_flow
SELECT timestamptz '2020-01-01 00:00:00+00' + (i - 1) * interval '1 second', id, p
FROM (VALUES (1, ARRAY['A', 'B', 'C', 'D', 'E'])) v(id, pages), LATERAL unnest(pages) WITH ORDINALITY u(p, i);
SELECT id, sequence_next_node('forward', 'head', dt, page, page = 'A', page = 'A', page = 'B') AS next_flow
FROM test_flow GROUP BY id;
TRUNCATE test_flow;
INSERT INTO test_flow
SELECT timestamptz '2020-01-01 00:00:00+00' + (i - 1) * interval '1 second', id, p
FROM (VALUES (1, ARRAY['Home', 'Gift', 'Exit']), (2, ARRAY['Home', 'Home', 'Gift', 'Basket']),
			 (3, ARRAY['Gift', 'Home', 'Gift', 'Basket'])) v(id, pages),
	 LATERAL unnest(pages) WITH ORDINALITY u(p, i);
SELECT id,
	   sequence_next_node('forward', 'head', dt, page, page = 'Home', page = 'Home', page = 'Gift') AS forward_head,
	   sequence_next_node('backward', 'tail', dt, page, page = 'Basket', page = 'Basket', page = 'Gift') AS backward_tail,
	   sequence_next_node('forward', 'first_match', dt, page, true, page = 'Gift') AS first_match,
	   sequence_next_node('forward', 'first_match', dt, page, true, page = 'Gift', page = 'Home') AS first_match_2,
	   sequence_next_node('forward', 'last_match', dt, page, true, page = 'Gift') AS last_match,
	   sequence_next_node('backward', 'first_match', dt, page, true, page = 'Gift') AS backward_first,
	   sequence_next_node('backward', 'last_match', dt, page, true, page = 'Gift') AS backward_last
FROM test_flow GROUP BY id ORDER BY id;

-- Errors.
SELECT window_funnel('1 month', ts, event = 1) FROM funnel_test;
SELECT window_funnel('-1 second', ts, event = 1) FROM funnel_test;
SELECT window_funnel(NULL, ts, event = 1) FROM funnel_test;
SELECT window_funnel('1 hour', 'strict', ts, event = 1) FROM funnel_test;
SELECT window_funnel('1 hour', 'strict_order,bogus', ts, event = 1) FROM funnel_test;
SELECT window_funnel('1 hour', 'allow_reentry', ts, event = 1) FROM funnel_test;
SELECT window_funnel('1 hour', NULL, ts, event = 1) FROM funnel_test;
SELECT window_funnel('1 hour', ts, VARIADIC array_fill(true, ARRAY[33])) FROM funnel_test;
SELECT window_funnel('1 hour', ts, VARIADIC ARRAY[]::boolean[]) FROM funnel_test;
SELECT window_funnel(event * interval '1 hour', ts, event = 1) FROM funnel_test;
SELECT window_funnel('1 hour', CASE WHEN event = 1000 THEN '' ELSE 'strict_order' END, ts, event = 1000) FROM funnel_test;
SELECT window_funnel('1 hour', ts, VARIADIC CASE WHEN event = 1000 THEN ARRAY[true] ELSE ARRAY[true, false] END) FROM funnel_test;
SELECT window_funnel('1 hour', timestamptz 'infinity', true);
SELECT sequence_match('', ts, number = 1) FROM seq;
SELECT sequence_match('.*', ts, number = 1) FROM seq;
SELECT sequence_match('(?1', ts, number = 1) FROM seq;
SELECT sequence_match('(?0)', ts, number = 1) FROM seq;
SELECT sequence_match('(?2)', ts, number = 1) FROM seq;
SELECT sequence_match('(?x)', ts, number = 1) FROM seq;
SELECT sequence_match('(?t>1)(?1)', ts, number = 1) FROM seq;
SELECT sequence_match('(?1)(?t>)', ts, number = 1) FROM seq;
SELECT sequence_match('(?1)(?t=1)(?1)', ts, number = 1) FROM seq;
SELECT sequence_match('(?1)(?t<5)', ts, number = 1) FROM seq;
SELECT sequence_match('(?1)x', ts, number = 1) FROM seq;
SELECT sequence_match('(?1)(?t>99999999999999)(?1)', ts, number = 1) FROM seq;
SELECT sequence_match(NULL, ts, number = 1) FROM seq;
SELECT sequence_match(CASE WHEN number = 1 THEN '(?1)' ELSE '.*(?1)' END, ts, number = 1) FROM seq;
SELECT sequence_next_node('sideways', 'head', dt, page, true, true) FROM test_flow;
SELECT sequence_next_node('forward', 'middle', dt, page, true, true) FROM test_flow;
SELECT sequence_next_node('forward', 'tail', dt, page, true, true) FROM test_flow;
SELECT sequence_next_node('backward', 'head', dt, page, true, true) FROM test_flow;
SELECT sequence_next_node(NULL, 'head', dt, page, true, true) FROM test_flow;

-- Property tests on random events: 300 users, up to 11 events each, times on
-- whole seconds so that many share a time, conditions that overlap and are
-- sometimes NULL.
SELECT setseed(0.14);
CREATE TABLE be AS
SELECT row_number() OVER () AS id, u AS user_id,
	   timestamptz '2024-01-01 00:00:00+00' + floor(random() * 60)::int * interval '1 second' AS ts,
	   1 + floor(random() * 4)::int AS kind,
	   CASE WHEN random() < 0.1 THEN NULL ELSE random() < 0.15 END AS flag
FROM generate_series(1, 300) u, LATERAL generate_series(1, 1 + (u * 7) % 11) i;
CREATE VIEW bs AS
SELECT id, user_id, ts, kind = 1 AS s1, kind = 2 OR flag AS s2, kind = 3 AS s3, kind = 4 OR (flag AND kind = 1) AS s4
FROM be;
-- one row per (event, step it satisfies)
CREATE TABLE bp AS
SELECT id, user_id, ts, step FROM bs, LATERAL (VALUES (1, s1), (2, s2), (3, s3), (4, s4)) v(step, ok) WHERE ok;

-- Reference for the default mode, strict_increase and strict_once: the
-- deepest chain of events satisfying steps 1, 2, ... in time order within
-- 20 seconds of its first, found by enumerating chains.
CREATE FUNCTION chain_reference(increase boolean, once boolean)
RETURNS TABLE (user_id int, level int)
LANGUAGE sql AS $$
	WITH RECURSIVE chain(user_id, level, first, last_ts, last_id) AS (
		SELECT user_id, 1, ts, ts, id FROM bp WHERE step = 1
		UNION
		SELECT c.user_id, c.level + 1, c.first, p.ts, p.id
		FROM chain c JOIN bp p ON p.user_id = c.user_id AND p.step = c.level + 1
		WHERE p.ts >= c.last_ts AND p.ts - c.first <= interval '20 seconds'
		  AND (NOT increase OR p.ts > c.last_ts) AND (NOT once OR p.id <> c.last_id)
	)
	SELECT u, coalesce(max(c.level), 0)::int
	FROM generate_series(1, 300) u LEFT JOIN chain c ON c.user_id = u
	GROUP BY u
$$;
-- Reference for strict_order, strict_deduplication and allow_reentry:
-- ClickHouse's scan over (time, step) items, one event at a time.
CREATE FUNCTION scan_reference(p_user int, strict_order boolean, dedup boolean, reentry boolean)
RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
	first_of timestamptz[] := ARRAY[NULL, NULL, NULL, NULL];
	started boolean := false;
	item record;
	level int := 0;
BEGIN
	FOR item IN
		SELECT ts, step FROM bp WHERE user_id = p_user
		UNION ALL
		SELECT ts, 0 FROM bs WHERE user_id = p_user AND strict_order
		  AND NOT (coalesce(s1, false) OR coalesce(s2, false) OR coalesce(s3, false) OR coalesce(s4, false))
		ORDER BY 1, 2
	LOOP
		IF item.step = 0 THEN
			EXIT WHEN started;
		ELSIF item.step = 1 THEN
			first_of[1] := item.ts;
			started := true;
		ELSIF dedup AND first_of[item.step] IS NOT NULL THEN
			EXIT;
		ELSIF strict_order AND started AND first_of[item.step - 1] IS NULL THEN
			CONTINUE WHEN reentry;
			EXIT;
		ELSIF first_of[item.step - 1] IS NOT NULL AND item.ts - first_of[item.step - 1] <= interval '20 seconds' THEN
			first_of[item.step] := first_of[item.step - 1];
			EXIT WHEN item.step = 4;
		END IF;
	END LOOP;
	WHILE level < 4 AND first_of[level + 1] IS NOT NULL LOOP
		level := level + 1;
	END LOOP;
	RETURN level;
END $$;

CREATE TABLE funnel_modes (mode text, increase boolean, once boolean, strict_order boolean, dedup boolean, reentry boolean);
INSERT INTO funnel_modes VALUES
	('', false, false, NULL, NULL, NULL),
	('strict_increase', true, false, NULL, NULL, NULL),
	('strict_once', false, true, NULL, NULL, NULL),
	('strict_once, strict_increase', true, true, NULL, NULL, NULL),
	('strict_order', NULL, NULL, true, false, false),
	('strict_deduplication', NULL, NULL, false, true, false),
	('strict_order, strict_deduplication', NULL, NULL, true, true, false),
	('strict_order, allow_reentry', NULL, NULL, true, false, true);
CREATE TABLE funnel_actual AS
SELECT m.mode, b.user_id, window_funnel('20 seconds', m.mode, b.ts, b.s1, b.s2, b.s3, b.s4) AS level,
	   window_funnel_events('20 seconds', m.mode, b.ts, b.s1, b.s2, b.s3, b.s4) AS times
FROM funnel_modes m CROSS JOIN bs b GROUP BY m.mode, b.user_id;
-- users with no events of any kind get no row; the references say 0 for them
SELECT m.mode,
	   count(*) FILTER (WHERE coalesce(a.level, 0) <> CASE WHEN m.increase IS NOT NULL THEN r.level
														  ELSE scan_reference(u, m.strict_order, m.dedup, m.reentry) END) AS mismatches,
	   count(*) FILTER (WHERE coalesce(cardinality(a.times), 0) <> coalesce(a.level, 0)) AS bad_times,
	   count(*) FILTER (WHERE a.level = 4) AS complete
FROM funnel_modes m CROSS JOIN generate_series(1, 300) u
LEFT JOIN funnel_actual a ON a.mode = m.mode AND a.user_id = u
LEFT JOIN LATERAL (SELECT level FROM chain_reference(coalesce(m.increase, false), coalesce(m.once, false)) c WHERE c.user_id = u) r ON m.increase IS NOT NULL
GROUP BY m.mode ORDER BY m.mode;
-- the times of a chain are steps of it, in order, within the window
SELECT count(*) AS bad_chains
FROM funnel_actual a, LATERAL unnest(a.times) WITH ORDINALITY t(ts, step)
WHERE NOT EXISTS (SELECT FROM bp WHERE bp.user_id = a.user_id AND bp.ts = t.ts AND bp.step = t.step)
   OR t.ts - a.times[1] > interval '20 seconds' OR (t.step > 1 AND t.ts < a.times[t.step - 1]);

-- retention equals its bool_or formulation
SELECT count(*) AS retention_mismatches
FROM (SELECT user_id, retention(s1, s2, s3, s4) AS r, bool_or(s1) AS b1, bool_or(s2) AS b2, bool_or(s3) AS b3, bool_or(s4) AS b4
	  FROM bs GROUP BY user_id) s
WHERE r IS DISTINCT FROM ARRAY[coalesce(b1, false), coalesce(b1 AND b2, false), coalesce(b1 AND b3, false), coalesce(b1 AND b4, false)];

-- sequence_count equals a reference over the events written as letters (one
-- letter per set of conditions, a = {1}, b = {2}, c = {1,2}, ...) matched by
-- a regular expression anchored where the previous match ended, shortest first.
CREATE TABLE patterns AS
SELECT p AS pattern_id, string_agg(token, '' ORDER BY i) AS pattern, string_agg(re, '' ORDER BY i) AS re
FROM generate_series(1, 40) p,
	 LATERAL (SELECT i, (ARRAY['(?1)', '(?2)', '(?3)', '.', '.*'])[t] AS token,
					 (ARRAY['[aceg]', '[bcfg]', '[defg]', '.', '.*?'])[t] AS re
			  FROM generate_series(1, 1 + p % 5) i,
				   LATERAL (SELECT 1 + floor(random() * 5)::int + 0 * i AS t) r) x
GROUP BY p HAVING bool_or(token <> '.*');
CREATE TABLE letters AS
SELECT user_id, string_agg(chr(96 + mask), '' ORDER BY ts, mask) AS s
FROM (SELECT user_id, ts, (coalesce(s1, false)::int + 2 * coalesce(s2, false)::int + 4 * coalesce(s3, false)::int) AS mask FROM bs) e
WHERE mask > 0 GROUP BY user_id;
CREATE TABLE sequence_reference AS
WITH RECURSIVE m(user_id, pattern_id, rest, n) AS (
	SELECT l.user_id, p.pattern_id, l.s, 0 FROM letters l CROSS JOIN patterns p
	UNION ALL
	SELECT m.user_id, m.pattern_id, substr(m.rest, length(x.found[1]) + 1), m.n + 1
	FROM m JOIN patterns p USING (pattern_id),
		 LATERAL regexp_match(m.rest, '^((?:' || p.re || '){1,1}?)') x(found)
	WHERE x.found IS NOT NULL
)
SELECT user_id, pattern_id, max(n) AS n FROM m GROUP BY user_id, pattern_id;
SELECT count(*) AS patterns, count(*) FILTER (WHERE pattern ~ '\.\*') AS with_star FROM patterns;
CREATE TABLE sequence_actual AS
SELECT b.user_id, p.pattern_id, p.pattern,
	   sequence_count(p.pattern, b.ts, b.s1, b.s2, b.s3) AS n,
	   sequence_match(p.pattern, b.ts, b.s1, b.s2, b.s3) AS matched,
	   cardinality(sequence_match_events(p.pattern, b.ts, b.s1, b.s2, b.s3)) AS times
FROM bs b CROSS JOIN patterns p GROUP BY b.user_id, p.pattern_id, p.pattern;
SELECT count(*) FILTER (WHERE a.n <> coalesce(r.n, 0)) AS count_mismatches,
	   count(*) FILTER (WHERE a.matched <> (coalesce(r.n, 0) > 0)) AS match_mismatches,
	   count(*) FILTER (WHERE a.times <> CASE WHEN coalesce(r.n, 0) > 0
										 THEN (SELECT count(*) FROM regexp_matches(a.pattern, '\(\?[0-9]', 'g'))
										 ELSE 0 END) AS times_mismatches,
	   count(*) FILTER (WHERE a.n > 0) > 1000 AS many_match, max(a.n) > 1 AS some_repeat
FROM sequence_actual a LEFT JOIN sequence_reference r USING (user_id, pattern_id);

-- Any input order, and a parallel plan, give the same results.
CREATE TABLE be_input (LIKE be);
CREATE VIEW results AS
SELECT user_id,
	   window_funnel('20 seconds', ts, s1, s2, s3, s4) AS f,
	   window_funnel('20 seconds', 'strict_once', ts, s1, s2, s3, s4) AS f_once,
	   window_funnel_events('20 seconds', 'strict_order', ts, s1, s2, s3, s4) AS f_order,
	   window_funnel_events('20 seconds', 'strict_increase', ts, s1, s2, s3, s4) AS f_increase,
	   retention(s1, s2, s3) AS r,
	   sequence_count('.*(?1).*(?2)(?t<=10)(?3)', ts, s1, s2, s3) AS c,
	   sequence_match_events('(?1).*(?2)', ts, s1, s2, s3) AS e,
	   sequence_next_node('forward', 'first_match', ts, kind::text, s1, s1, s2) AS nf,
	   sequence_next_node('backward', 'last_match', ts, kind::text, s3, s3) AS nb
FROM (SELECT id, user_id, ts, kind, kind = 1 AS s1, kind = 2 OR flag AS s2, kind = 3 AS s3,
			 kind = 4 OR (flag AND kind = 1) AS s4 FROM be_input) b
GROUP BY user_id;
INSERT INTO be_input SELECT id + k * 100000, user_id + 300 * k, ts, kind, flag
FROM be, generate_series(0, 19) k ORDER BY ts, id;
CREATE TABLE results_sorted AS SELECT * FROM results;
TRUNCATE be_input;
INSERT INTO be_input SELECT id + k * 100000, user_id + 300 * k, ts, kind, flag
FROM be, generate_series(0, 19) k ORDER BY ts DESC, id DESC;
SELECT count(*) AS reversed_differences
FROM (SELECT * FROM results EXCEPT SELECT * FROM results_sorted) d;
TRUNCATE be_input;
INSERT INTO be_input SELECT id + k * 100000, user_id + 300 * k, ts, kind, flag
FROM be, generate_series(0, 19) k ORDER BY random();
SELECT count(*) AS shuffled_differences, (SELECT count(*) FROM results_sorted) AS users
FROM (SELECT * FROM results EXCEPT SELECT * FROM results_sorted) d;
ANALYZE be_input;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
EXPLAIN (COSTS OFF) SELECT * FROM results;
SELECT count(*) AS parallel_differences
FROM (SELECT * FROM results EXCEPT SELECT * FROM results_sorted) d;
SET enable_hashagg = off;
EXPLAIN (COSTS OFF) SELECT * FROM results;
SELECT count(*) AS parallel_sorted_differences
FROM (SELECT * FROM results EXCEPT SELECT * FROM results_sorted) d;
RESET enable_hashagg;
RESET parallel_setup_cost;
RESET parallel_tuple_cost;
RESET min_parallel_table_scan_size;
RESET max_parallel_workers_per_gather;

DROP TABLE trend, funnel_test, funnel_order, funnel_nulls, funnel_results, retention_test, seq, test_flow,
	be, bp, funnel_modes, funnel_actual, patterns, letters, sequence_reference, sequence_actual,
	be_input, results_sorted CASCADE;
DROP FUNCTION chain_reference(boolean, boolean), scan_reference(int, boolean, boolean, boolean);
