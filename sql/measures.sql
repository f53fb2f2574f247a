-- The aggregates first(), last() and approx_count_distinct(): each held to
-- an independent SQL formulation, to any input order and to a parallel plan.
SET TimeZone = 'UTC';
SELECT setseed(0.42);

CREATE TABLE measure_events AS
SELECT n, (n % 97) AS user_id,
	   timestamptz '2024-01-01' + (random() * 1000)::int * interval '1 minute' AS ts,
	   CASE WHEN random() < 0.1 THEN NULL ELSE (ARRAY['/', '/search', '/product', '/cart'])[1 + (random() * 3)::int] END AS url,
	   (random() * 5000)::int AS product_id
FROM generate_series(1, 20000) n;

-- first()/last(): the value at the earliest/latest time, nulls ignored,
-- ties broken by the value's order: the same as array_agg ordered so.
SELECT count(*) AS users,
	   count(*) FILTER (WHERE f IS NOT DISTINCT FROM f_ref) AS first_agrees,
	   count(*) FILTER (WHERE l IS NOT DISTINCT FROM l_ref) AS last_agrees
FROM (SELECT user_id, sessionize.first(url, ts) AS f, sessionize.last(url, ts) AS l,
			 (array_agg(url ORDER BY ts, url) FILTER (WHERE url IS NOT NULL))[1] AS f_ref,
			 (array_agg(url ORDER BY ts DESC, url DESC) FILTER (WHERE url IS NOT NULL))[1] AS l_ref
	  FROM measure_events GROUP BY user_id) r;

-- Ties: the least value first, the greatest last, whatever the order.
SELECT sessionize.first(v, t), sessionize.last(v, t)
FROM (VALUES ('b', timestamptz '2024-01-01'), ('a', '2024-01-01'), ('c', '2024-01-01'), ('z', NULL), (NULL, '2023-01-01')) x(v, t);
SELECT sessionize.first(v, t), sessionize.last(v, t)
FROM (VALUES ('c', timestamptz '2024-01-01'), ('a', '2024-01-01'), ('b', '2024-01-01')) x(v, t);

-- No rows, or only nulls: null; approx_count_distinct: 0.
SELECT sessionize.first(1, now()) IS NULL AS first_null, sessionize.approx_count_distinct(1) AS distinct_none
FROM measure_events WHERE false;
SELECT sessionize.first(NULL::int, now()) IS NULL AS only_nulls;

-- Any type with a btree order, the result typed as the value.
SELECT pg_typeof(sessionize.first(product_id, ts)), sessionize.first(product_id::numeric, ts) = sessionize.first(product_id, ts)::numeric
FROM measure_events;
SELECT sessionize.first(jsonb_build_object('u', url), ts) FROM measure_events WHERE user_id = 3;

-- approx_count_distinct(): exact up to 128 distinct values.
SELECT count(*) AS groups, bool_and(a = e) AS exact_while_small
FROM (SELECT sessionize.approx_count_distinct(product_id % (user_id + 32)) AS a,
			 count(DISTINCT product_id % (user_id + 32)) AS e
	  FROM measure_events GROUP BY user_id) r;

-- Beyond: within 5% (about three standard errors) of the exact count.
SELECT abs(a - e)::float8 / e < 0.05 AS within_error
FROM (SELECT sessionize.approx_count_distinct(n) AS a, count(DISTINCT n) AS e FROM measure_events) r;
SELECT abs(a - e)::float8 / e < 0.05 AS within_error_text
FROM (SELECT sessionize.approx_count_distinct(n::text || 'x') AS a, count(DISTINCT n) AS e FROM measure_events) r;

-- Duplicates do not count; the input order does not matter.
SELECT (SELECT sessionize.approx_count_distinct(n % 3000) FROM measure_events)
	 = (SELECT sessionize.approx_count_distinct(m) FROM (SELECT n % 3000 AS m FROM measure_events ORDER BY random()) s)
	AS order_free;

-- A parallel plan (states serialized, combined) gives what a serial one gives.
CREATE TABLE measure_results AS
SELECT user_id, sessionize.first(url, ts) AS f, sessionize.last(url, ts) AS l,
	   sessionize.approx_count_distinct(product_id) AS d
FROM measure_events GROUP BY user_id;
SELECT sessionize.approx_count_distinct(n) AS serial_total FROM measure_events \gset
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
SET force_parallel_mode = on;
SET enable_hashagg = off;
EXPLAIN (COSTS OFF)
SELECT user_id, sessionize.first(url, ts) FROM measure_events GROUP BY user_id;
SELECT count(*) AS differences
FROM (SELECT user_id, sessionize.first(url, ts) AS f, sessionize.last(url, ts) AS l,
			 sessionize.approx_count_distinct(product_id) AS d
	  FROM measure_events GROUP BY user_id) p
FULL JOIN measure_results r USING (user_id)
WHERE p.f IS DISTINCT FROM r.f OR p.l IS DISTINCT FROM r.l OR p.d IS DISTINCT FROM r.d;
SELECT sessionize.approx_count_distinct(n) = :serial_total AS same_total FROM measure_events;
RESET parallel_setup_cost;
RESET parallel_tuple_cost;
RESET min_parallel_table_scan_size;
RESET max_parallel_workers_per_gather;
RESET force_parallel_mode;
RESET enable_hashagg;

-- Errors: a type without an order, a type without a hash.
SELECT sessionize.first(point(1, 2), now());
SELECT sessionize.approx_count_distinct(point(1, 2));

DROP TABLE measure_events, measure_results;
