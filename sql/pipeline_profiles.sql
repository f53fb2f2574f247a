-- User profiles: per key, day and dimension, the counts of each categorical
-- value and the moments of numeric values, equal after every batch to a
-- GROUP BY over the distinct events merged so far, whatever re-deliveries,
-- order and batch sizes; profile() with decay and a prior equal to a SQL
-- reference; rebuild_profile() idempotent; expiry; readers; every error.
SET TimeZone = 'Asia/Kolkata';
SELECT setseed(0.17);
CREATE ROLE profiles_tenant;
CREATE ROLE profiles_other;
CREATE ROLE profiles_reader;

-- A small example whose numbers can be checked by hand.  Days are those
-- of America/New_York: 03:00 UTC on March 2 is still March 1 there.
CREATE TABLE cars_in (user_id bigint, ts timestamptz, color text, make text, price numeric, km float8);
ALTER TABLE cars_in OWNER TO profiles_tenant;
SELECT sessionize.create_pipeline('cars', 'cars_in', 'user_id', 'ts', '30 minutes');
SET ROLE profiles_tenant;
SELECT sessionize.add_profile('cars', 'prefs', '{color,make}', '{price,km}', day_time_zone => 'America/New_York');
RESET ROLE;
INSERT INTO cars_in VALUES
	(1, '2024-03-01 15:00+00', 'red', 'vw', 10000, 50000),
	(1, '2024-03-02 03:00+00', 'red', 'bmw', 20000, 10000),
	(1, '2024-03-02 15:00+00', 'blue', 'bmw', 30000, NULL),
	(1, '2024-03-02 15:00+00', 'blue', 'bmw', 30000, NULL),	-- a re-delivery: counted once
	(2, '2024-03-02 15:00+00', 'green', 'audi', 15000, 1000),
	(2, '2024-03-02 16:00+00', NULL, 'audi', NULL, 'NaN');	-- no color, no price, no km
SELECT consumed, merged, duplicates FROM sessionize.run_pipeline('cars');
SELECT * FROM sessionize.cars_profile_prefs ORDER BY key, day, dimension, value;
SELECT * FROM sessionize.cars_profile_prefs_numeric ORDER BY key, day, dimension;
SELECT jsonb_pretty(sessionize.profile('cars', 'prefs', 1, '2024-03-01', '2024-03-02'));
-- March 1 weighs half with a half life of one day; the prior of weight 2
-- pulls toward the shares of all keys (red 2, blue 1, green 1 of color)
SELECT jsonb_pretty(sessionize.profile('cars', 'prefs', 1, '2024-03-01', '2024-03-02', '1 day', 2) -> 'categorical');
-- an unknown key: the prior alone, or nothing without one
SELECT sessionize.profile('cars', 'prefs', 99, '2024-03-01', '2024-03-02', prior_weight => 1) -> 'categorical' AS prior;
SELECT sessionize.profile('cars', 'prefs', 99, '2024-03-01', '2024-03-02') AS empty;
-- days outside the range count for nothing, in the prior neither
SELECT sessionize.profile('cars', 'prefs', 2, '2024-03-02', '2024-03-02', prior_weight => 1) -> 'categorical' AS march_2;
-- a key of another type is read through its text
SELECT sessionize.profile('cars', 'prefs', '1'::text, '2024-03-01', '2024-03-01') -> 'categorical' AS text_key;

-- Storage: one row per key and day, value ids and counts as int4 pairs.
SELECT key, day, counts, moments FROM sessionize.cars_profile_prefs_days ORDER BY key, day;
SELECT * FROM sessionize.cars_profile_prefs_values ORDER BY id;
SELECT * FROM sessionize.cars_profile_prefs_population ORDER BY day;

-- The property: 3,000 distinct events of 50 users over five days, with a
-- fifth re-delivered, in random order and random batches, and a sixth held
-- back until last.
CREATE TABLE market_in (user_id int, ts timestamptz, category text, channel text, price float8, qty int);
ALTER TABLE market_in OWNER TO profiles_tenant;
CREATE TABLE market_distinct AS
SELECT n % 50 AS user_id,
	   timestamptz '2024-03-09 12:00+00' + (random() * 7200)::int * interval '1 minute' AS ts,
	   (ARRAY['suv', 'sedan', 'van', 'coupe', NULL])[1 + (random() * 4)::int] AS category,
	   (ARRAY['web', 'app'])[1 + (random() * 1)::int] AS channel,
	   CASE WHEN random() < 0.8 THEN round((random() * 40000)::numeric, 2)::float8 END AS price,
	   (random() * 5)::int AS qty,
	   random() < 0.17 AS held_back
