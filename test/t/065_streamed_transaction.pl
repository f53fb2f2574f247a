# The worker of a logical pipeline streams its source (src/source_logical.c).
# What this proves:
#   1. one source transaction of 1,000,000 rows is consumed over many
#      batches exactly once, also when the worker is killed while it
#      consumes it: every row is merged or counted as a duplicate once, and
#      the sessions equal sessions() over the distinct rows;
#   2. the transaction is decoded once per worker, not once per batch:
#      pg_stat_replication_slots counts the transactions spilled to disk
#      while decoding, and only it is that large (the statistics start
#      again after each crash);
#   3. kills between a batch's commit and the slot's confirmation of it (the
#      next batch confirms) lose and double nothing, and the slot never
#      passes what was committed;
#   4. run_pipeline() by hand between the worker's batches still works, and
#      the worker goes on after it.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SessionizeTest;

my $rows = 1_000_000;
my $node = PostgreSQL::Test::Cluster->new('streamed');
$node->init(allows_streaming => 'logical');
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'sessionize'
sessionize.database = 'postgres'
sessionize.naptime = '100ms'
sessionize.batch_size = 20000
restart_after_crash = on
max_worker_processes = 16
});
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION sessionize;
	CREATE TABLE app_events (id bigserial, user_id integer, ts timestamptz, url text);
	SELECT sessionize.create_pipeline('app', 'app_events', 'user_id', 'ts', '30 minutes',
									  source_kind => 'logical', fingerprint_exclude => '{id}');
	CREATE UNLOGGED TABLE crash_marker (crash int);
});
my $slot = $node->safe_psql('postgres', "SELECT sessionize.sessionize_slot_name('app')");
my $worker_query = "SELECT worker_pid FROM sessionize.pipeline_status WHERE name = 'app'";
ok($node->poll_query_until('postgres', "SELECT ($worker_query) IS NOT NULL"), 'the worker runs');

my $agrees = pipeline_agrees_query(
	consumed_rows => 'SELECT user_id, ts, url FROM app_events', pipeline => 'app', gap => '30 minutes');
my $consumed = "SELECT consumed FROM sessionize.pipeline_state WHERE pipeline = 'app'";
my $decoded = "SELECT spill_txns FROM pg_stat_replication_slots WHERE slot_name = '$slot'";

# Kills the worker; the postmaster restarts the cluster.
sub kill_worker
{
	my ($crash) = @_;
	my $pid = $node->safe_psql('postgres', $worker_query);
	$node->safe_psql('postgres', "INSERT INTO crash_marker VALUES ($crash)");
	kill('KILL', $pid) or die "could not kill worker $pid: $!";
	ok($node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM crash_marker'),
		"crash $crash: the server went through crash recovery");
	# The new worker may already run batches.  The slot first, the state in a
	# later snapshot: slot_advance_to only grows, so that can only make the
	# comparison easier, while one statement could read the slot after a
	# batch committed since its snapshot had the slot confirm a newer position.
	my $flush = $node->safe_psql('postgres',
		"SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '$slot'");
	is( $node->safe_psql('postgres',
			"SELECT coalesce(slot_advance_to >= '$flush'::pg_lsn, true) FROM sessionize.pipeline_state WHERE pipeline = 'app'"),
		't', "crash $crash: the slot ($flush) has not passed the committed slot_advance_to");
	ok($node->poll_query_until('postgres', "SELECT ($worker_query) IS DISTINCT FROM $pid AND ($worker_query) IS NOT NULL"),
		"crash $crash: a new worker runs");
}

# 1. One transaction of a million rows: every tenth a re-delivery of the
# row before it (another id, the same content).
$node->safe_psql('postgres', qq{
	INSERT INTO app_events (user_id, ts, url)
	SELECT k % 20000, timestamptz '2024-01-01' + k * interval '10 ms', 'u' || k % 7
	FROM (SELECT n / 10 * 9 + least(n % 10, 8) AS k FROM generate_series(0, $rows - 1) n) r});
