# Nothing a new user does fails silently.  Pipelines take turns when there
# are more of them than workers: a pipeline whose events keep coming does
# not starve the others, and no more than sessionize.max_workers run at
# once.  A pipeline the launcher does not serve says why, and
# create_pipeline() warns; a same-named pipeline of another database is not
# shown the other's worker.  DROP EXTENSION is refused while pipelines
# exist, and once they are dropped it leaves nothing behind: the extension
# can be created again with the same pipelines.
use strict;
use warnings;
use IPC::Run;
use Time::HiRes qw(usleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('operability');
$node->init(allows_streaming => 'logical');
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'sessionize'
sessionize.database = 'postgres'
sessionize.naptime = '100ms'
sessionize.batch_size = 100
sessionize.max_workers = 2
sessionize.worker_turn = '1s'
max_worker_processes = 16
});
$node->start;

# Five pipelines, two workers.  busy_1 and busy_2 get events all along;
# quiet_1..3 get theirs once, at the start.
$node->safe_psql('postgres', q{
	CREATE EXTENSION sessionize;
	CREATE TABLE busy_1_in (user_id int, ts timestamptz);
	CREATE TABLE busy_2_in (user_id int, ts timestamptz);
	CREATE TABLE quiet_1_in (user_id int, ts timestamptz);
	CREATE TABLE quiet_2_in (user_id int, ts timestamptz);
	CREATE TABLE quiet_3_in (user_id int, ts timestamptz);
	SELECT sessionize.pause_pipeline(name) FROM (VALUES ('busy_1'), ('busy_2'), ('quiet_1'), ('quiet_2'), ('quiet_3')) v(name),
		LATERAL sessionize.create_pipeline(name, name || '_in', 'user_id', 'ts', '30 minutes');
	INSERT INTO busy_1_in SELECT n % 100, timestamptz '2024-01-01' + n * interval '1 s' FROM generate_series(1, 5000) n;
	INSERT INTO busy_2_in SELECT n % 100, timestamptz '2024-01-01' + n * interval '1 s' FROM generate_series(1, 5000) n;
	INSERT INTO quiet_1_in SELECT n % 10, timestamptz '2024-01-01' + n * interval '1 s' FROM generate_series(1, 500) n;
	INSERT INTO quiet_2_in SELECT n % 10, timestamptz '2024-01-01' + n * interval '1 s' FROM generate_series(1, 500) n;
	INSERT INTO quiet_3_in SELECT n % 10, timestamptz '2024-01-01' + n * interval '1 s' FROM generate_series(1, 500) n;
	ANALYZE busy_1_in, busy_2_in, quiet_1_in, quiet_2_in, quiet_3_in;
	SELECT sessionize.resume_pipeline('busy_1'), sessionize.resume_pipeline('busy_2');
});
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'sessionize pipeline'"),
	'the busy pipelines take both workers');
# The feeder goes on until the test stops it (or timeout_default passes), so
# that the busy pipelines keep getting events however long the quiet ones
# take; feeder.rounds counts what it fed.
$node->safe_psql('postgres', 'CREATE TABLE feeder (rounds int NOT NULL, stop boolean NOT NULL); INSERT INTO feeder VALUES (0, false)');
my $feeder = IPC::Run::start(['psql', '-X', '-q', '-d', $node->connstr('postgres'), '-c', qq{
	DO \$\$
	DECLARE
		i int := 0;
		give_up timestamptz := clock_timestamp() + $PostgreSQL::Test::Utils::timeout_default * interval '1 second';
	BEGIN
		WHILE NOT (SELECT stop FROM feeder) AND clock_timestamp() < give_up LOOP
			i := i + 1;
			INSERT INTO busy_1_in SELECT n % 100, timestamptz '2024-01-02' + (i * 100 + n) * interval '1 s' FROM generate_series(1, 100) n;
			INSERT INTO busy_2_in SELECT n % 100, timestamptz '2024-01-02' + (i * 100 + n) * interval '1 s' FROM generate_series(1, 100) n;
			UPDATE feeder SET rounds = i;
			COMMIT;
			PERFORM pg_sleep(0.05);
		END LOOP;
	END \$\$}]);
$node->safe_psql('postgres', q{
	SELECT sessionize.resume_pipeline(name) FROM (VALUES ('quiet_1'), ('quiet_2'), ('quiet_3')) v(name)});

