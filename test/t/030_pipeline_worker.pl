# The pipeline launcher and workers: events inserted into a staging table show
# up as sessions without anybody calling run_pipeline(); pause, resume, drop
# and new pipelines are noticed without a restart; a pipeline can run as a
# non-superuser; a failing batch is retried with its error in the status, and
# the worker does not die and restart in a loop.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('worker');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'sessionize'
sessionize.naptime = '100ms'
sessionize.batch_size = 500
max_worker_processes = 16
});
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION sessionize;
	CREATE TABLE clicks_in (id bigserial, user_id int, ts timestamptz);
	SELECT sessionize.create_pipeline('clicks', 'clicks_in', 'user_id', 'ts', '15 minutes', fingerprint_exclude => '{id}');
	CREATE TABLE expected (user_id int, ts timestamptz);
});

# 3,000 events for 50 users, with re-deliveries, inserted in random order.
$node->safe_psql('postgres', q{
	INSERT INTO expected SELECT DISTINCT (random() * 49)::int, timestamptz '2024-01-01' + (random() * 86400)::int * interval '1 second'
	FROM generate_series(1, 3000);
	INSERT INTO clicks_in (user_id, ts)
	SELECT user_id, ts FROM (SELECT * FROM expected UNION ALL SELECT * FROM expected WHERE random() < 0.2) e ORDER BY random();
});
my $matches_expected = q{
	SELECT NOT EXISTS (
		(SELECT key, session_start, last_event_at, events FROM sessionize.clicks_sessions
		 EXCEPT
		 SELECT user_id, (s).started_at, (s).ended_at, (s).events
		 FROM (SELECT user_id, unnest(sessionize.sessions(ts, '15 minutes')) AS s FROM expected GROUP BY user_id) x)
		UNION ALL
		(SELECT user_id, (s).started_at, (s).ended_at, (s).events
		 FROM (SELECT user_id, unnest(sessionize.sessions(ts, '15 minutes')) AS s FROM expected GROUP BY user_id) x
		 EXCEPT
		 SELECT key, session_start, last_event_at, events FROM sessionize.clicks_sessions))};
ok($node->poll_query_until('postgres', "SELECT backlog = 0 FROM sessionize.pipeline_status WHERE name = 'clicks'"),
	'the worker drains the staging table');
is($node->safe_psql('postgres', $matches_expected), 't', 'the worker\'s sessions equal sessions() over the distinct events');
my $worker_pid = $node->safe_psql('postgres', "SELECT worker_pid FROM sessionize.pipeline_status WHERE name = 'clicks'");
ok($worker_pid =~ /^\d+$/, 'pipeline_status shows the worker');

# Pause: the worker stops; events wait.  Resume: they are consumed.
$node->safe_psql('postgres', "SELECT sessionize.pause_pipeline('clicks')");
ok($node->poll_query_until('postgres', "SELECT worker_pid IS NULL FROM sessionize.pipeline_status WHERE name = 'clicks'"),
	'pausing stops the worker');
$node->safe_psql('postgres', "INSERT INTO clicks_in (user_id, ts) VALUES (1, '2024-01-03 00:00')");
$node->safe_psql('postgres', "INSERT INTO expected VALUES (1, '2024-01-03 00:00')");
is($node->safe_psql('postgres', "SELECT backlog FROM sessionize.pipeline_status WHERE name = 'clicks'"), '1',
	'a paused pipeline leaves events waiting');
$node->safe_psql('postgres', "SELECT sessionize.resume_pipeline('clicks')");
ok($node->poll_query_until('postgres', "SELECT backlog = 0 FROM sessionize.pipeline_status WHERE name = 'clicks'"),
	'resuming consumes them');

# Pausing waits for the batch in hand: once pause_pipeline() returns, the
# worker takes no more events, though it was busy with batch after batch.  A
# trigger makes each batch last a while, so that the pause comes while one
# runs.
$node->safe_psql('postgres', q{
	CREATE FUNCTION slow_claim() RETURNS trigger LANGUAGE plpgsql AS $f$
	BEGIN PERFORM pg_sleep(0.2); RETURN NULL; END $f$;
	CREATE TRIGGER slow_claim AFTER DELETE ON clicks_in FOR EACH STATEMENT EXECUTE FUNCTION slow_claim();
	CREATE TABLE consumed_before AS SELECT consumed FROM sessionize.pipeline_state WHERE pipeline = 'clicks';
	INSERT INTO expected SELECT 100 + n % 50, timestamptz '2024-02-01' + n * interval '1 s' FROM generate_series(1, 20000) n;
	INSERT INTO clicks_in (user_id, ts) SELECT * FROM expected WHERE user_id >= 100});
