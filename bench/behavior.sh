#!/usr/bin/env bash
# Behavioral aggregates against the SQL a user would otherwise write.
#
# Events: USERS users, EVENTS page views over 14 days (pages home, search,
# product, cart, buy, other), users interleaved in time order.  Each query
# runs GROUP BY user_id without parallel workers; the table reports the
# median of ROUNDS runs, its ratio to the plain aggregate
# SELECT user_id, count(*), min(ts), max(ts) ... GROUP BY user_id (the floor
# for any one-pass aggregate), and each SQL formulation's time divided by
# the matching sessionize aggregate's.
#
#   window_funnel   4 steps (home, product, cart, buy) within 1 hour;
#                   SQL: per home event the earliest next step within the
#                   hour, step by step (self-joins), deepest step per user
#   retention       3 conditions (day 1, day 2, day 8);
#                   SQL: the users of each day, joined (and, for reference,
#                   the bool_or formulation)
#   sequence_match  .*(?1).*(?2).*(?3) (home, then product, then buy);
#                   SQL: window functions carrying "seen so far"
#
#   make bench BENCH=behavior   (EVENTS=10000000 USERS=100000 ROUNDS=3)
set -euo pipefail
cd "$(dirname "$0")/.."
events=${EVENTS:-10000000}
users=${USERS:-100000}
rounds=${ROUNDS:-3}

psql -X -q -v ON_ERROR_STOP=1 <<SQL
CREATE EXTENSION IF NOT EXISTS sessionize;
DROP TABLE IF EXISTS behavior_events, behavior_runs;
SELECT setseed(0.25);
CREATE UNLOGGED TABLE behavior_events AS
SELECT (n % $users)::int AS user_id,
	   timestamptz '2024-01-01 00:00:00+00'
		 + ((n::float8 / $events) * 14 * 86400 + random() * 3600) * interval '1 second' AS ts,
	   (ARRAY['home', 'home', 'home', 'home', 'search', 'search', 'search', 'search', 'product', 'product',
			  'product', 'product', 'product', 'cart', 'cart', 'cart', 'buy', 'other', 'other', 'other'])
		 [1 + floor(random() * 20)::int] AS page
FROM generate_series(0, $events - 1) n;
VACUUM ANALYZE behavior_events;
CREATE TABLE behavior_runs (variant text, round int, seconds float8);
-- read the table once so that no query pays for the first pass
SELECT count(*) FROM behavior_events \\gset
SQL

declare -A queries
queries['baseline: count, min, max']="SELECT user_id, count(*), min(ts), max(ts) FROM behavior_events GROUP BY user_id"
queries['window_funnel']="SELECT user_id, sessionize.window_funnel('1 hour', ts, page = 'home', page = 'product', page = 'cart', page = 'buy') FROM behavior_events GROUP BY user_id"
queries['window_funnel: SQL self-joins']="
WITH s1 AS (SELECT user_id, ts AS t1 FROM behavior_events WHERE page = 'home'),
s2 AS (SELECT s1.user_id, s1.t1, min(e.ts) AS t2 FROM s1 JOIN behavior_events e
	   ON e.user_id = s1.user_id AND e.page = 'product' AND e.ts >= s1.t1 AND e.ts <= s1.t1 + interval '1 hour'
	   GROUP BY s1.user_id, s1.t1),
s3 AS (SELECT s2.user_id, s2.t1, min(e.ts) AS t3 FROM s2 JOIN behavior_events e
	   ON e.user_id = s2.user_id AND e.page = 'cart' AND e.ts >= s2.t2 AND e.ts <= s2.t1 + interval '1 hour'
	   GROUP BY s2.user_id, s2.t1),
s4 AS (SELECT DISTINCT s3.user_id FROM s3 JOIN behavior_events e
	   ON e.user_id = s3.user_id AND e.page = 'buy' AND e.ts >= s3.t3 AND e.ts <= s3.t1 + interval '1 hour')
SELECT u.user_id, CASE WHEN u.user_id IN (SELECT user_id FROM s4) THEN 4
					   WHEN u.user_id IN (SELECT user_id FROM s3) THEN 3
					   WHEN u.user_id IN (SELECT user_id FROM s2) THEN 2
					   WHEN u.user_id IN (SELECT user_id FROM s1) THEN 1 ELSE 0 END