FROM generate_series(1, 3000) n;
SELECT sessionize.create_pipeline('market', 'market_in', 'user_id', 'ts', '20 minutes');
SET ROLE profiles_tenant;
SELECT sessionize.add_profile('market', 'interest', '{category,channel}', '{price,qty}', 'Europe/Berlin', '3 days');
RESET ROLE;

-- Every delivery, and the distinct events merged so far: those with more
-- copies delivered than still wait in the staging table.
CREATE TABLE market_merged (LIKE market_in);
CREATE FUNCTION merged_events() RETURNS SETOF market_in LANGUAGE sql AS $$
	WITH delivered AS (SELECT to_jsonb(e) AS doc, count(*) AS copies FROM market_merged e GROUP BY 1),
	waiting AS (SELECT to_jsonb(e) AS doc, count(*) AS copies FROM market_in e GROUP BY 1)
	SELECT r.* FROM delivered d LEFT JOIN waiting w USING (doc),
		 LATERAL jsonb_populate_record(NULL::market_in, d.doc) r
	WHERE d.copies > coalesce(w.copies, 0)
$$;
-- what the profile should hold
CREATE FUNCTION count_mismatches() RETURNS bigint LANGUAGE sql AS $$
	WITH events AS (SELECT * FROM merged_events()),
	expected AS (
		SELECT user_id AS key, (ts AT TIME ZONE 'Europe/Berlin')::date AS day, d.dimension, d.value, count(*) AS count
		FROM events, LATERAL (VALUES ('category', category), ('channel', channel)) d(dimension, value)
		WHERE d.value IS NOT NULL
		GROUP BY 1, 2, 3, 4)
	SELECT count(*) FROM ((SELECT * FROM expected EXCEPT ALL SELECT * FROM sessionize.market_profile_interest)
						  UNION ALL
						  (SELECT * FROM sessionize.market_profile_interest EXCEPT ALL SELECT * FROM expected)) d
$$;
-- mean and variance within 1e-9 of avg() and var_pop(), count, min and max exact
CREATE FUNCTION moment_mismatches() RETURNS bigint LANGUAGE sql AS $$
	WITH events AS (SELECT * FROM merged_events()),
	expected AS (
		SELECT user_id AS key, (ts AT TIME ZONE 'Europe/Berlin')::date AS day, d.dimension, count(d.x) AS n,
			   avg(d.x) AS mean, var_pop(d.x) AS variance, min(d.x) AS min, max(d.x) AS max
		FROM events, LATERAL (VALUES ('price', price), ('qty', qty::float8)) d(dimension, x)
		GROUP BY 1, 2, 3 HAVING count(d.x) > 0)
	SELECT count(*)
	FROM expected e FULL JOIN sessionize.market_profile_interest_numeric a USING (key, day, dimension)
	WHERE a.n IS DISTINCT FROM e.n OR a.min IS DISTINCT FROM e.min OR a.max IS DISTINCT FROM e.max
	   OR NOT abs(a.mean - e.mean) <= 1e-9 * greatest(abs(e.mean), 1)
	   OR NOT abs(a.variance - e.variance) <= 1e-9 * greatest(abs(e.variance), 1)
$$;
CREATE FUNCTION drain_market(held_back boolean) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
	taken bigint;
	mismatches bigint := 0;
	delivered bigint;
BEGIN
	INSERT INTO market_in
	SELECT user_id, ts, category, channel, price, qty
	FROM (SELECT * FROM market_distinct d WHERE d.held_back = drain_market.held_back
		  UNION ALL
		  SELECT * FROM market_distinct d WHERE d.held_back = drain_market.held_back AND random() < 0.2) d
	ORDER BY random();
	INSERT INTO market_merged SELECT * FROM market_in;
	LOOP
		SELECT consumed INTO taken FROM sessionize.run_pipeline('market', 1 + (random() * 400)::int);
		EXIT WHEN taken = 0;
		mismatches := mismatches + count_mismatches() + moment_mismatches();
	END LOOP;
	RETURN mismatches;
