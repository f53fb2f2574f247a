-- The demo pipeline the dashboard shows: a small generated clickstream of
-- two days, run through the pipeline `clicks` by run_pipeline() (paused, so
-- that no worker takes its batches and the numbers are the same every run),
-- with re-deliveries, events older than the allowed lateness, an event
-- without a time (dead-lettered) and a few events still waiting.  The
-- dashboard reads it as `sessionize_dashboard`, a role that may read this
-- pipeline's results and nothing else.
\set ON_ERROR_STOP on
SET timezone = 'UTC';
SELECT setseed(0.15);

CREATE EXTENSION IF NOT EXISTS sessionize;
CREATE SCHEMA demo;
CREATE TABLE demo.click_stream (id bigserial, user_id bigint, ts timestamptz, url text);
SELECT sessionize.create_pipeline('clicks', 'demo.click_stream', 'user_id', 'ts', '30 minutes',
								  allowed_lateness => '2 hours', fingerprint_exclude => '{id}',
								  type_column => 'url');
SELECT sessionize.pause_pipeline('clicks');

-- 1,000 users over two days (June 3 and 4, 2024, UTC), each back every few
-- hours; clicks within a visit are seconds to minutes apart.
CREATE TABLE demo.clicks AS
WITH visits AS (
	SELECT user_id, visit,
		   timestamptz '2024-06-03' + (random() * (2 * 86400 - 7200)) * interval '1 second' AS started,
		   1 + (random() ^ 3 * 20)::int AS clicks
	FROM generate_series(1, 1000) AS user_id
		 CROSS JOIN LATERAL generate_series(1, 1 + (random() * 5 + 0 * user_id)::int) AS visit)
SELECT v.user_id,
	   v.started + sum((5 + random() ^ 3 * 900)::int) OVER (PARTITION BY v.user_id, v.visit ORDER BY click)
		 * interval '1 second' AS ts,
	   (ARRAY['/', '/search', '/product', '/product', '/cart', '/checkout', '/help'])[1 + (random() * 6)::int] AS url
FROM visits v, generate_series(1, v.clicks) AS click;

-- 5% of the events are delivered twice.  Those of one user in 100 arrive
-- after the others, most of them older than the allowed lateness by then.
CREATE TABLE demo.deliveries AS
SELECT user_id, ts, url FROM demo.clicks
UNION ALL
SELECT user_id, ts, url FROM demo.clicks WHERE random() < 0.05;
INSERT INTO demo.click_stream (user_id, ts, url)
SELECT user_id, ts, url FROM demo.deliveries WHERE user_id % 100 <> 7 ORDER BY ts;
DO $$
BEGIN
	WHILE (SELECT (sessionize.run_pipeline('clicks', 5000)).consumed > 0) LOOP
	END LOOP;
END $$;
INSERT INTO demo.click_stream (user_id, ts, url)
SELECT user_id, ts, url FROM demo.deliveries WHERE user_id % 100 = 7 ORDER BY ts;
SELECT consumed, merged, late FROM sessionize.run_pipeline('clicks', 5000);

-- An event without a time is dead-lettered; then 25 events wait for the
-- next batch.
INSERT INTO demo.click_stream (user_id, ts, url) VALUES (1, NULL, '/');
SELECT consumed, dead_lettered FROM sessionize.run_pipeline('clicks', 5000);
INSERT INTO demo.click_stream (user_id, ts, url)
SELECT n, timestamptz '2024-06-04 23:00' + n * interval '1 second', '/' FROM generate_series(1, 25) n;

DO $$
BEGIN
	IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sessionize_dashboard') THEN
		CREATE ROLE sessionize_dashboard LOGIN;
	END IF;
END $$;
SELECT sessionize.grant_reader('clicks', 'sessionize_dashboard');
