-- alter_pipeline(measures => ...) sets a pipeline's measures to a new list:
-- a measure kept goes on as it was, one dropped goes with its columns, one
-- added is NULL for the sessions stored before it (their earlier events are
-- gone) and equals the batch query for every session whose events all came
-- after it, through re-deliveries, late and bridging events.
SET TimeZone = 'UTC';
SELECT setseed(0.29);
CREATE ROLE measures_tenant;
CREATE ROLE measures_analyst;
CREATE ROLE measures_viewer;

CREATE TABLE site_visits (user_id int, ts timestamptz, url text, price numeric);
ALTER TABLE site_visits OWNER TO measures_tenant;
-- 2,000 distinct events of 30 users over two days; the first half arrives
-- before the measures change, the second half after, over the same days
CREATE TABLE visits_distinct AS
SELECT (n % 30) AS user_id,
	   timestamptz '2024-05-01' + (random() * 2880)::int * interval '1 minute' AS ts,
	   (ARRAY['/', '/search', '/product', '/cart'])[1 + (random() * 3)::int] AS url,
	   CASE WHEN random() < 0.3 THEN round((random() * 100)::numeric, 2) END AS price,
	   n <= 1000 AS before_alter
FROM generate_series(1, 2000) n;

SELECT sessionize.create_pipeline('visits', 'site_visits', 'user_id', 'ts', '30 minutes', dedup_window => NULL,
								  measures => 'count(*) AS views, first(url) AS landing_page');
-- the owner lets an analyst read the sessions, who lets a viewer read them
SET ROLE measures_tenant;
GRANT SELECT ON sessionize.visits_sessions TO measures_analyst WITH GRANT OPTION;
SET ROLE measures_analyst;
GRANT SELECT ON sessionize.visits_sessions TO measures_viewer;
RESET ROLE;

CREATE FUNCTION drain_visits(before boolean) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
	taken bigint;
BEGIN
	-- 20% of what came so far re-delivered, in a random order
	INSERT INTO site_visits
	SELECT user_id, ts, url, price
	FROM (SELECT * FROM visits_distinct WHERE before_alter = before
		  UNION ALL
		  SELECT * FROM visits_distinct WHERE random() < 0.2 AND (before_alter OR NOT before)) d
	ORDER BY random();
	LOOP
		SELECT consumed INTO taken FROM sessionize.run_pipeline('visits', 1 + (random() * 200)::int);
		EXIT WHEN taken = 0;
	END LOOP;
END $$;
SELECT drain_visits(true);

-- landing_page dropped; revenue, exit_page and pages added; views kept
SET ROLE measures_tenant;
SELECT sessionize.alter_pipeline('visits', measures => $$
	count(*) AS views, sum(price) AS revenue, last(url) AS exit_page, approx_count_distinct(url) AS pages $$);
RESET ROLE;
SELECT name, position, aggregate, added_in FROM sessionize.pipeline_measures WHERE pipeline = 'visits'
ORDER BY position;
SELECT table_name, string_agg(column_name::text, ', ' ORDER BY ordinal_position) AS columns
FROM information_schema.columns
WHERE table_schema = 'sessionize' AND table_name IN ('visits_sessions', 'visits_changes', 'visits_sessions_final')
GROUP BY table_name ORDER BY table_name;
-- the grants on the views are kept, each by the role that gave it
SELECT a.grantor::regrole AS grantor, a.grantee::regrole AS grantee, a.privilege_type, a.is_grantable
FROM pg_class c, aclexplode(c.relacl) a
WHERE c.oid = 'sessionize.visits_sessions'::regclass AND a.grantee <> c.relowner
ORDER BY 1::text, 2::text;
SET ROLE measures_analyst;
REVOKE SELECT ON sessionize.visits_sessions FROM measures_viewer;
RESET ROLE;
SELECT has_table_privilege('measures_viewer', 'sessionize.visits_sessions', 'SELECT') AS viewer_reads;

SELECT drain_visits(false);
SELECT sessionize.alter_pipeline('visits', allowed_lateness => '10 minutes');
-- a late event, replayed after the change: its session is measured
INSERT INTO site_visits VALUES (5, '2024-04-01 00:00', '/late', 3);
SELECT consumed, late FROM sessionize.run_pipeline('visits');
SELECT sessionize.replay_late('visits');

-- The reference: the batch query over the distinct events; a measure added
-- is NULL for a session with an event merged before the change.
CREATE VIEW visits_reference AS
WITH events AS (SELECT user_id, ts, url, price, bool_or(before_alter) AS before_alter FROM visits_distinct
				GROUP BY user_id, ts, url, price
				UNION ALL SELECT 5, '2024-04-01 00:00', '/late', 3, false),
	 numbered AS (SELECT *, sessionize.session_id(ts, '30 minutes') OVER (PARTITION BY user_id ORDER BY ts) AS session
				  FROM events)
