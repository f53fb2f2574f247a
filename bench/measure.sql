-- Shared by the benchmarks: runs the queries of bench_queries round-robin for
-- several rounds, each with its own max_parallel_workers_per_gather, and
-- reports the median time of each and its speed relative to the first.
CREATE TEMP TABLE IF NOT EXISTS bench_queries (position int, name text, query text, parallel_workers int DEFAULT 2);
CREATE TEMP TABLE IF NOT EXISTS bench_times (name text, round int, seconds float8);

CREATE OR REPLACE FUNCTION pg_temp.bench_run(rounds int) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
	q record;
	started timestamptz;
BEGIN
	FOR r IN 1..rounds LOOP
		FOR q IN SELECT * FROM bench_queries ORDER BY position LOOP
			PERFORM pg_catalog.set_config('max_parallel_workers_per_gather', q.parallel_workers::text, true);
			started := clock_timestamp();
			EXECUTE q.query;
			INSERT INTO bench_times VALUES (q.name, r, extract(epoch FROM clock_timestamp() - started));
		END LOOP;
	END LOOP;
END $$;

CREATE OR REPLACE VIEW pg_temp.bench_report AS
WITH medians AS (
	SELECT q.position, t.name, percentile_cont(0.5) WITHIN GROUP (ORDER BY t.seconds) AS median,
		   min(t.seconds) AS best, count(*) AS runs
	FROM bench_times t JOIN bench_queries q USING (name)
	GROUP BY q.position, t.name)
SELECT name, runs, round(median::numeric, 3) AS median_s, round(best::numeric, 3) AS best_s,
	   round(((SELECT median FROM medians ORDER BY position LIMIT 1) / median)::numeric, 2) AS speedup_vs_first
FROM medians ORDER BY position;
