#!/usr/bin/env bash
# `make demo`: sessionize on a generated clickstream, on a throwaway cluster
# that the demo creates and stops.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/cluster.sh

bash scripts/install-deps.sh
make -s
make -s install >/dev/null
cluster_start
echo "throwaway cluster on port $PGPORT"

psql -X -q -v ON_ERROR_STOP=1 <<'SQL'
CREATE EXTENSION sessionize;
CREATE SCHEMA demo;
SET timezone = 'UTC';
\i scripts/demo_clickstream.sql

\echo
\echo == The clickstream
SELECT count(*) AS events, count(DISTINCT user_id) AS users,
	   min(ts)::date AS first_day, max(ts)::date AS last_day,
	   count(*) FILTER (WHERE ts < lag_ts) AS rows_out_of_order
FROM (SELECT ts, lag(ts) OVER (ORDER BY id) AS lag_ts, user_id FROM demo.clicks) c;

\echo
\echo == User 42: clicks, numbered into sessions (30-minute inactivity gap)
SELECT user_id, ts, url,
	   sessionize.session_id(ts, '30 minutes') OVER w AS session,
	   sessionize.session_start(ts, '30 minutes') OVER w AS session_start
FROM demo.clicks WHERE user_id = 42
WINDOW w AS (PARTITION BY user_id ORDER BY ts)
ORDER BY ts LIMIT 12;

\echo
\echo == User 42: sessions from the aggregate, which needs no ordering
SELECT s.*, s.ended_at - s.started_at AS duration
FROM (SELECT sessionize.session_set(ts, '30 minutes') AS all_sessions FROM demo.clicks WHERE user_id = 42) u,
	 sessionize.session_rows(all_sessions) s;

CREATE TABLE demo.sessions AS
SELECT user_id, s.started_at, s.ended_at, s.events
FROM (SELECT user_id, sessionize.session_set(ts, '30 minutes') AS all_sessions
	  FROM demo.clicks GROUP BY user_id) per_user,
	 sessionize.session_rows(all_sessions) s;

\echo
\echo == Sessions per user
SELECT sessions_per_user, count(*) AS users, repeat('#', (count(*) / 100)::int) AS histogram
FROM (SELECT user_id, count(*) AS sessions_per_user FROM demo.sessions GROUP BY user_id) u
GROUP BY sessions_per_user ORDER BY sessions_per_user;

\echo
\echo == Session KPIs
SELECT count(*) AS sessions,
	   round(avg(events), 1) AS avg_events,
	   round(100.0 * count(*) FILTER (WHERE events = 1) / count(*), 1) AS bounce_rate_pct,
	   justify_interval(percentile_disc(0.5) WITHIN GROUP (ORDER BY ended_at - started_at)) AS p50_duration,
	   justify_interval(percentile_disc(0.9) WITHIN GROUP (ORDER BY ended_at - started_at)) AS p90_duration,
	   justify_interval(percentile_disc(0.99) WITHIN GROUP (ORDER BY ended_at - started_at)) AS p99_duration
FROM demo.sessions;

\echo
\echo == Sessions cut at 1 hour (max_duration), and with a longer gap for checkout clicks
SELECT 'gap 30 min' AS rule, count(*) AS sessions FROM demo.sessions
UNION ALL
SELECT 'gap 30 min, at most 1 hour', count(*)
FROM (SELECT sessionize.session_set(ts, '30 minutes', '1 hour') AS s FROM demo.clicks GROUP BY user_id) u,
	 sessionize.session_rows(u.s)
UNION ALL
SELECT 'gap 2 hours after /checkout', count(*)
FROM (SELECT sessionize.session_set(ts, CASE WHEN url = '/checkout' THEN interval '2 hours'
											 ELSE interval '30 minutes' END) AS s
	  FROM demo.clicks GROUP BY user_id) u,
	 sessionize.session_rows(u.s);

\echo
\echo == Check: the window function and the aggregate agree
SELECT CASE WHEN NOT EXISTS (
	(SELECT user_id, started_at, ended_at, events FROM demo.sessions
	 EXCEPT
	 SELECT user_id, min(ts), max(ts), count(*)
	 FROM (SELECT user_id, ts, sessionize.session_start(ts, '30 minutes') OVER (PARTITION BY user_id ORDER BY ts) AS s
		   FROM demo.clicks) w GROUP BY user_id, s))
	THEN 'agree' ELSE 'DISAGREE' END AS window_vs_aggregate;
SQL