END $$;
SELECT drain_market(false) AS mismatches_in_random_batches;
SELECT drain_market(true) AS mismatches_after_held_back_events;
SELECT count(*) AS key_days, (SELECT count(*) FROM sessionize.market_profile_interest) AS counts
FROM sessionize.market_profile_interest_days;
-- the population per day equals the counts of all keys
SELECT count(*) AS population_mismatches
FROM (SELECT p.day, v.dimension, v.value, p.counts[2 * i] AS count
	  FROM sessionize.market_profile_interest_population p,
		   generate_series(1, cardinality(p.counts) / 2) i,
		   sessionize.market_profile_interest_values v
	  WHERE v.id = p.counts[2 * i - 1]) a
FULL JOIN (SELECT day, dimension, value, sum(count) AS count FROM sessionize.market_profile_interest GROUP BY 1, 2, 3) e
	 USING (day, dimension, value)
WHERE a.count IS DISTINCT FROM e.count;

-- profile() against a SQL reference from the distinct events: random keys
-- (and unknown ones), ranges, half lives and prior weights.  Categorical:
-- (sum of weighted counts + w * population share) / (weighted total + w);
-- numeric: the weighted mean and population standard deviation.
CREATE FUNCTION reference_profile(k int, from_day date, to_day date, half_life interval, w float8)
RETURNS TABLE (kind text, dimension text, item text, value float8) LANGUAGE sql AS $$
	WITH events AS (
		SELECT DISTINCT e.*, (e.ts AT TIME ZONE 'Europe/Berlin')::date AS day FROM market_merged e),
	ranged AS (
		SELECT e.*, CASE WHEN half_life IS NULL THEN 1
						 ELSE 0.5 ^ ((to_day - e.day) / (extract(epoch FROM half_life) / 86400)) END AS weight
		FROM events e WHERE e.day BETWEEN from_day AND to_day),
	values_seen AS (
		SELECT r.user_id, r.weight, d.dimension, d.value
		FROM ranged r, LATERAL (VALUES ('category', r.category), ('channel', r.channel)) d(dimension, value)
		WHERE d.value IS NOT NULL),
	population AS (
		SELECT v.dimension, v.value, count(*)::float8 / sum(count(*)) OVER (PARTITION BY v.dimension) AS share
		FROM values_seen v GROUP BY 1, 2),
	mine AS (
		SELECT v.dimension, v.value, sum(v.weight) AS count FROM values_seen v WHERE v.user_id = k GROUP BY 1, 2),
	totals AS (
		SELECT d.dimension, coalesce((SELECT sum(m.count) FROM mine m WHERE m.dimension = d.dimension), 0) AS total
		FROM unnest(ARRAY['category', 'channel']) d(dimension)),
	numbers AS (
		SELECT d.dimension, sum(r.weight) AS n, sum(r.weight * d.x) / sum(r.weight) AS mean, min(d.x) AS min, max(d.x) AS max
		FROM ranged r, LATERAL (VALUES ('price', r.price), ('qty', r.qty::float8)) d(dimension, x)
		WHERE r.user_id = k AND d.x IS NOT NULL GROUP BY 1)
	SELECT 'categorical', c.dimension, c.value,
		   (coalesce(m.count, 0) + w * coalesce(p.share, 0)) / (t.total + w)
	FROM (SELECT m.dimension, m.value FROM mine m UNION SELECT p.dimension, p.value FROM population p WHERE w > 0) c
	JOIN totals t USING (dimension)
	LEFT JOIN mine m USING (dimension, value)
	LEFT JOIN population p USING (dimension, value)
	UNION ALL
	SELECT 'numeric', n.dimension, s.item, s.value
	FROM numbers n,
		 LATERAL (SELECT sum(r.weight * (d.x - n.mean) ^ 2) / n.n AS variance
				  FROM ranged r, LATERAL (VALUES ('price', r.price), ('qty', r.qty::float8)) d(dimension, x)
				  WHERE r.user_id = k AND d.dimension = n.dimension AND d.x IS NOT NULL) v,
		 LATERAL (VALUES ('n', n.n), ('mean', n.mean), ('stddev', sqrt(v.variance)), ('min', n.min), ('max', n.max)) s(item, value)
