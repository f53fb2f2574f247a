# Pipelines without the sessionize worker: pg_cron runs run_pipeline() on a
# schedule, the way a team that already runs pg_cron would deploy it.  The
# library is not preloaded, so no launcher can be what consumes the events.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $sharedir = `pg_config --sharedir`;
chomp $sharedir;
plan skip_all => 'pg_cron is not installed' unless -f "$sharedir/extension/pg_cron.control";

my $node = PostgreSQL::Test::Cluster->new('cron');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'pg_cron'
cron.database_name = 'postgres'
cron.use_background_workers = on
max_worker_processes = 16
});
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION pg_cron;
	CREATE EXTENSION sessionize;
	CREATE TABLE clicks_in (id bigserial, user_id int, ts timestamptz);
	SELECT sessionize.create_pipeline('clicks', 'clicks_in', 'user_id', 'ts', '15 minutes', fingerprint_exclude => '{id}');
	CREATE TABLE expected (user_id int, ts timestamptz);
	INSERT INTO expected SELECT DISTINCT (random() * 29)::int, timestamptz '2024-01-01' + (random() * 86400)::int * interval '1 second'
	FROM generate_series(1, 2000);
	INSERT INTO clicks_in (user_id, ts)
	SELECT user_id, ts FROM (SELECT * FROM expected UNION ALL SELECT * FROM expected WHERE random() < 0.1) e ORDER BY random();
});
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'sessionize%'"), '0',
	'no sessionize worker runs');

# pg_cron 1.4 schedules by the minute: every minute, drain what is waiting.
$node->safe_psql('postgres', q{
	SELECT cron.schedule('sessionize-clicks', '* * * * *',
		$$SELECT sessionize.run_pipeline('clicks', 100000)$$);
	SELECT cron.schedule('sessionize-prune', '*/5 * * * *', 'SELECT sessionize.prune_seen()');
});
ok($node->poll_query_until('postgres', "SELECT backlog = 0 FROM sessionize.pipeline_status WHERE name = 'clicks'"),
	'the cron job consumes the staging table');
# pg_cron records how a run ended after the run's own transaction committed:
# the batch can be visible while the run still shows as running.
my $first_run = q{
	SELECT status FROM cron.job_run_details d JOIN cron.job j USING (jobid)
	WHERE j.jobname = 'sessionize-clicks' ORDER BY runid LIMIT 1};
ok($node->poll_query_until('postgres', "SELECT ($first_run) IN ('succeeded', 'failed')"),
	'the first job run has ended');
is($node->safe_psql('postgres', $first_run), 'succeeded', 'the job run succeeded');
is($node->safe_psql('postgres', q{
	SELECT NOT EXISTS (
		(SELECT key, session_start, last_event_at, events FROM sessionize.clicks_sessions
		 EXCEPT
		 SELECT user_id, (s).started_at, (s).ended_at, (s).events
		 FROM (SELECT user_id, unnest(sessionize.sessions(ts, '15 minutes')) AS s FROM expected GROUP BY user_id) x)
		UNION ALL
		(SELECT user_id, (s).started_at, (s).ended_at, (s).events
		 FROM (SELECT user_id, unnest(sessionize.sessions(ts, '15 minutes')) AS s FROM expected GROUP BY user_id) x
		 EXCEPT
		 SELECT key, session_start, last_event_at, events FROM sessionize.clicks_sessions))}),
	't', 'the sessions equal sessions() over the distinct events');
is($node->safe_psql('postgres', q{
	SELECT consumed = merged + duplicates AND merged = (SELECT count(*) FROM expected)
	FROM sessionize.pipeline_state WHERE pipeline = 'clicks'}),
	't', 'every event is merged or counted as a duplicate');

$node->stop;
done_testing();
