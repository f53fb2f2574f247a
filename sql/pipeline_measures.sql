-- Session measures of pipelines: after re-deliveries, events arriving in any
-- order and in batches of any size, bridging events that merge sessions,
-- every measure equals the batch query over the distinct events:
-- GROUP BY key and session_id() with the same aggregates.
SET TimeZone = 'UTC';
SELECT setseed(0.17);

CREATE TABLE shop_events (user_id int, ts timestamptz, url text, event_type text, price numeric, product_id int);
CREATE TABLE shop_distinct AS
SELECT (n % 40) AS user_id,
	   timestamptz '2024-03-01' + (random() * 3000)::int * interval '1 minute' AS ts,
	   CASE WHEN random() < 0.1 THEN NULL ELSE (ARRAY['/', '/search', '/product', '/cart'])[1 + (random() * 3)::int] END AS url,
	   (ARRAY['view', 'view', 'view', 'cart', 'buy'])[1 + (random() * 4)::int] AS event_type,
	   CASE WHEN random() < 0.3 THEN round((random() * 100)::numeric, 2) END AS price,
	   (random() * 300)::int AS product_id
FROM generate_series(1, 3000) n;
-- 20% re-delivered, everything in a random order
CREATE TABLE shop_deliveries AS
SELECT e.*, random() AS arrival
FROM (SELECT * FROM shop_distinct UNION ALL SELECT * FROM shop_distinct WHERE random() < 0.2) e;

SELECT sessionize.create_pipeline('shop', 'shop_events', 'user_id', 'ts', '30 minutes', dedup_window => NULL,
	measures => $$
		first(url) AS landing_page,
		last(url) AS exit_page,
		count(*) FILTER (WHERE event_type = 'view') AS pageviews,
		count(price) AS priced,
		sum(price) AS revenue,
		sum(product_id) FILTER (WHERE event_type = 'buy') AS bought_ids,
		min(price) AS cheapest,
		max(url) AS last_url_alphabetically,
		bool_or(event_type = 'buy') AS converted,
		bool_and(event_type <> 'cart') AS never_carted,
		approx_count_distinct(product_id) AS products
	$$);

-- Deliveries arrive in ten waves in random order, each drained in batches
-- of random size: later waves extend, bridge and merge stored sessions.
DO $$
DECLARE
	wave int;
	taken bigint;
BEGIN
	FOR wave IN 0..9 LOOP
		INSERT INTO shop_events
		SELECT user_id, ts, url, event_type, price, product_id FROM shop_deliveries
		WHERE arrival >= wave / 10.0 AND arrival < (wave + 1) / 10.0;
		LOOP
			SELECT consumed INTO taken FROM sessionize.run_pipeline('shop', 1 + (random() * 300)::int);
			EXIT WHEN taken = 0;
		END LOOP;
	END LOOP;
END $$;

SELECT consumed = (SELECT count(*) FROM shop_deliveries) AS all_consumed,
	   merged = (SELECT count(*) FROM (SELECT DISTINCT * FROM shop_distinct) d) AS distinct_merged,
	   late, dead_lettered
FROM sessionize.pipeline_status WHERE name = 'shop';

CREATE VIEW shop_reference AS
WITH events AS (SELECT DISTINCT * FROM shop_distinct),
	 numbered AS (SELECT *, sessionize.session_id(ts, '30 minutes') OVER (PARTITION BY user_id ORDER BY ts) AS session
				  FROM events)
SELECT user_id AS key, min(ts) AS session_start, max(ts) AS last_event_at, count(*) AS events,
	   sessionize.first(url, ts) AS landing_page,
	   sessionize.last(url, ts) AS exit_page,
	   count(*) FILTER (WHERE event_type = 'view') AS pageviews,
	   count(price) AS priced,
	   sum(price) AS revenue,
	   sum(product_id) FILTER (WHERE event_type = 'buy') AS bought_ids,
	   min(price) AS cheapest,
	   max(url) AS last_url_alphabetically,
	   bool_or(event_type = 'buy') AS converted,
	   bool_and(event_type <> 'cart') AS never_carted,
	   sessionize.approx_count_distinct(product_id) AS products,
	   count(DISTINCT product_id) AS exact_products