# Sample the workers and the reasons given until the quiet pipelines drain.
my ($most_workers, %reasons, $drained) = (0);
for (my $i = 0; $i < 1800; $i++)
{
	my ($workers, $waiting, $left) = split /\|/, $node->safe_psql('postgres', q{
		SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'sessionize pipeline'),
			   (SELECT string_agg(DISTINCT regexp_replace(waiting_reason, ':.*', ''), ',') FROM sessionize.pipeline_status),
			   (SELECT count(*) FROM sessionize.pipeline_status WHERE name LIKE 'quiet%' AND consumed < 500)});
	$most_workers = $workers if $workers > $most_workers;
	$reasons{$_} = 1 for split /,/, $waiting;
	if ($left == 0)
	{
		$drained = 1;
		last;
	}
	usleep(100_000);
}
ok($drained, 'pipelines whose events came once get turns while two others keep getting events');
ok($feeder->pumpable, 'and the others were still getting events');
cmp_ok($most_workers, '<=', 2, 'no more than sessionize.max_workers ran at once');
ok($reasons{'no worker free'}, 'a pipeline waiting its turn says so');
$node->safe_psql('postgres', 'UPDATE feeder SET stop = true');
$feeder->finish;
my $busy = 5000 + 100 * $node->safe_psql('postgres', 'SELECT rounds FROM feeder');
ok($node->poll_query_until('postgres', q{
	SELECT bool_and(backlog = 0) FROM sessionize.pipeline_status}), 'every pipeline drains');
is($node->safe_psql('postgres', q{
	SELECT string_agg(name || '=' || consumed, ' ' ORDER BY name) FROM sessionize.pipeline_status}),
	"busy_1=$busy busy_2=$busy quiet_1=500 quiet_2=500 quiet_3=500", 'every event was consumed once');
$node->safe_psql('postgres', 'ANALYZE sessionize.busy_1_stored_sessions');
like($node->safe_psql('postgres', q{
	SET enable_seqscan = off;
	EXPLAIN SELECT * FROM sessionize.busy_1_sessions WHERE session_start >= timestamptz '2024-01-02 11:00'}),
	qr/Index Cond: \(session_start >=/, 'a time range of the sessions view can be read through an index');
$node->safe_psql('postgres', "SELECT sessionize.pause_pipeline('quiet_1')");
is($node->safe_psql('postgres', "SELECT waiting_reason FROM sessionize.pipeline_status WHERE name = 'quiet_1'"),
	'paused: resume_pipeline() lets it run again', 'a paused pipeline says how to resume it');
is($node->safe_psql('postgres', "SELECT lag FROM sessionize.pipeline_status WHERE name = 'quiet_1'"),
	'00:00:00', 'with nothing waiting, a paused pipeline has no lag');
# The event is inserted once quiet_1 has no worker: a batch its worker began
# before the pause could still take it.
ok($node->poll_query_until('postgres', "SELECT worker_pid IS NULL FROM sessionize.pipeline_status WHERE name = 'quiet_1'"),
	'the paused pipeline has no worker');
$node->safe_psql('postgres', "INSERT INTO quiet_1_in VALUES (1, '2024-01-01 01:00')");
is($node->safe_psql('postgres', "SELECT backlog || ' ' || (lag > interval '1 day') FROM sessionize.pipeline_status WHERE name = 'quiet_1'"),
	'1 true', 'with an event waiting, its lag is the time since the newest event merged');

# A database the launcher does not serve: create_pipeline() warns, the
# status says why, and the worker of postgres's quiet_2 is not shown as its.
$node->safe_psql('postgres', 'CREATE DATABASE analytics');
my ($ret, $out, $err) = $node->psql('analytics', q{
	CREATE EXTENSION sessionize;
	CREATE TABLE quiet_2_in (user_id int, ts timestamptz);
	SELECT sessionize.create_pipeline('quiet_2', 'quiet_2_in', 'user_id', 'ts', '30 minutes');
	INSERT INTO quiet_2_in VALUES (1, '2024-01-01')});
like($err, qr/WARNING:  no worker will run pipeline "quiet_2" as things stand: database not served: sessionize.database = 'postgres'/,
	'create_pipeline() warns in a database the launcher does not serve');
like($err, qr/HINT:  run_pipeline\(\) runs its batches by hand or from pg_cron/, 'with a hint');
is($node->safe_psql('analytics', q{
	SELECT coalesce(worker_pid::text, 'none') || ' ' || waiting_reason FROM sessionize.pipeline_status}),
	"none database not served: sessionize.database = 'postgres'",
	'its status says why it waits and shows no worker of the same-named pipeline of postgres');
is($node->safe_psql('analytics', q{
	SELECT consumed FROM sessionize.run_pipeline('quiet_2')}), '1', 'run_pipeline() runs it by hand');

# DROP EXTENSION is refused while pipelines exist, with or without CASCADE.
$node->safe_psql('analytics', 'CREATE ROLE nobody LOGIN');
for my $drop ('DROP EXTENSION sessionize', 'DROP EXTENSION sessionize CASCADE', 'DROP SCHEMA sessionize CASCADE')
{
	($ret, $out, $err) = $node->psql('analytics', $drop);
	like($err, qr/ERROR:  cannot drop sessionize while it has 1 pipeline\n.*\nHINT:  Drop the pipelines first: SELECT sessionize.drop_pipeline/s,
		"$drop is refused while a pipeline exists, naming drop_pipeline()");
}
$node->safe_psql('analytics', q{
	CREATE TABLE clicks (user_id int, ts timestamptz);
	SELECT sessionize.create_pipeline('clicks', 'clicks', 'user_id', 'ts', '30 minutes', source_kind => 'logical')});
my $before = q{SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'sessionize'),
	(SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'sessionize%'),
	(SELECT count(*) FROM pg_publication WHERE pubname LIKE 'sessionize%'),
	(SELECT count(*) FROM pg_namespace WHERE nspname = 'sessionize')};