ok($node->poll_query_until('postgres', "SELECT s.consumed > b.consumed + 2000 FROM sessionize.pipeline_state s, consumed_before b WHERE s.pipeline = 'clicks'"),
	'the worker takes batch after batch');
$node->safe_psql('postgres', "SELECT sessionize.pause_pipeline('clicks')");
my $consumed_at_pause = $node->safe_psql('postgres', "SELECT consumed FROM sessionize.pipeline_state WHERE pipeline = 'clicks'");
ok($node->poll_query_until('postgres', "SELECT worker_pid IS NULL FROM sessionize.pipeline_status WHERE name = 'clicks'"),
	'the paused worker goes');
is($node->safe_psql('postgres', "SELECT consumed FROM sessionize.pipeline_state WHERE pipeline = 'clicks'"),
	$consumed_at_pause, 'no batch took events after pause_pipeline() returned');
ok($node->safe_psql('postgres', "SELECT backlog > 0 FROM sessionize.pipeline_status WHERE name = 'clicks'") eq 't',
	'events were still waiting');
$node->safe_psql('postgres', "DROP TRIGGER slow_claim ON clicks_in; SELECT sessionize.resume_pipeline('clicks')");
ok($node->poll_query_until('postgres', "SELECT backlog = 0 FROM sessionize.pipeline_status WHERE name = 'clicks'"),
	'resumed, the worker takes the rest');
is($node->safe_psql('postgres', $matches_expected), 't', 'the sessions equal sessions() over the distinct events');

# A second pipeline, on another table, run as a role that is not a superuser
# (a trigger on the source records whose rights the claim has).
$node->safe_psql('postgres', q{
	CREATE ROLE pipeline_runner;
	CREATE TABLE plays_in (listener int, played_at timestamptz);
	GRANT SELECT, UPDATE, DELETE ON plays_in TO pipeline_runner;
	CREATE TABLE claimed_by (who name);
	GRANT INSERT ON claimed_by TO pipeline_runner;
	CREATE FUNCTION record_claimer() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN INSERT INTO public.claimed_by VALUES (current_user); RETURN OLD; END $$;
	CREATE TRIGGER record_claimer BEFORE DELETE ON plays_in FOR EACH ROW EXECUTE FUNCTION record_claimer();
	SELECT sessionize.create_pipeline('plays', 'plays_in', 'listener', 'played_at', '30 minutes', run_as => 'pipeline_runner');
	INSERT INTO plays_in VALUES (1, '2024-01-01 10:00'), (1, '2024-01-01 10:10'), (2, '2024-01-01 10:00'), (NULL, '2024-01-01 10:00');
});
ok($node->poll_query_until('postgres', "SELECT count(*) = 2 FROM sessionize.plays_sessions"),
	'a second pipeline runs beside the first, as a non-superuser');
is($node->safe_psql('postgres', "SELECT string_agg(DISTINCT who, ',') FROM claimed_by"),
	'pipeline_runner', 'its batches claim with the rights of the role given');
is($node->safe_psql('postgres', "SELECT error FROM sessionize.dead_letter WHERE pipeline = 'plays'"), 'key is null',
	'a poison event goes to the dead-letter table and the pipeline goes on');

# A batch that fails as a whole (the runner may no longer delete from its
# staging table): rolled back, error in the status, retried, same worker.
$node->safe_psql('postgres', "REVOKE DELETE ON plays_in FROM pipeline_runner");
$node->safe_psql('postgres', "INSERT INTO plays_in VALUES (3, '2024-01-01 12:00')");
ok($node->poll_query_until('postgres', "SELECT failures >= 2 FROM sessionize.pipeline_status WHERE name = 'plays'"),
	'a failing batch is retried');
like($node->safe_psql('postgres', "SELECT last_error FROM sessionize.pipeline_status WHERE name = 'plays'"),
	qr/permission denied/, 'its error is visible in pipeline_status');
my $plays_pid = $node->safe_psql('postgres', "SELECT worker_pid FROM sessionize.pipeline_status WHERE name = 'plays'");
$node->safe_psql('postgres', "GRANT DELETE ON plays_in TO pipeline_runner");
ok($node->poll_query_until('postgres', "SELECT count(*) = 3 FROM sessionize.plays_sessions"),
	'once the cause is fixed the batch lands');
is($node->safe_psql('postgres', "SELECT worker_pid FROM sessionize.pipeline_status WHERE name = 'plays'"), $plays_pid,
	'the same worker kept going: no crash loop');