FROM numbered GROUP BY user_id, session;

SELECT count(*) AS sessions,
	   count(*) FILTER (WHERE p.key IS NULL OR r.key IS NULL) AS unmatched,
	   count(*) FILTER (WHERE p.landing_page IS DISTINCT FROM r.landing_page) AS landing_page,
	   count(*) FILTER (WHERE p.exit_page IS DISTINCT FROM r.exit_page) AS exit_page,
	   count(*) FILTER (WHERE p.pageviews IS DISTINCT FROM r.pageviews) AS pageviews,
	   count(*) FILTER (WHERE p.priced IS DISTINCT FROM r.priced) AS priced,
	   count(*) FILTER (WHERE p.revenue IS DISTINCT FROM r.revenue) AS revenue,
	   count(*) FILTER (WHERE p.bought_ids IS DISTINCT FROM r.bought_ids) AS bought_ids,
	   count(*) FILTER (WHERE p.cheapest IS DISTINCT FROM r.cheapest) AS cheapest,
	   count(*) FILTER (WHERE p.last_url_alphabetically IS DISTINCT FROM r.last_url_alphabetically) AS max_url,
	   count(*) FILTER (WHERE p.converted IS DISTINCT FROM r.converted) AS converted,
	   count(*) FILTER (WHERE p.never_carted IS DISTINCT FROM r.never_carted) AS never_carted,
	   count(*) FILTER (WHERE p.products IS DISTINCT FROM r.products) AS products,
	   count(*) FILTER (WHERE p.products IS DISTINCT FROM r.exact_products) AS products_not_exact
FROM sessionize.shop_sessions p FULL JOIN shop_reference r USING (key, session_start);

-- Sessions merged by bridging events there were: the test covers merges.
SELECT count(*) > 0 AS some_merged FROM sessionize.shop_changes WHERE change = 'merged';
-- The change log carries the measures, typed.
SELECT pg_typeof(landing_page) AS landing_page, pg_typeof(revenue) AS revenue, pg_typeof(products) AS products,
	   pg_typeof(bought_ids) AS bought_ids
FROM sessionize.shop_changes LIMIT 1;
SELECT count(*) AS changes_without_measures FROM sessionize.shop_changes WHERE pageviews IS NULL;

-- A late event replayed: measured like any other.
SELECT sessionize.alter_pipeline('shop', allowed_lateness => '1 hour');
INSERT INTO shop_events VALUES (7, '2024-02-01 00:00', '/late', 'buy', 5, 999);
SELECT consumed, late FROM sessionize.run_pipeline('shop');
SELECT sessionize.replay_late('shop');
SELECT landing_page, revenue, converted, products FROM sessionize.shop_sessions
WHERE key = 7 AND session_start = '2024-02-01 00:00';
SELECT sessionize.drop_pipeline('shop');

-- A source of JSON documents: measures name fields of the payload, as text.
CREATE TABLE shop_docs (doc jsonb);
SELECT sessionize.create_pipeline('docs', 'shop_docs', 'user', 'at', '30 minutes', payload_column => 'doc',
	measures => $$ first(page) AS landing_page, sum(amount::numeric) AS revenue, count(*) FILTER (WHERE page = '/buy') AS buys $$);
INSERT INTO shop_docs VALUES
	('{"user": "u1", "at": "2024-03-01 10:00+00", "page": "/home"}'),
	('{"user": "u1", "at": "2024-03-01 10:05+00", "page": "/buy", "amount": 12.5}'),
	('{"user": "u1", "at": "2024-03-01 09:58+00", "page": "/ad", "amount": "1"}');
SELECT consumed, merged, dead_lettered FROM sessionize.run_pipeline('docs');
SELECT key, events, landing_page, revenue, buys FROM sessionize.docs_sessions;
-- a field that is not a number is the event's problem: it alone is a dead letter
INSERT INTO shop_docs VALUES ('{"user": "u1", "at": "2024-03-01 10:07+00", "page": "/buy", "amount": "lots"}');
SELECT consumed, merged, dead_lettered FROM sessionize.run_pipeline('docs');
SELECT error FROM sessionize.pipeline_dead_letters WHERE pipeline = 'docs';
SELECT sessionize.drop_pipeline('docs');