$$;
CREATE FUNCTION served_profile(k int, from_day date, to_day date, half_life interval, w float8)
RETURNS TABLE (kind text, dimension text, item text, value float8) LANGUAGE sql AS $$
	WITH p AS (SELECT sessionize.profile('market', 'interest', k, from_day, to_day, half_life, w) AS p)
	SELECT 'categorical', d.key, v.key, v.value::float8
	FROM p, jsonb_each(p.p -> 'categorical') d, jsonb_each_text(d.value) v
	UNION ALL
	SELECT 'numeric', d.key, v.key, v.value::float8
	FROM p, jsonb_each(p.p -> 'numeric') d, jsonb_each_text(d.value) v
	WHERE (d.value ->> 'n')::float8 > 0
$$;
CREATE TABLE trials AS
SELECT t, (random() * 55)::int AS k, from_day, from_day + (random() * 5)::int AS to_day,
	   CASE WHEN random() < 0.3 THEN NULL ELSE (1 + random() * 48)::int * interval '1 hour' END AS half_life,
	   CASE WHEN random() < 0.3 THEN 0 ELSE random() * 20 END AS w
FROM generate_series(1, 60) t, LATERAL (SELECT date '2024-03-09' + (random() * 4)::int + t * 0 AS from_day) f;
SELECT count(*) AS trials, sum(m.mismatches) AS mismatches, count(*) FILTER (WHERE m.values_compared = 0) AS empty
FROM trials t,
	 LATERAL (SELECT count(*) FILTER (WHERE r.value IS NULL OR s.value IS NULL
									  OR NOT abs(r.value - s.value) <= 1e-9 * greatest(abs(r.value), 1)) AS mismatches,
					 count(*) AS values_compared
			  FROM reference_profile(t.k, t.from_day, t.to_day, t.half_life, t.w) r
			  FULL JOIN served_profile(t.k, t.from_day, t.to_day, t.half_life, t.w) s USING (kind, dimension, item)) m;
-- shares of each dimension sum to 1 whenever there is a count or a prior
SELECT count(*) AS sums_not_one
FROM trials t, LATERAL (SELECT dimension, sum(value) AS total FROM served_profile(t.k, t.from_day, t.to_day, t.half_life, t.w)
						WHERE kind = 'categorical' GROUP BY dimension) s
WHERE abs(s.total - 1) > 1e-9;

-- Late events count once they are replayed, never before.
CREATE TABLE late_in (user_id int, ts timestamptz, category text);
ALTER TABLE late_in OWNER TO profiles_tenant;
SELECT sessionize.create_pipeline('lately', 'late_in', 'user_id', 'ts', '10 minutes', allowed_lateness => '1 hour');
SET ROLE profiles_tenant;
SELECT sessionize.add_profile('lately', 'p', '{category}');
RESET ROLE;
INSERT INTO late_in VALUES (1, '2024-03-10 12:00+00', 'suv'), (1, '2024-03-10 18:00+00', 'van');
SELECT merged, late FROM sessionize.run_pipeline('lately');
INSERT INTO late_in VALUES (1, '2024-03-10 09:00+00', 'sedan'), (1, '2024-03-10 09:00+00', 'sedan');
SELECT merged, duplicates, late FROM sessionize.run_pipeline('lately');
SELECT value, count FROM sessionize.lately_profile_p ORDER BY value;
SET ROLE profiles_tenant;
SELECT sessionize.replay_late('lately');
RESET ROLE;
SELECT value, count FROM sessionize.lately_profile_p ORDER BY value;
-- a re-delivery after the replay is a duplicate
INSERT INTO late_in VALUES (1, '2024-03-10 09:00+00', 'sedan');
SELECT merged, duplicates, late FROM sessionize.run_pipeline('lately');
SELECT value, count FROM sessionize.lately_profile_p ORDER BY value;

-- A source of JSON documents: the dimensions are fields of the payload; a
-- number in a string counts, other text does not.
CREATE TABLE docs_in (doc jsonb);
ALTER TABLE docs_in OWNER TO profiles_tenant;
SELECT sessionize.create_pipeline('docs', 'docs_in', 'uid', 'at', '30 minutes', payload_column => 'doc');
SET ROLE profiles_tenant;
SELECT sessionize.add_profile('docs', 'p', '{color,premium}', '{price}');
RESET ROLE;
INSERT INTO docs_in VALUES
	('{"uid": "a", "at": "2024-03-10T10:00:00Z", "color": "red", "premium": true, "price": 10}'),
	('{"uid": "a", "at": "2024-03-10T10:05:00Z", "color": 7, "premium": false, "price": "12.5"}'),
	('{"uid": "a", "at": "2024-03-10T10:10:00Z", "color": {"not": "scalar"}, "price": "cheap"}'),
	('{"uid": "b", "at": "2024-03-10T10:10:00Z", "color": null, "price": null}');