my $crash = 0;
for my $part (1 .. 3)
{
	ok($node->poll_query_until('postgres', "SELECT ($consumed) >= " . ($part * $rows / 4)),
		"part 1: the worker has taken a quarter more of the transaction ($part)");
	kill_worker(++$crash);
}
ok($node->poll_query_until('postgres', "SELECT ($consumed) = $rows"), 'part 1: the worker takes the whole transaction');
is($node->safe_psql('postgres', $agrees), 't',
	'part 1: each row merged or counted as a duplicate once; the sessions are sessions() over the distinct rows');
is($node->safe_psql('postgres', "SELECT merged || ' ' || duplicates FROM sessionize.pipeline_state"), '900000 100000',
	'part 1: 900,000 distinct events, 100,000 duplicates');

# 2. Decoded once per worker: the last worker took the last quarter (a dozen
# batches) and decoded the transaction once; a peek per batch would have
# decoded, and spilled, it once per batch.
ok($node->poll_query_until('postgres', "SELECT ($decoded) > 0"), 'part 2: the worker reports its decoding');
my $decoded_txns = $node->safe_psql('postgres', $decoded);
note "large transactions decoded since the last crash: $decoded_txns";
cmp_ok($decoded_txns, '<=', 2, 'part 2: the transaction was decoded once, not once per batch');

# 3. Kills right after a batch committed a new slot_advance_to, before the
# next batch confirmed it to the slot.  The watch starts before the rows are
# inserted, so that it cannot miss the batches that take them (the last of
# them leaves the slot behind for at least a naptime); it gives up after
# timeout_default.
my $behind = 0;
for my $round (1 .. 4)
{
	my $watch = start_watching_slot($node, $slot, 'app', "part 3: round $round: the slot is watched");
	$node->safe_psql('postgres', qq{
		INSERT INTO app_events (user_id, ts, url)
		SELECT n % 20000, timestamptz '2024-02-01' + ($round * 30000 + n) * interval '10 ms', 'v'
		FROM generate_series(1, 30000) n});
	$behind++ if watched_slot_behind($watch);
	kill_worker(++$crash);
}
cmp_ok($behind, '>=', 2, "part 3: kills came between a commit and the slot's confirmation ($behind of 4)");
ok($node->poll_query_until('postgres', "SELECT ($consumed) = $rows + 4 * 30000"), 'part 3: the worker takes every row');
is($node->safe_psql('postgres', $agrees), 't', 'part 3: nothing lost, nothing doubled');

# 4. By hand, between the worker's batches: the worker is paused, a batch is
# run by hand (it peeks and advances the slot), and the worker resumes.  The
# rows are inserted once the worker has gone: a batch it began before the
# pause may still take rows committed after it.
$node->safe_psql('postgres', "SELECT sessionize.pause_pipeline('app')");
ok($node->poll_query_until('postgres', "SELECT ($worker_query) IS NULL"), 'part 4: the paused pipeline has no worker');
$node->safe_psql('postgres', q{
	INSERT INTO app_events (user_id, ts, url)
	SELECT n % 100, timestamptz '2024-03-01' + n * interval '1 s', 'w' FROM generate_series(1, 500) n});
is($node->safe_psql('postgres', "SELECT consumed FROM sessionize.run_pipeline('app', 300)"), '300',
	'part 4: run_pipeline() by hand takes a batch');
$node->safe_psql('postgres', q{
	SELECT sessionize.resume_pipeline('app');
	INSERT INTO app_events (user_id, ts, url)
	SELECT n % 100, timestamptz '2024-03-02' + n * interval '1 s', 'w' FROM generate_series(1, 500) n});
ok($node->poll_query_until('postgres', "SELECT ($consumed) = $rows + 4 * 30000 + 1000"),
	'part 4: the worker takes the rest');
is($node->safe_psql('postgres', $agrees), 't', 'part 4: nothing lost, nothing doubled');

$node->stop;
done_testing();
