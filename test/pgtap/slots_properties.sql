-- Properties of multi-slot upserts: the table is a function of the set of
-- distinct messages, whatever their order and however often they arrive, and
-- it matches a reference computed in plain SQL.
\set ON_ERROR_STOP 1
\set QUIET 1
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS sessionize;
RESET client_min_messages;
BEGIN;
SELECT plan(9);
SELECT setseed(0.11);

-- 1,500 distinct messages for 200 keys (up to 15 slot keys each, so many rows
-- overflow their 3 wide slots), then 30% of them delivered again.
CREATE TEMP TABLE distinct_messages AS
SELECT DISTINCT ON (user_id, day) user_id, day, (random() * 1000)::int AS amount
FROM (SELECT (random() * 199)::int AS user_id, date '2024-01-01' + (random() * 14)::int AS day
	  FROM generate_series(1, 1500)) m;
CREATE TEMP TABLE deliveries AS
SELECT * FROM distinct_messages
UNION ALL
SELECT * FROM distinct_messages WHERE random() < 0.3;

CREATE FUNCTION pg_temp.apply_in_random_order(target regclass) RETURNS void LANGUAGE sql AS $$
	SELECT count(sessionize.slot_upsert(target, d.user_id, d.day, d.amount))
	FROM (SELECT * FROM deliveries ORDER BY random()) d;
$$;
CREATE FUNCTION pg_temp.snapshot(target text) RETURNS TABLE (user_id int, slot text, day date, amount int) LANGUAGE plpgsql AS $$
BEGIN
	RETURN QUERY EXECUTE format(
		'SELECT user_id, s.slot, s.day, s.amount FROM %I,
			LATERAL (VALUES (''1'', day_1, amount_1), (''2'', day_2, amount_2), (''3'', day_3, amount_3),
							(''computed'', NULL, computed)) s(slot, day, amount)
		 UNION ALL
		 SELECT user_id, ''overflow'', day, amount FROM %I', target, target || '_overflow');
END $$;

SELECT sessionize.create_slot_table('order_a', '{user_id}', '{int}', 'date', 'int', slots => 3,
									value_name => 'amount', slot_key_name => 'day');
SELECT sessionize.create_slot_table('order_b', '{user_id}', '{int}', 'date', 'int', slots => 3,
									value_name => 'amount', slot_key_name => 'day');
SELECT sessionize.create_slot_table('order_c', '{user_id}', '{int}', 'date', 'int', slots => 3,
									value_name => 'amount', slot_key_name => 'day');
SELECT pg_temp.apply_in_random_order('order_a');
SELECT pg_temp.apply_in_random_order('order_b');

-- 1-2. Two random orders give identical tables, overflow included.
SELECT is_empty($$ SELECT * FROM pg_temp.snapshot('order_a') EXCEPT SELECT * FROM pg_temp.snapshot('order_b') $$,
				'random order A has nothing that order B lacks');
SELECT is_empty($$ SELECT * FROM pg_temp.snapshot('order_b') EXCEPT SELECT * FROM pg_temp.snapshot('order_a') $$,
				'random order B has nothing that order A lacks');

-- 3. The set-based form, in yet another order, gives the same table.
SELECT is((SELECT (sessionize.slot_upsert_many('order_c', array_agg(user_id ORDER BY r),
												 array_agg(day ORDER BY r), array_agg(amount ORDER BY r))).added
		   FROM (SELECT *, random() AS r FROM deliveries) d),
		  (SELECT count(*) FROM distinct_messages),
		  'slot_upsert_many adds each distinct message once');
SELECT set_eq($$ SELECT * FROM pg_temp.snapshot('order_c') $$, $$ SELECT * FROM pg_temp.snapshot('order_a') $$,
			  'slot_upsert_many gives the same table as slot_upsert');

-- 4-6. Against the reference: wide slots hold the three earliest days, the
-- overflow the rest, computed the sum of every distinct message.
SELECT set_eq(
	$$ SELECT user_id, day, amount FROM pg_temp.snapshot('order_a') WHERE slot IN ('1', '2', '3') AND day IS NOT NULL $$,
	$$ SELECT user_id, day, amount FROM (SELECT *, row_number() OVER (PARTITION BY user_id ORDER BY day) AS n
										 FROM distinct_messages) m WHERE n <= 3 $$,
	'wide slots hold the earliest slot keys');
SELECT set_eq(
	$$ SELECT user_id, day, amount FROM order_a_overflow $$,
	$$ SELECT user_id, day, amount FROM (SELECT *, row_number() OVER (PARTITION BY user_id ORDER BY day) AS n
										 FROM distinct_messages) m WHERE n > 3 $$,
	'the overflow table holds the rest');
SELECT set_eq(
	$$ SELECT user_id, computed FROM order_a $$,
	$$ SELECT user_id, sum(amount)::int FROM distinct_messages GROUP BY user_id $$,
	'computed is the sum over every distinct message');
SELECT is_empty(
	$$ SELECT user_id FROM order_a WHERE NOT (day_1 < day_2 AND day_2 < day_3) AND day_3 IS NOT NULL $$,
	'slots are ordered by slot key');

-- 7. Replaying everything again changes nothing.
SELECT is((SELECT (sessionize.slot_upsert_many('order_a', array_agg(user_id), array_agg(day), array_agg(amount))).unchanged
		   FROM deliveries),
		  (SELECT count(*) FROM deliveries),
		  'a full replay finds every message already applied');

SELECT * FROM finish();
ROLLBACK;