$node->safe_psql('analytics', q{
	SELECT sessionize.drop_pipeline(name) FROM sessionize.pipelines;
	DROP EXTENSION sessionize});
is($node->safe_psql('analytics', $before), '0|0|0|1',
	'DROP EXTENSION after drop_pipeline() leaves no table, slot or publication, and the schema empty');
# The empty schema is taken again, unless another role could have put
# something in it.
$node->safe_psql('analytics', 'GRANT CREATE ON SCHEMA sessionize TO nobody');
($ret, $out, $err) = $node->psql('analytics', 'CREATE EXTENSION sessionize');
like($err, qr/ERROR:  schema "sessionize" already exists/, 'an empty schema where another role may create is refused');
$node->safe_psql('analytics', q{
	REVOKE CREATE ON SCHEMA sessionize FROM nobody;
	CREATE EXTENSION sessionize;
	SELECT sessionize.create_pipeline('quiet_2', 'quiet_2_in', 'user_id', 'ts', '30 minutes');
	SELECT sessionize.create_pipeline('clicks', 'clicks', 'user_id', 'ts', '30 minutes', source_kind => 'logical');
	INSERT INTO quiet_2_in VALUES (2, '2024-01-01');
	INSERT INTO clicks VALUES (1, '2024-01-01')});
is($node->safe_psql('analytics', q{
	SELECT (SELECT consumed FROM sessionize.run_pipeline('quiet_2')) || ' ' || (SELECT consumed FROM sessionize.run_pipeline('clicks'))}),
	'1 1', 'the extension created again takes the same pipelines, staging and logical');
# A logical pipeline whose slot was dropped gets a new one, in a
# transaction that has written nothing yet.
$node->safe_psql('analytics', q{
	SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE 'sessionize_%_clicks'});
($ret, $out, $err) = $node->psql('analytics', q{
	BEGIN;
	INSERT INTO clicks VALUES (2, '2024-01-01');
	SELECT sessionize.run_pipeline('clicks');
	COMMIT});
like($err, qr/ERROR:  the replication slot of pipeline "clicks" is missing\n.*HINT:  Call run_pipeline\(\) in a transaction of its own/s,
	'a missing slot cannot be made in a transaction that has written');
($ret, $out, $err) = $node->psql('analytics', q{SELECT consumed FROM sessionize.run_pipeline('clicks')});
like($err, qr/WARNING:  pipeline "clicks" had no replication slot\nDETAIL:  A new replication slot takes the changes committed from [0-9A-F]+\/[0-9A-F]+ on/,
	'in one of its own it is made, with a warning');
$node->safe_psql('analytics', "INSERT INTO clicks VALUES (3, '2024-01-01')");
ok($node->poll_query_until('analytics', q{
	SELECT consumed FROM sessionize.run_pipeline('clicks')}, '1'), 'and the pipeline takes what is committed after');
like($node->safe_psql('analytics', "SELECT last_error FROM sessionize.pipeline_status WHERE name = 'clicks'"),
	qr/^a new replication slot takes the changes committed from/, 'pipeline_status says from where it went on');

# A logical source's backlog is counted from its slot, and its lag is how
# long the oldest change not taken has waited since its commit.
my $first_started = $node->safe_psql('analytics', q{
	BEGIN; INSERT INTO clicks VALUES (4, '2024-01-01'), (5, '2024-01-01'); SELECT now(); COMMIT});
$node->safe_psql('analytics', 'SELECT pg_sleep(1.1)');
my $second_started = $node->safe_psql('analytics', q{
	BEGIN; INSERT INTO clicks VALUES (6, '2024-01-01'); SELECT now(); COMMIT});