# A worker serves one incarnation of its pipeline: dropped and created again
# under the same name, the pipeline gets a new worker, and the old one exits.
my $plays_id = $node->safe_psql('postgres', "SELECT id FROM sessionize.pipelines WHERE name = 'plays'");
$node->safe_psql('postgres', q{
	BEGIN;
	SELECT sessionize.drop_pipeline('plays');
	SELECT sessionize.create_pipeline('plays', 'plays_in', 'listener', 'played_at', '30 minutes', run_as => 'pipeline_runner');
	COMMIT;
});
ok($node->poll_query_until('postgres', "SELECT worker_pid IS NOT NULL AND worker_pid <> $plays_pid FROM sessionize.pipeline_status WHERE name = 'plays'"),
	'a pipeline created again gets a worker of its own');
ok($node->poll_query_until('postgres', "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $plays_pid"),
	'and the worker of the dropped incarnation exits');
$node->safe_psql('postgres', "INSERT INTO plays_in VALUES (7, '2024-01-01 10:00')");
ok($node->poll_query_until('postgres', "SELECT consumed = 1 FROM sessionize.pipeline_status WHERE name = 'plays'"),
	'the new incarnation consumes');
isnt($node->safe_psql('postgres', "SELECT id FROM sessionize.pipelines WHERE name = 'plays'"), $plays_id,
	'under a new id');

# Dropping a pipeline stops its worker.
$node->safe_psql('postgres', "SELECT sessionize.drop_pipeline('plays')");
ok($node->poll_query_until('postgres', "SELECT count(*) = 0 FROM pg_stat_activity WHERE application_name LIKE 'sessionize pipeline % plays'"),
	'dropping a pipeline stops its worker');

# SIGTERM ends a worker between batches; the launcher starts a new one.  The
# worker terminated is the one serving now (the pause above replaced the
# first one).
my $terminated = $node->safe_psql('postgres', "SELECT worker_pid FROM sessionize.pipeline_status WHERE name = 'clicks'");
like($terminated, qr/^\d+$/, 'the resumed pipeline has a worker');
$node->safe_psql('postgres', "SELECT pg_terminate_backend($terminated)");
ok($node->poll_query_until('postgres', "SELECT worker_pid IS NOT NULL AND worker_pid <> $terminated FROM sessionize.pipeline_status WHERE name = 'clicks'"),
	'a terminated worker is replaced');
$node->safe_psql('postgres', "INSERT INTO clicks_in (user_id, ts) VALUES (2, '2024-01-03 00:00')");
$node->safe_psql('postgres', "INSERT INTO expected VALUES (2, '2024-01-03 00:00')");
ok($node->poll_query_until('postgres', "SELECT backlog = 0 FROM sessionize.pipeline_status WHERE name = 'clicks'"),
	'and the new worker consumes');
is($node->safe_psql('postgres', $matches_expected), 't', 'the sessions are still exactly right');

# The launcher itself is restarted by the postmaster.
my $launcher = $node->safe_psql('postgres', "SELECT pid FROM pg_stat_activity WHERE backend_type = 'sessionize launcher'");
my $scheduler = $node->safe_psql('postgres', "SELECT pid FROM pg_stat_activity WHERE backend_type = 'sessionize scheduler'");
like($scheduler, qr/^\d+$/, 'one scheduler serves the database');
my $log_offset = -s $node->logfile;
$node->safe_psql('postgres', "SELECT pg_terminate_backend($launcher)");
ok($node->poll_query_until('postgres', "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'sessionize launcher' AND pid <> $launcher"),
	'the launcher comes back after it dies');
# The new launcher does not know the scheduler the old one started, which
# still runs with its worker: the scheduler it starts finds the database
# taken and exits.
ok($node->wait_for_log(qr/sessionize database "postgres" already has a scheduler, this one exits/, $log_offset),
	'a second scheduler of a database steps back');
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'sessionize pipeline % clicks'"),
	'1', 'so the pipeline keeps one worker');
$node->safe_psql('postgres', "SELECT sessionize.pause_pipeline('clicks')");
ok($node->poll_query_until('postgres', "SELECT count(*) = 0 FROM pg_stat_activity WHERE application_name LIKE 'sessionize pipeline % clicks'"),
	'the worker the old launcher started stops when its pipeline is paused');

# A second worker of a pipeline, started by whatever means, steps back too.
$node->safe_psql('postgres', "SELECT sessionize.resume_pipeline('clicks')");
ok($node->poll_query_until('postgres', "SELECT count(*) = 1 FROM pg_stat_activity WHERE application_name LIKE 'sessionize pipeline % clicks'"),
	'a resumed pipeline gets its worker back');
# The new launcher keeps trying a scheduler of its own, ever less often: each
# shows in pg_stat_activity for the moment it takes to find the database
# taken.  What must hold is that none of them stays beside the first one.
ok($node->poll_query_until('postgres',
		"SELECT array_agg(pid) = ARRAY[$scheduler] FROM pg_stat_activity WHERE backend_type = 'sessionize scheduler'"),
	'and its database keeps one scheduler, the first');

$node->stop;
done_testing();