SELECT user_id AS key, min(ts) AS session_start, count(*) AS events, count(*) AS views,
	   bool_or(before_alter) AS stored_before,
	   CASE WHEN NOT bool_or(before_alter) THEN sum(price) END AS revenue,
	   CASE WHEN NOT bool_or(before_alter) THEN sessionize.last(url, ts) END AS exit_page,
	   CASE WHEN NOT bool_or(before_alter) THEN sessionize.approx_count_distinct(url) END AS pages,
	   bool_or(before_alter) AND NOT bool_and(before_alter) AS bridged
FROM numbered GROUP BY user_id, session;

SELECT count(*) AS sessions,
	   count(*) FILTER (WHERE r.stored_before) > 0 AS some_stored_before,
	   count(*) FILTER (WHERE NOT r.stored_before) > 0 AS some_after,
	   count(*) FILTER (WHERE r.bridged) > 0 AS some_extended_across,
	   count(*) FILTER (WHERE p.key IS NULL OR r.key IS NULL) AS unmatched,
	   count(*) FILTER (WHERE p.events IS DISTINCT FROM r.events) AS events,
	   count(*) FILTER (WHERE p.views IS DISTINCT FROM r.views) AS views,
	   count(*) FILTER (WHERE p.revenue IS DISTINCT FROM r.revenue) AS revenue,
	   count(*) FILTER (WHERE p.exit_page IS DISTINCT FROM r.exit_page) AS exit_page,
	   count(*) FILTER (WHERE p.pages IS DISTINCT FROM r.pages) AS pages
FROM sessionize.visits_sessions p FULL JOIN visits_reference r USING (key, session_start);
-- the change log: NULL where the session was stored before
SELECT count(*) FILTER (WHERE exit_page IS NULL) > 0 AS some_unknown,
	   count(*) FILTER (WHERE exit_page IS NOT NULL) > 0 AS some_known,
	   count(*) FILTER (WHERE views IS NULL) AS views_unknown
FROM sessionize.visits_changes;

-- The same list again changes nothing; a new order only reorders the views.
SELECT sessionize.alter_pipeline('visits', measures => $$
	count(*) AS views, sum(price) AS revenue, last(url) AS exit_page, approx_count_distinct(url) AS pages $$);
SELECT sessionize.alter_pipeline('visits', measures => $$
	approx_count_distinct(url) AS pages, count(*) AS views, sum(price) AS revenue, last(url) AS exit_page $$);
SELECT string_agg(column_name::text, ', ' ORDER BY ordinal_position) AS columns
FROM information_schema.columns WHERE table_schema = 'sessionize' AND table_name = 'visits_sessions_live';
SELECT count(*) FILTER (WHERE pages IS NOT NULL) > 0 AS pages_kept FROM sessionize.visits_sessions;
-- A measure redefined under its name is added anew: NULL for what is stored.
SELECT sessionize.alter_pipeline('visits', measures => $$
	approx_count_distinct(url) AS pages, count(price) AS views, sum(price) AS revenue, last(url) AS exit_page $$);
SELECT count(*) FILTER (WHERE views IS NOT NULL) AS views_known, count(*) FILTER (WHERE pages IS NOT NULL) > 0 AS pages_kept
FROM sessionize.visits_sessions;
INSERT INTO site_visits VALUES (29, '2024-06-01 00:00', '/new', 1), (29, '2024-06-01 00:05', '/new', NULL);
SELECT consumed FROM sessionize.run_pipeline('visits');
SELECT key, events, views, revenue, exit_page, pages FROM sessionize.visits_sessions WHERE views IS NOT NULL;

-- Errors: a bad list changes nothing; only the owner's side may alter; views
-- others built on the sessions must go first.
\set SHOW_CONTEXT never
SELECT sessionize.alter_pipeline('visits', measures => 'count(*) AS views, sum(nope) AS revenue');
SELECT sessionize.alter_pipeline('visits', measures => 'count(*) AS measured_since');
SELECT string_agg(name, ', ' ORDER BY position) AS unchanged FROM sessionize.pipeline_measures WHERE pipeline = 'visits';
SET ROLE measures_analyst;
SELECT sessionize.alter_pipeline('visits', measures => 'count(*) AS views');
RESET ROLE;
CREATE VIEW visits_daily AS SELECT date_trunc('day', session_start) AS day, count(*) FROM sessionize.visits_sessions GROUP BY 1;
SELECT sessionize.alter_pipeline('visits', measures => 'count(*) AS views');
DROP VIEW visits_daily;
\set SHOW_CONTEXT errors
-- An empty list drops every measure.
SELECT sessionize.alter_pipeline('visits', measures => ' ');
SELECT string_agg(column_name::text, ', ' ORDER BY ordinal_position) AS columns
FROM information_schema.columns WHERE table_schema = 'sessionize' AND table_name = 'visits_changes';
SELECT count(*) AS measures FROM sessionize.pipeline_measures WHERE pipeline = 'visits';
INSERT INTO site_visits VALUES (29, '2024-06-01 00:10', '/newer', 1);
SELECT consumed, merged FROM sessionize.run_pipeline('visits');

SELECT sessionize.drop_pipeline('visits');
DROP VIEW visits_reference;
DROP FUNCTION drain_visits(boolean);
DROP TABLE site_visits, visits_distinct;
DROP ROLE measures_tenant, measures_analyst, measures_viewer;