is($node->safe_psql('analytics', qq{
	SELECT backlog || ' ' || (oldest_waiting_at >= '$first_started' AND oldest_waiting_at < '$second_started')
		   || ' ' || (lag >= interval '1 second') || ' ' || (sessionize.pipeline_backlog(name) = backlog)
	FROM sessionize.pipeline_status WHERE name = 'clicks'}),
	'3 true true true', 'a logical source counts the changes waiting in its slot, and how long the oldest has waited');
is($node->safe_psql('analytics', qq{
	SELECT consumed FROM sessionize.run_pipeline('clicks', 2);
	SELECT backlog || ' ' || (oldest_waiting_at >= '$second_started') FROM sessionize.pipeline_status WHERE name = 'clicks'}),
	"2\n1 true", 'a batch that takes the oldest transaction leaves the next one oldest');
is($node->safe_psql('analytics', q{
	SELECT consumed FROM sessionize.run_pipeline('clicks');
	SELECT backlog || ' ' || lag || ' ' || coalesce(oldest_waiting_at::text, 'none')
	FROM sessionize.pipeline_status WHERE name = 'clicks'}),
	"1\n0 00:00:00 none", 'with nothing waiting, no lag');
# A count holds the pipeline's batch lock while it peeks at the slot: a
# batch that starts meanwhile waits instead of failing on a slot in use,
# and a count while a batch holds the lock gives no number.
my $counter = $node->background_psql('analytics');
$counter->query_safe("SELECT sessionize.sessionize_try_lock_pipeline_batch_briefly('clicks')");
$node->safe_psql('analytics', "INSERT INTO clicks VALUES (7, '2024-01-01')");
my ($batch_out, $batch_err) = ('', '');
my $batch = IPC::Run::start(['psql', '-X', '-At', '-d', $node->connstr('analytics'), '-c',
		"SELECT consumed FROM sessionize.run_pipeline('clicks')"], '>', \$batch_out, '2>', \$batch_err);
ok( $node->poll_query_until('analytics', q{
		SELECT count(*) > 0 FROM pg_stat_activity
		WHERE wait_event_type = 'Lock' AND query LIKE '%run_pipeline(''clicks'')%'}),
	'a batch waits while the backlog of its slot is counted');
is($node->safe_psql('analytics', "SELECT coalesce(backlog::text, 'unknown') FROM sessionize.pipeline_status WHERE name = 'clicks'"),
	'unknown', 'a count while a batch holds the lock gives no number');
$counter->query_safe("SELECT sessionize.sessionize_unlock_pipeline_batch_briefly('clicks')");
$batch->finish;
is($batch_out . $batch_err, "1\n", 'then the batch takes its event, without an error');
$counter->quit;

# A publication of sessionize dropped by hand: creating a logical pipeline
# says how to make it again, and works once it is.
$node->safe_psql('analytics', 'DROP PUBLICATION sessionize_pipeline_updates');
($ret, $out, $err) = $node->psql('analytics', q{
	SELECT sessionize.create_pipeline('clicks_again', 'clicks', 'user_id', 'ts', '30 minutes', source_kind => 'logical')});
like($err, qr/ERROR:  the publications of sessionize are missing\n.*HINT:  Create them as sessionize does: CREATE PUBLICATION sessionize_pipelines WITH \(publish = 'insert'\); CREATE PUBLICATION sessionize_pipeline_updates WITH \(publish = 'insert, update'\);/s,
	'a missing publication is named with the statement that makes it');
$node->safe_psql('analytics', q{
	CREATE PUBLICATION sessionize_pipeline_updates WITH (publish = 'insert, update');
	SELECT sessionize.create_pipeline('clicks_again', 'clicks', 'user_id', 'ts', '30 minutes', source_kind => 'logical')});
is($node->safe_psql('analytics', "SELECT count(*) FROM sessionize.pipelines WHERE name = 'clicks_again'"), '1',
	'and the pipeline is made once it exists');

# A role that may not drop the extension gets the DROP's own error.
($ret, $out, $err) = $node->psql('analytics', 'DROP EXTENSION sessionize', extra_params => ['-U', 'nobody']);
like($err, qr/ERROR:  must be owner of extension sessionize/, 'a role without the right to drop it gets the usual error');

$node->safe_psql('analytics', q{
	SELECT sessionize.drop_pipeline(name) FROM sessionize.pipelines;
	DROP SCHEMA sessionize CASCADE});
is($node->safe_psql('analytics', $before), '0|0|0|0', 'DROP SCHEMA sessionize CASCADE leaves nothing at all');

$node->stop;
done_testing();