# Behavioral analytics over the same clicks: how far users get down a
# conversion funnel within an hour, and who comes back a day and a week after
# their first day.
psql -X -q -v ON_ERROR_STOP=1 <<'SQL'
SET timezone = 'UTC';
\echo
\echo == Conversion funnel: / then /product then /cart then /checkout, within 1 hour (window_funnel)
WITH levels AS (
	SELECT user_id, sessionize.window_funnel('1 hour', ts, url = '/', url = '/product', url = '/cart',
											 url = '/checkout') AS level
	FROM demo.clicks GROUP BY user_id)
SELECT step, page, count(*) FILTER (WHERE level >= step) AS users,
	   round(100.0 * count(*) FILTER (WHERE level >= step) / count(*) FILTER (WHERE level >= 1), 1) AS pct_of_step_1,
	   repeat('#', (count(*) FILTER (WHERE level >= step) / 500)::int) AS bar
FROM levels, (VALUES (1, '/'), (2, '/product'), (3, '/cart'), (4, '/checkout')) s(step, page)
GROUP BY step, page ORDER BY step;

\echo
\echo == Retention by first day: back on day 1 and on day 7 after it (retention; NULL: not observed yet)
WITH cohorts AS (SELECT user_id, min(ts)::date AS cohort FROM demo.clicks GROUP BY user_id),
retained AS (
	SELECT k.cohort, sessionize.retention(c.ts::date = k.cohort, c.ts::date = k.cohort + 1,
										  c.ts::date = k.cohort + 7) AS r
	FROM demo.clicks c JOIN cohorts k USING (user_id) GROUP BY c.user_id, k.cohort)
SELECT cohort, count(*) AS users,
	   round(100.0 * count(*) FILTER (WHERE r[2]) / count(*), 1) AS day_1_pct,
	   CASE WHEN cohort + 7 <= (SELECT max(ts)::date FROM demo.clicks)
			THEN round(100.0 * count(*) FILTER (WHERE r[3]) / count(*), 1) END AS day_7_pct
FROM retained GROUP BY cohort ORDER BY cohort;

\echo
\echo == After the cart: the page users open next (sequence_next_node), and carts abandoned (sequence_match)
SELECT next_page, count(*) AS users
FROM (SELECT user_id, sessionize.sequence_next_node('forward', 'first_match', ts, url, url = '/cart', url = '/cart') AS next_page
	  FROM demo.clicks GROUP BY user_id) n
WHERE next_page IS NOT NULL GROUP BY next_page ORDER BY users DESC;
SELECT count(*) FILTER (WHERE cart) AS users_with_cart,
	   count(*) FILTER (WHERE cart AND NOT checkout_within_hour) AS no_checkout_within_1_hour
FROM (SELECT user_id, sessionize.sequence_match('.*(?1)', ts, url = '/cart') AS cart,
			 sessionize.sequence_match('.*(?1).*(?t<=3600)(?2)', ts, url = '/cart', url = '/checkout') AS checkout_within_hour
	  FROM demo.clicks GROUP BY user_id) m;
SQL

# The same clickstream as a stream: a producer inserts it into a staging
# table, in arrival order and with re-deliveries, while the pipeline worker
# (started by the launcher, preloaded in this cluster) keeps sessions current.
psql -X -q -v ON_ERROR_STOP=1 <<'SQL'
SET timezone = 'UTC';
CREATE TABLE demo.click_stream (id bigserial, user_id bigint, ts timestamptz, url text, campaign text, price numeric);
-- Events of the first 10,000 users in arrival order; 5% of them delivered
-- twice, the copy a little later, as an at-least-once queue does.
CREATE TABLE demo.arrivals AS
SELECT row_number() OVER (ORDER BY arrival) AS arrival, user_id, ts, url, campaign, price
FROM (SELECT id AS arrival, user_id, ts, url, campaign, price FROM demo.clicks WHERE user_id <= 10000
	  UNION ALL
	  SELECT id + 200 + (random() * 5000)::int, user_id, ts, url, campaign, price FROM demo.clicks
	  WHERE user_id <= 10000 AND random() < 0.05) a;
SELECT sessionize.create_pipeline('clicks', 'demo.click_stream', 'user_id', 'ts', '30 minutes',
								  allowed_lateness => '2 hours', fingerprint_exclude => '{id}',
								  type_column => 'url',
								  measures => $$
									  first(url) AS landing_page,
									  last(url) AS exit_page,
									  first(campaign) AS campaign,
									  count(*) FILTER (WHERE url = '/product') AS product_views,
									  sum(price) AS revenue,
									  bool_or(url = '/checkout') AS converted,
									  approx_count_distinct(url) AS distinct_pages
								  $$);
-- a profile per user and day, kept by the same batches: which pages and
-- campaigns a user engages with, and what they pay
SELECT sessionize.add_profile('clicks', 'interests', '{url,campaign}', '{price}');
SQL
echo
echo "== Streaming $(psql -X -qAt -c 'SELECT count(*) FROM demo.arrivals') events into demo.click_stream; the worker sessionizes them"
psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<'SQL' &
DO $$
DECLARE
	total bigint := (SELECT count(*) FROM demo.arrivals);
	fed bigint := 0;