SELECT merged FROM sessionize.run_pipeline('docs');
SELECT * FROM sessionize.docs_profile_p ORDER BY key, dimension, value;
SELECT * FROM sessionize.docs_profile_p_numeric ORDER BY key;
SELECT sessionize.profile('docs', 'p', 'a'::text, '2024-03-10', '2024-03-10') AS text_key;

-- Rebuilding from a table of past events: the days of the range become
-- those of its distinct events, and a second run changes nothing.
CREATE TABLE market_history AS SELECT * FROM market_merged;
ALTER TABLE market_history OWNER TO profiles_tenant;
CREATE TABLE kept_counts AS SELECT * FROM sessionize.market_profile_interest;
CREATE TABLE kept_numeric AS SELECT * FROM sessionize.market_profile_interest_numeric;
-- a bug: some counts lost, some moments wrong
UPDATE sessionize.market_profile_interest_days SET counts = counts[1:2] WHERE key % 3 = 0;
UPDATE sessionize.market_profile_interest_days SET moments[1] = moments[1] + 5 WHERE key % 5 = 0;
SELECT count_mismatches() > 0 AS broken;
SET ROLE profiles_tenant;
SELECT sessionize.rebuild_profile('market', 'interest', 'market_history', '2024-03-01', '2024-03-31') AS events;
RESET ROLE;
SELECT count_mismatches() AS count_mismatches, moment_mismatches() AS moment_mismatches;
SELECT count(*) AS differences_from_the_batches
FROM ((SELECT * FROM kept_counts EXCEPT ALL SELECT * FROM sessionize.market_profile_interest)
	  UNION ALL (SELECT * FROM sessionize.market_profile_interest EXCEPT ALL SELECT * FROM kept_counts)) d;
CREATE TABLE rebuilt AS SELECT * FROM sessionize.market_profile_interest_days;
CREATE TABLE rebuilt_population AS SELECT * FROM sessionize.market_profile_interest_population;
SET ROLE profiles_tenant;
SELECT sessionize.rebuild_profile('market', 'interest', 'market_history', '2024-03-01', '2024-03-31') AS events;
RESET ROLE;
SELECT (SELECT count(*) FROM ((TABLE rebuilt EXCEPT ALL TABLE sessionize.market_profile_interest_days)
							  UNION ALL (TABLE sessionize.market_profile_interest_days EXCEPT ALL TABLE rebuilt)) d) AS day_changes,
	   (SELECT count(*) FROM ((TABLE rebuilt_population EXCEPT ALL TABLE sessionize.market_profile_interest_population)
							  UNION ALL (TABLE sessionize.market_profile_interest_population EXCEPT ALL TABLE rebuilt_population)) d) AS population_changes;
-- a range of one day replaces that day only
SET ROLE profiles_tenant;
SELECT sessionize.rebuild_profile('market', 'interest', 'market_history', '2024-03-10', '2024-03-10') > 0 AS one_day;
RESET ROLE;
SELECT count_mismatches() AS count_mismatches, moment_mismatches() AS moment_mismatches;

-- Expiry: days more than keep (3 days) before the greatest event time, in
-- the profile's time zone, go; a pg_cron job calls expire_profiles().
CREATE TABLE first_kept AS SELECT (max(ts) AT TIME ZONE 'Europe/Berlin' - interval '3 days')::date AS day FROM market_merged;
TABLE first_kept;
SELECT count(*) AS to_expire FROM rebuilt WHERE day < (TABLE first_kept) \gset
SET ROLE profiles_tenant;
SELECT sessionize.expire_profiles('market') = :to_expire AS expired_as_counted;
SELECT sessionize.expire_profiles() AS again;
RESET ROLE;
SELECT min(day) AS first_day FROM sessionize.market_profile_interest_days;
SELECT min(day) AS first_population_day FROM sessionize.market_profile_interest_population;