FROM (SELECT DISTINCT user_id FROM behavior_events) u"
queries['retention']="SELECT user_id, sessionize.retention(ts >= '2024-01-01' AND ts < '2024-01-02', ts >= '2024-01-02' AND ts < '2024-01-03', ts >= '2024-01-08' AND ts < '2024-01-09') FROM behavior_events GROUP BY user_id"
queries['retention: SQL joins']="
SELECT u.user_id, d1.user_id IS NOT NULL, d1.user_id IS NOT NULL AND d2.user_id IS NOT NULL,
	   d1.user_id IS NOT NULL AND d8.user_id IS NOT NULL
FROM (SELECT DISTINCT user_id FROM behavior_events) u
LEFT JOIN (SELECT DISTINCT user_id FROM behavior_events WHERE ts >= '2024-01-01' AND ts < '2024-01-02') d1 USING (user_id)
LEFT JOIN (SELECT DISTINCT user_id FROM behavior_events WHERE ts >= '2024-01-02' AND ts < '2024-01-03') d2 USING (user_id)
LEFT JOIN (SELECT DISTINCT user_id FROM behavior_events WHERE ts >= '2024-01-08' AND ts < '2024-01-09') d8 USING (user_id)"
queries['retention: SQL bool_or']="SELECT user_id, bool_or(ts >= '2024-01-01' AND ts < '2024-01-02') AS d1, bool_or(ts >= '2024-01-01' AND ts < '2024-01-02') AND bool_or(ts >= '2024-01-02' AND ts < '2024-01-03'), bool_or(ts >= '2024-01-01' AND ts < '2024-01-02') AND bool_or(ts >= '2024-01-08' AND ts < '2024-01-09') FROM behavior_events GROUP BY user_id"
queries['sequence_match']="SELECT user_id, sessionize.sequence_match('.*(?1).*(?2).*(?3)', ts, page = 'home', page = 'product', page = 'buy') FROM behavior_events GROUP BY user_id"
queries['sequence_match: SQL window functions']="
SELECT user_id, coalesce(bool_or(page = 'buy' AND product_seen), false)
FROM (SELECT user_id, page, bool_or(page = 'product' AND home_seen)
			 OVER (PARTITION BY user_id ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS product_seen
	  FROM (SELECT user_id, ts, page, bool_or(page = 'home')
					   OVER (PARTITION BY user_id ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS home_seen
			FROM behavior_events) a) b
GROUP BY user_id"

for round in $(seq 1 "$rounds"); do
	for variant in "${!queries[@]}"; do
		psql -X -q -v ON_ERROR_STOP=1 <<SQL
SET work_mem = '256MB';
SET max_parallel_workers_per_gather = 0;
DO \$\$
DECLARE
	started timestamptz := clock_timestamp();
BEGIN
	-- count(q.*) reads every column, so that no aggregate is planned away
	PERFORM count(q.*) FROM (${queries[$variant]}) q;
	INSERT INTO behavior_runs VALUES ('$variant', $round, extract(epoch FROM clock_timestamp() - started));
END \$\$;
SQL
	done
done

echo
echo "== Behavioral aggregates: $events events, $users users (median of $rounds rounds)"
psql -X -v ON_ERROR_STOP=1 <<'SQL'
WITH medians AS (
	SELECT variant, count(*) AS rounds, percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) AS median_s
	FROM behavior_runs GROUP BY variant)
SELECT m.variant, m.rounds, round(m.median_s::numeric, 2) AS median_s,
	   round((m.median_s / b.median_s)::numeric, 2) AS vs_baseline,
	   CASE WHEN m.variant LIKE '%: SQL%'
			THEN round((m.median_s / a.median_s)::numeric, 1) END AS sql_vs_aggregate
FROM medians m
CROSS JOIN (SELECT median_s FROM medians WHERE variant LIKE 'baseline%') b
LEFT JOIN medians a ON m.variant LIKE a.variant || ': SQL%'
ORDER BY m.variant LIKE 'baseline%' DESC, m.variant;
SQL
psql -X -q -c "DROP TABLE behavior_events, behavior_runs"
