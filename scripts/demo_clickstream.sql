-- The demo clickstream, demo.clicks: the same rows on every run (a fixed
-- seed), so that `make demo` and the README's examples, which the README
-- test runs on it, show the same numbers.  Needs schema demo and TimeZone
-- UTC.
SELECT setseed(0.2024);

-- 30,000 users over one week.  A user comes back every few hours; within a
-- visit, clicks are seconds to minutes apart.  The first click of most
-- visits carries the campaign that brought the user; a checkout has an
-- amount.  About 2% of the rows arrive late, out of time order, as mobile
-- clients that were offline do.
CREATE TABLE demo.clicks (
	id bigserial PRIMARY KEY,
	user_id bigint NOT NULL,
	ts timestamptz NOT NULL,
	url text NOT NULL,
	campaign text,
	price numeric
);
WITH visits AS (
	SELECT user_id, visit,
		   timestamptz '2024-06-03' + (random() * 7 * 86400) * interval '1 second' AS started,
		   1 + (random() ^ 2 * 25)::int AS clicks
	FROM generate_series(1, 30000) AS user_id
		 CROSS JOIN LATERAL generate_series(1, 1 + (random() * 9 + 0 * user_id)::int) AS visit),
generated AS (
	SELECT v.user_id,
		   v.started + sum((5 + random() ^ 3 * 900)::int) OVER (PARTITION BY v.user_id, v.visit ORDER BY click)
			 * interval '1 second' AS ts,
		   (ARRAY['/', '/search', '/product', '/product', '/product', '/cart', '/checkout', '/help'])[1 + (random() * 7)::int] AS url,
		   CASE WHEN click = 1 THEN (ARRAY['newsletter', 'search_ad', 'social', NULL])[1 + (random() * 3)::int] END AS campaign
	FROM visits v, generate_series(1, v.clicks) AS click)
INSERT INTO demo.clicks (user_id, ts, url, campaign, price)
SELECT user_id, ts, url, campaign,
	   CASE WHEN url = '/checkout' THEN round((10 + random() * 190)::numeric, 2) END
FROM generated
ORDER BY CASE WHEN random() < 0.02 THEN ts + interval '3 hours' ELSE ts END;
ANALYZE demo.clicks;