-- Readers: grant_reader() lets a role read the profiles' views and call
-- profile(); a profile added later is granted to it too.
SET ROLE profiles_tenant;
SELECT sessionize.grant_reader('market', 'profiles_reader');
SELECT sessionize.add_profile('market', 'later', '{channel}');
RESET ROLE;
SET ROLE profiles_reader;
SELECT sessionize.profile('market', 'interest', 1, '2024-03-11', '2024-03-14') ? 'categorical' AS reads_profile;
SELECT sessionize.profile('market', 'later', 1, '2024-03-11', '2024-03-14') AS reads_later;
SELECT count(*) > 0 AS reads_view FROM sessionize.market_profile_interest;
SELECT count(*) FROM sessionize.market_profile_interest_days;
SELECT sessionize.profile('cars', 'prefs', 1, '2024-03-01', '2024-03-02');
SELECT sessionize.add_profile('market', 'mine', '{channel}');
SELECT sessionize.rebuild_profile('market', 'interest', 'market_history', '2024-03-01', '2024-03-31');
RESET ROLE;
SET ROLE profiles_tenant;
SELECT sessionize.revoke_reader('market', 'profiles_reader');
RESET ROLE;
SET ROLE profiles_reader;
SELECT sessionize.profile('market', 'interest', 1, '2024-03-11', '2024-03-14');
RESET ROLE;
SELECT c.relname, obj_description(c.oid, 'pg_class') IS NOT NULL AS commented
FROM pg_class c WHERE c.relnamespace = 'sessionize'::regnamespace AND c.relname LIKE 'market_profile_interest%' ORDER BY 1;

-- Errors.
SET ROLE profiles_tenant;
SELECT sessionize.add_profile('nope', 'p', '{a}');
SELECT sessionize.add_profile('market', 'interest', '{channel}');
SELECT sessionize.add_profile('market', 'q', '{colour}');
SELECT sessionize.add_profile('market', 'q', '{}', '{channel}');
SELECT sessionize.add_profile('market', 'q');
SELECT sessionize.add_profile('market', 'q', '{channel,channel}');
SELECT sessionize.add_profile('market', 'q', ARRAY['channel', NULL]);
SELECT sessionize.add_profile('market', 'q', '{""}');
SELECT sessionize.add_profile('market', 'q', '{{channel},{category}}');
SELECT sessionize.add_profile('market', NULL, '{channel}');
SELECT sessionize.add_profile('market', '', '{channel}');
SELECT sessionize.add_profile('market', repeat('x', 50), '{channel}');
SELECT sessionize.add_profile('market', 'q', NULL);
SELECT sessionize.add_profile('market', 'q', '{channel}', day_time_zone => 'Mars/Olympus');
SELECT sessionize.add_profile('market', 'q', '{channel}', keep => '-1 day');
SELECT sessionize.add_profile('market', 'q', '{channel}', keep => NULL);
SELECT sessionize.add_profile(NULL, 'q', '{color}');
SELECT sessionize.drop_profile('market', 'nope');
SELECT sessionize.drop_profile('nope', 'p');
SELECT sessionize.drop_profile('market', NULL);
SELECT sessionize.profile('market', 'nope', 1, '2024-03-11', '2024-03-14');
SELECT sessionize.profile('nope', 'p', 1, '2024-03-11', '2024-03-14');
SELECT sessionize.profile(NULL, 'p', 1, '2024-03-11', '2024-03-14');
SELECT sessionize.profile('market', 'interest', NULL::int, '2024-03-11', '2024-03-14');
SELECT sessionize.profile('market', 'interest', 1, NULL, '2024-03-14');
SELECT sessionize.profile('market', 'interest', 1, '2024-03-14', '2024-03-11');
SELECT sessionize.profile('market', 'interest', 1, '2024-03-11', 'infinity');
SELECT sessionize.profile('market', 'interest', 1, '2024-03-11', '2024-03-14', '1 month');
SELECT sessionize.profile('market', 'interest', 1, '2024-03-11', '2024-03-14', '0');
SELECT sessionize.profile('market', 'interest', 1, '2024-03-11', '2024-03-14', prior_weight => -1);
SELECT sessionize.profile('market', 'interest', 1, '2024-03-11', '2024-03-14', prior_weight => 'NaN');
SELECT sessionize.profile('market', 'interest', 1, '2024-03-11', '2024-03-14', prior_weight => NULL);
SELECT sessionize.profile('market', 'interest', 'abc'::text, '2024-03-11', '2024-03-14');
SELECT sessionize.rebuild_profile('market', 'nope', 'market_history', '2024-03-01', '2024-03-31');
SELECT sessionize.rebuild_profile('market', 'interest', NULL, '2024-03-01', '2024-03-31');
SELECT sessionize.rebuild_profile('market', 'interest', 'market_history', '2024-03-31', '2024-03-01');
SELECT sessionize.rebuild_profile('market', 'interest', 'market_distinct', '2024-03-01', '2024-03-31');
SELECT sessionize.rebuild_profile('market', 'interest', 'cars_in', '2024-03-01', '2024-03-31');
SELECT sessionize.expire_profiles('nope');
RESET ROLE;
-- the internal helpers are for the extension only, and check what they read
SET ROLE profiles_tenant;
SELECT sessionize.sessionize_profile_add_counts('{1,2}'::int[], '{1,3}'::int[]);
RESET ROLE;
SELECT sessionize.sessionize_profile_add_counts('{1,2,5,1}'::int[], '{1,3,2,1}'::int[]) AS summed;
SELECT sessionize.sessionize_profile_add_counts('{1,2,5}'::int[], '{1,3}'::int[]);
SELECT sessionize.sessionize_profile_add_counts('{5,2,1,1}'::int[], '{1,3}'::int[]);
SELECT sessionize.sessionize_profile_add_counts('{1,NULL}'::int[], '{1,3}'::int[]);
SELECT sessionize.sessionize_profile_add_counts('{1,2147483647}'::int[], '{1,3}'::int[]);
SELECT sessionize.sessionize_profile_add_counts('{1,2}'::bigint[], '{1,3}'::bigint[]) AS wide;
SELECT sessionize.sessionize_profile_add_moments('{1,2,0,2,2}', '{1,4,0,4,4}') AS moments;
SELECT sessionize.sessionize_profile_add_moments('{1,2,0,2}', '{1,4,0,4}');
SELECT sessionize.sessionize_profile_add_moments('{1,2,0,2,2}', '{1,4,0,4,4,1,1,1,1,1}');