-- Every error of a measures list.
SELECT sessionize.create_pipeline('bad', 'shop_events', 'user_id', 'ts', '30 minutes', measures => 'first(url)');
SELECT sessionize.create_pipeline('bad', 'shop_events', 'user_id', 'ts', '30 minutes', measures => 'median(price) AS m');
SELECT sessionize.create_pipeline('bad', 'shop_events', 'user_id', 'ts', '30 minutes', measures => 'url AS u');
SELECT sessionize.create_pipeline('bad', 'shop_events', 'user_id', 'ts', '30 minutes', measures => 'first(urll) AS u');
SELECT sessionize.create_pipeline('bad', 'shop_events', 'user_id', 'ts', '30 minutes', measures => 'sum(url) AS u');
SELECT sessionize.create_pipeline('bad', 'shop_events', 'user_id', 'ts', '30 minutes', measures => 'sum(price::float8) AS u');
SELECT sessionize.create_pipeline('bad', 'shop_events', 'user_id', 'ts', '30 minutes', measures => 'bool_or(price) AS u');
SELECT sessionize.create_pipeline('bad', 'shop_events', 'user_id', 'ts', '30 minutes', measures => 'min(point(price, price)) AS u');
SELECT sessionize.create_pipeline('bad', 'shop_events', 'user_id', 'ts', '30 minutes', measures => 'count(*) AS events');
SELECT sessionize.create_pipeline('bad', 'shop_events', 'user_id', 'ts', '30 minutes', measures => 'count(*) AS a, count(url) AS a');
SELECT sessionize.create_pipeline('bad', 'shop_events', 'user_id', 'ts', '30 minutes', measures => 'count(*) AS a__b');
SELECT sessionize.create_pipeline('bad', 'shop_events', 'user_id', 'ts', '30 minutes', measures => 'count(DISTINCT url) AS a');
SELECT sessionize.create_pipeline('bad', 'shop_events', 'user_id', 'ts', '30 minutes', measures => 'count(url ORDER BY ts) AS a');
SELECT sessionize.create_pipeline('bad', 'shop_events', 'user_id', 'ts', '30 minutes', measures => 'sum(*) AS a');
SELECT sessionize.create_pipeline('bad', 'shop_events', 'user_id', 'ts', '30 minutes', measures => 'first(url, ts) AS a');
SELECT sessionize.create_pipeline('bad', 'shop_events', 'user_id', 'ts', '30 minutes', measures => 'pg_catalog.count(*) AS a');
SELECT sessionize.create_pipeline('bad', 'shop_events', 'user_id', 'ts', '30 minutes', measures => 'count(*) FILTER (WHERE url) AS a');
SELECT sessionize.create_pipeline('bad', 'shop_events', 'user_id', 'ts', '30 minutes', measures => 'sum(max(price)) AS a');
SELECT sessionize.create_pipeline('bad', 'shop_events', 'user_id', 'ts', '30 minutes', measures => 'first(generate_series(1, 2)) AS a');
SELECT sessionize.create_pipeline('bad', 'shop_events', 'user_id', 'ts', '30 minutes', measures => 'first(shop_events.url) AS a');
SELECT sessionize.create_pipeline('bad', 'shop_events', 'user_id', 'ts', '30 minutes', measures => 'count(*) AS a FROM shop_events');
SELECT sessionize.create_pipeline('bad', 'shop_events', 'user_id', 'ts', '30 minutes', measures => 'count(*) AS a; DROP TABLE shop_events');
SELECT sessionize.create_pipeline('bad', 'shop_events', 'user_id', 'ts', '30 minutes', measures => 'count(*) AS (');
SELECT count(*) AS nothing_left FROM sessionize.pipelines WHERE name = 'bad';

DROP VIEW shop_reference;
DROP TABLE shop_events, shop_distinct, shop_deliveries, shop_docs;