BEGIN
	WHILE fed < total LOOP
		INSERT INTO demo.click_stream (user_id, ts, url, campaign, price)
		SELECT user_id, ts, url, campaign, price FROM demo.arrivals WHERE arrival > fed AND arrival <= fed + 20000 ORDER BY arrival;
		fed := fed + 20000;
		COMMIT;
		PERFORM pg_sleep(0.4);
	END LOOP;
END $$;
SQL
producer=$!
status_query="SELECT to_char(clock_timestamp(), 'HH24:MI:SS') AS at, worker_pid IS NOT NULL AS worker,
	consumed, merged, duplicates, late, dead_lettered AS dead, backlog,
	to_char(watermark, 'Dy HH24:MI') AS watermark,
	(SELECT count(*) FROM sessionize.clicks_sessions_live) AS live_sessions,
	(SELECT count(*) FROM sessionize.clicks_sessions_final) AS final_sessions
	FROM sessionize.pipeline_status WHERE name = 'clicks'"
psql -X -c "$status_query" | head -2
while kill -0 "$producer" 2>/dev/null || [ "$(psql -X -qAt -c "SELECT backlog FROM sessionize.pipeline_status WHERE name = 'clicks'")" != 0 ]; do
	psql -X -qAt -F ' | ' -c "$status_query"
	sleep 2
done
wait "$producer"
psql -X -qAt -F ' | ' -c "$status_query"

psql -X -q -v ON_ERROR_STOP=1 <<'SQL'
SET timezone = 'UTC';
\echo
\echo == Pipeline status
SELECT name, state, consumed, merged, duplicates, late, dead_lettered, batches,
	   round(consumed / greatest(extract(epoch FROM last_batch_at - (SELECT created_at FROM sessionize.pipelines WHERE name = 'clicks')), 1))
		 AS avg_events_per_s,
	   max_event_time, watermark
FROM sessionize.pipeline_status;

\echo
\echo == What the change log recorded (LISTEN sessionize_clicks gets one notification per batch)
SELECT change, count(*) FROM sessionize.clicks_changes GROUP BY change ORDER BY count(*) DESC;

\echo
\echo == Session KPIs from the live tables
SELECT status, count(*) AS sessions, round(avg(events), 1) AS avg_events,
	   justify_interval(percentile_disc(0.5) WITHIN GROUP (ORDER BY last_event_at - session_start)) AS p50_duration,
	   round(100.0 * count(*) FILTER (WHERE (type_counts ->> '/checkout') IS NOT NULL) / count(*), 1) AS with_checkout_pct
FROM (SELECT * FROM sessionize.clicks_sessions_live UNION ALL SELECT * FROM sessionize.clicks_sessions_final) s
GROUP BY status ORDER BY status;

\echo
\echo == Session measures the pipeline keeps: a few sessions of user 42
SELECT session_start, events, landing_page, exit_page, campaign, product_views, revenue, converted, distinct_pages
FROM sessionize.clicks_sessions WHERE key = 42 ORDER BY session_start LIMIT 5;

\echo
\echo == Conversion by landing page, read from the measures
SELECT landing_page, count(*) AS sessions, round(100.0 * count(*) FILTER (WHERE converted) / count(*), 1) AS converted_pct,
	   round(avg(product_views), 2) AS avg_product_views
FROM sessionize.clicks_sessions GROUP BY landing_page ORDER BY sessions DESC;

\echo
\echo == Revenue by campaign (a session has the campaign of its first click)
SELECT coalesce(campaign, '(none)') AS campaign, count(*) AS sessions,
	   round(100.0 * count(*) FILTER (WHERE converted) / count(*), 1) AS converted_pct,
	   coalesce(sum(revenue), 0) AS revenue, round(coalesce(sum(revenue), 0) / count(*), 2) AS revenue_per_session
FROM sessionize.clicks_sessions GROUP BY campaign ORDER BY revenue DESC;

\echo
\echo == Late events, set aside with their reason (not lost)
SELECT event ->> 'user_id' AS user_id, event ->> 'ts' AS ts, reason FROM sessionize.clicks_late ORDER BY id LIMIT 3;