-- One event never stops a pipeline: a categorical value too long for the
-- dictionary's index is no value; a number beyond float8 is no value and
-- the event is not set aside; values the sums would overflow with are
-- skipped, and profile() shows no Infinity or NaN; a day seen again after
-- a zone fell back past midnight adds to the same row.
CREATE TABLE edge_in (user_id bigint, ts timestamptz, color text, price numeric);
SELECT sessionize.create_pipeline('edge', 'edge_in', 'user_id', 'ts', '30 minutes');
SELECT sessionize.add_profile('edge', 'p', '{color}', '{price}', day_time_zone => 'America/Goose_Bay');
INSERT INTO edge_in SELECT 1, '2024-03-01 15:00+00', string_agg(md5(i::text), ''), 1 FROM generate_series(1, 300) i;
INSERT INTO edge_in VALUES
	(2, '2024-03-01 15:00+00', 'red', 1e400),
	(2, '2024-03-01 15:01+00', 'red', 5),
	(3, '2024-03-01 15:00+00', 'red', 1e200),
	(3, '2024-03-01 15:01+00', 'red', 1e200),
	(3, '2024-03-01 15:02+00', 'red', -1e200),
	(4, '2010-11-07 02:59:00+00', 'red', 1),
	(4, '2010-11-07 03:00:30+00', 'blue', 2),
	(4, '2010-11-07 03:02:00+00', 'red', 3);
CREATE TABLE edge_history AS SELECT * FROM edge_in WHERE user_id = 4;
SELECT consumed, merged, dead_lettered FROM sessionize.run_pipeline('edge');
SELECT key, day, dimension, value, count FROM sessionize.edge_profile_p ORDER BY key, day, dimension, value;
SELECT key, day, moments FROM sessionize.edge_profile_p_days ORDER BY key, day;
SELECT sessionize.profile('edge', 'p', 2, '2024-03-01', '2024-03-01') -> 'numeric' AS beyond_float8;
SELECT sessionize.profile('edge', 'p', 3, '2024-03-01', '2024-03-01') -> 'numeric' -> 'price' -> 'n' AS overflowing_n;
-- sums that overflowed before are shown as null
UPDATE sessionize.edge_profile_p_days SET moments = '{2,Infinity,NaN,1,Infinity}' WHERE key = 2;
SELECT sessionize.profile('edge', 'p', 2, '2024-03-01', '2024-03-01') -> 'numeric' AS not_finite;
-- two days whose sums overflow together: the merge skips one
SELECT sessionize.sessionize_profile_add_moments('{1,1e308,0,1e308,1e308}', '{1,1e308,0,1e308,1e308}') AS moments;
SELECT sessionize.profile('edge', 'p', 4, '2010-11-06', '2010-11-07') AS fell_back;
SELECT sessionize.rebuild_profile('edge', 'p', 'edge_history', '2010-11-01', '2010-11-30');
SELECT key, day, counts, moments FROM sessionize.edge_profile_p_days WHERE key = 4 ORDER BY day;
SELECT sessionize.drop_pipeline('edge');
DROP TABLE edge_in, edge_history;
-- a number beyond float8 alone in a batch: merged, not set aside
CREATE TABLE edge_big_in (user_id bigint, ts timestamptz, price numeric);
SELECT sessionize.create_pipeline('edge_big', 'edge_big_in', 'user_id', 'ts', '30 minutes');
SELECT sessionize.add_profile('edge_big', 'p', '{}', '{price}');
INSERT INTO edge_big_in VALUES (1, '2024-03-01 15:00+00', 1e400), (1, '2024-03-01 15:01+00', 2);
SELECT consumed, merged, dead_lettered FROM sessionize.run_pipeline('edge_big');
SELECT key, day, moments FROM sessionize.edge_big_profile_p_days;
SELECT sessionize.drop_pipeline('edge_big');
DROP TABLE edge_big_in;

-- Dropping a profile drops its tables; dropping the pipeline drops its profiles.
SET ROLE profiles_tenant;
SELECT sessionize.drop_profile('market', 'later');
RESET ROLE;
SELECT to_regclass('sessionize.market_profile_later_days') AS days, to_regclass('sessionize.market_profile_later') AS view;
SELECT sessionize.drop_pipeline('market');
SELECT count(*) AS profile_relations FROM pg_class WHERE relnamespace = 'sessionize'::regnamespace AND relname LIKE 'market_profile%';
SELECT count(*) AS profile_rows FROM sessionize.pipeline_profiles WHERE pipeline = 'market';
-- without a day_time_zone, a profile's days are in the pipeline's time zone
CREATE TABLE tokyo_in (user_id int, ts timestamp, color text);
SELECT sessionize.create_pipeline('tokyo', 'tokyo_in', 'user_id', 'ts', '30 minutes', time_zone => 'Asia/Tokyo');
SELECT sessionize.add_profile('tokyo', 'p', '{color}');
SELECT sessionize.add_profile('tokyo', 'utc', '{color}', day_time_zone => 'UTC');
INSERT INTO tokyo_in VALUES (1, '2024-05-01 08:00', 'red');
SELECT merged FROM sessionize.run_pipeline('tokyo');
SELECT name, day_time_zone, sessionize.profile('tokyo', name, 1, '2024-04-30', '2024-05-01') -> 'categorical' AS profile
FROM sessionize.pipeline_profiles WHERE pipeline = 'tokyo' ORDER BY name;
-- 08:00 in Tokyo on May 1st is 23:00 UTC on April 30th
SELECT 'p' AS profile, key, day, value, count FROM sessionize.tokyo_profile_p UNION ALL
SELECT 'utc', key, day, value, count FROM sessionize.tokyo_profile_utc ORDER BY profile;
SELECT sessionize.drop_pipeline('tokyo');
DROP TABLE tokyo_in;
SELECT sessionize.drop_pipeline('cars');
SELECT sessionize.drop_pipeline('lately');
SELECT sessionize.drop_pipeline('docs');
DROP TABLE cars_in, market_in, market_distinct, market_merged, trials, late_in, docs_in, market_history, kept_counts,
	kept_numeric, rebuilt, rebuilt_population, first_kept CASCADE;
DROP FUNCTION count_mismatches(), moment_mismatches(), drain_market(boolean), reference_profile(int, date, date, interval, float8),
	served_profile(int, date, date, interval, float8);
DROP ROLE profiles_tenant, profiles_other, profiles_reader;