\echo
\echo == Check: the stream equals the batch query over the distinct events that were not late
SELECT CASE WHEN NOT EXISTS (
	(SELECT key, session_start, last_event_at, events FROM sessionize.clicks_sessions
	 EXCEPT
	 SELECT user_id, (s).started_at, (s).ended_at, (s).events
	 FROM (SELECT user_id, unnest(sessionize.sessions(ts, '30 minutes')) AS s
		   FROM (SELECT DISTINCT user_id, ts, url FROM demo.arrivals
				 EXCEPT
				 SELECT (event ->> 'user_id')::bigint, (event ->> 'ts')::timestamptz, event ->> 'url'
				 FROM sessionize.clicks_late) e
		   GROUP BY user_id) x))
	THEN 'agree' ELSE 'DISAGREE' END AS stream_vs_batch;

\echo
\echo == Raise the allowed lateness and replay the late events: now everything agrees
SELECT sessionize.alter_pipeline('clicks', allowed_lateness => '1 day');
SELECT sessionize.replay_late('clicks') AS replayed;
SELECT CASE WHEN NOT EXISTS (
	(SELECT key, session_start, last_event_at, events FROM sessionize.clicks_sessions
	 EXCEPT
	 SELECT user_id, (s).started_at, (s).ended_at, (s).events
	 FROM (SELECT user_id, unnest(sessionize.sessions(ts, '30 minutes')) AS s
		   FROM (SELECT DISTINCT user_id, ts, url FROM demo.arrivals) e GROUP BY user_id) x)
	UNION ALL
	(SELECT user_id, (s).started_at, (s).ended_at, (s).events
	 FROM (SELECT user_id, unnest(sessionize.sessions(ts, '30 minutes')) AS s
		   FROM (SELECT DISTINCT user_id, ts, url FROM demo.arrivals) e GROUP BY user_id) x
	 EXCEPT
	 SELECT key, session_start, last_event_at, events FROM sessionize.clicks_sessions))
	THEN 'agree' ELSE 'DISAGREE' END AS stream_vs_batch_after_replay;
SELECT CASE WHEN NOT EXISTS (
	SELECT key, session_start, landing_page, exit_page, campaign, product_views, revenue, converted, distinct_pages
	FROM sessionize.clicks_sessions
	EXCEPT
	SELECT user_id, min(ts), sessionize.first(url, ts), sessionize.last(url, ts), sessionize.first(campaign, ts),
		   count(*) FILTER (WHERE url = '/product'), sum(price), bool_or(url = '/checkout'),
		   sessionize.approx_count_distinct(url)
	FROM (SELECT *, sessionize.session_id(ts, '30 minutes') OVER (PARTITION BY user_id ORDER BY ts) AS session
		  FROM (SELECT DISTINCT user_id, ts, url, campaign, price FROM demo.arrivals) e) s
	GROUP BY user_id, session)
	THEN 'agree' ELSE 'DISAGREE' END AS measures_vs_batch_after_replay;

\echo
\echo == The profile of user 42 over the week: page and campaign shares, what the user paid
SELECT jsonb_pretty(sessionize.profile('clicks', 'interests', 42, '2024-06-03', '2024-06-10'));
\echo
\echo == The same, recent days weighing more (half life 2 days) and smoothed toward all users (prior weight 20)
SELECT jsonb_pretty(sessionize.profile('clicks', 'interests', 42, '2024-06-03', '2024-06-10',
									   half_life => '2 days', prior_weight => 20));
\echo
\echo == A user never seen gets the prior alone: the shares of all users
SELECT sessionize.profile('clicks', 'interests', 999999, '2024-06-03', '2024-06-10', prior_weight => 20)
	   -> 'categorical' -> 'campaign' AS newcomer_campaigns;
SELECT CASE WHEN NOT EXISTS (
	(SELECT key, day, dimension, value, count FROM sessionize.clicks_profile_interests
	 EXCEPT ALL
	 SELECT user_id, (ts AT TIME ZONE 'UTC')::date, d.dimension, d.value, count(*)
	 FROM (SELECT DISTINCT user_id, ts, url, campaign, price FROM demo.arrivals) e,
		  LATERAL (VALUES ('url', url), ('campaign', campaign)) d(dimension, value)
	 WHERE d.value IS NOT NULL GROUP BY 1, 2, 3, 4)
	UNION ALL
	(SELECT user_id, (ts AT TIME ZONE 'UTC')::date, d.dimension, d.value, count(*)
	 FROM (SELECT DISTINCT user_id, ts, url, campaign, price FROM demo.arrivals) e,
		  LATERAL (VALUES ('url', url), ('campaign', campaign)) d(dimension, value)
	 WHERE d.value IS NOT NULL GROUP BY 1, 2, 3, 4
	 EXCEPT ALL
	 SELECT key, day, dimension, value, count FROM sessionize.clicks_profile_interests))
	THEN 'agree' ELSE 'DISAGREE' END AS profile_vs_group_by_after_replay;
SQL

cluster_stop
echo "demo finished; the throwaway cluster is stopped"
