# Exactly-once under crashes.  While a producer inserts events into a staging
# table, the pipeline worker is killed with SIGKILL (the postmaster then
# restarts the whole cluster through crash recovery) and, in turn, the server
# is stopped in immediate mode and started again: 24 crashes at random moments
# while the worker has a backlog.  After each restart the pipeline's state is
# exactly that of the batches committed before the crash; at the end its
# sessions equal sessions() over the distinct events, which is what a run
# without crashes gives, and every event fed is counted exactly once; so do
# the pipeline's profile's counts and moments.
# SESSIONIZE_SEED=n generates the same events again (crash moments still vary).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SessionizeTest;

my $crashes = 24;
my $seed = $ENV{SESSIONIZE_SEED} // int(rand(2**31));
note "seed $seed";
srand($seed);

# fsync stays on: what survives a crash is the point.  A small batch size makes
# the worker commit many batches, so that crashes land inside batches, between
# them and while the producer inserts.
my $node = PostgreSQL::Test::Cluster->new('crash');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'sessionize'
sessionize.naptime = '50ms'
sessionize.batch_size = 200
restart_after_crash = on
});
$node->start;

# The plan: about 30,000 distinct events of 100 users over a day, plus 20%
# re-deliveries, in a random arrival order.  fed.upto is how far the producer
# got: it moves in the transaction that inserts the rows, so after a crash the
# producer resumes exactly after its last commit.  crash_marker is unlogged:
# crash recovery empties it, which proves that a crash really happened.
$node->safe_psql('postgres', qq{
	CREATE EXTENSION sessionize;
	CREATE TABLE clicks_in (user_id int, ts timestamptz, kind text, price float8);
	SELECT sessionize.create_pipeline('clicks', 'clicks_in', 'user_id', 'ts', '15 minutes',
		measures => 'first(ts) AS first_ts, last(ts) AS last_ts, count(*) FILTER (WHERE user_id % 2 = 0) AS even,
					 sum(extract(second FROM ts)::int) AS seconds, approx_count_distinct(ts) AS distinct_ts,
					 bool_or(extract(second FROM ts) = 0) AS on_the_minute');
	SELECT sessionize.add_profile('clicks', 'p', '{kind}', '{price}');
	SELECT setseed($seed / 2147483648.0);
	CREATE TABLE distinct_events AS
	SELECT DISTINCT (random() * 99)::int AS user_id,
		   timestamptz '2024-01-01' + (random() * 86400)::int * interval '1 second' AS ts
	FROM generate_series(1, 30000);
	-- what the profile counts, a function of (user_id, ts)
	ALTER TABLE distinct_events ADD COLUMN kind text, ADD COLUMN price float8;
	UPDATE distinct_events
	SET kind = (ARRAY['car', 'van', 'bike'])[1 + (extract(epoch FROM ts)::bigint + user_id) % 3],
		price = ((extract(epoch FROM ts)::bigint * 7 + user_id) % 10000) / 100.0;
	CREATE TABLE planned (arrival int PRIMARY KEY, user_id int, ts timestamptz, kind text, price float8);
	INSERT INTO planned
	SELECT row_number() OVER (ORDER BY random()), user_id, ts, kind, price
	FROM (SELECT * FROM distinct_events UNION ALL SELECT * FROM distinct_events WHERE random() < 0.2) e;
	CREATE TABLE fed (upto int NOT NULL);
	INSERT INTO fed VALUES (0);
	CREATE UNLOGGED TABLE crash_marker (crash int);

	-- Feeds the planned rows up to arrival stop_at, a chunk per transaction.
	CREATE PROCEDURE feed(chunk int, pause float8, stop_at int) LANGUAGE plpgsql AS \$\$
	DECLARE
		done int;
	BEGIN
		LOOP
			SELECT upto INTO done FROM fed FOR UPDATE;
			EXIT WHEN done >= stop_at;
			INSERT INTO clicks_in
			SELECT user_id, ts, kind, price FROM planned
			WHERE arrival > done AND arrival <= least(done + chunk, stop_at) ORDER BY arrival;
			UPDATE fed SET upto = least(done + chunk, stop_at);
			COMMIT;
			PERFORM pg_sleep(pause);
		END LOOP;
	END \$\$;
});
my $planned = $node->safe_psql('postgres', 'SELECT count(*) FROM planned');
my $distinct = $node->safe_psql('postgres', 'SELECT count(*) FROM distinct_events');
note "$planned planned rows, $distinct distinct events";

# What the pipeline must hold at any moment: the rows consumed are those fed
# minus those still in the staging table (a batch in flight still shows its
# rows there), and the sessions are sessions() over their distinct events.
# One statement sees one snapshot, so this holds while the worker runs.
my $consistent = pipeline_agrees_query(
	consumed_rows => q{SELECT user_id, ts FROM planned WHERE arrival <= (SELECT upto FROM fed)
		EXCEPT ALL
		SELECT user_id, ts FROM clicks_in},
	pipeline => 'clicks',
	gap => '15 minutes');
my $worker_query = "SELECT worker_pid FROM sessionize.pipeline_status WHERE name = 'clicks'";

# The profile holds the counts of the distinct events consumed, per key and
# UTC day, and their prices' moments (those of avg() and var_pop(), within
# 1e-9); $events is a query of the distinct events.
sub profile_agrees_query
{
	my ($events) = @_;
	return qq{
	WITH events AS ($events),
	counts AS (SELECT user_id AS key, (ts AT TIME ZONE 'UTC')::date AS day, 'kind' AS dimension, kind AS value,
					  count(*) AS count
			   FROM events GROUP BY 1, 2, 3, 4),
	moments AS (SELECT user_id AS key, (ts AT TIME ZONE 'UTC')::date AS day, 'price' AS dimension, count(*) AS n,
					   avg(price) AS mean, var_pop(price) AS variance, min(price) AS min, max(price) AS max
				FROM events GROUP BY 1, 2, 3)
	SELECT NOT EXISTS ((TABLE counts EXCEPT ALL SELECT * FROM sessionize.clicks_profile_p)
					   UNION ALL (SELECT * FROM sessionize.clicks_profile_p EXCEPT ALL TABLE counts))
		   AND NOT EXISTS (SELECT FROM moments e FULL JOIN sessionize.clicks_profile_p_numeric a USING (key, day, dimension)
						   WHERE (a.n, a.min, a.max) IS DISTINCT FROM (e.n, e.min, e.max)
							  OR NOT abs(a.mean - e.mean) <= 1e-9 * greatest(abs(e.mean), 1)
							  OR NOT abs(a.variance - e.variance) <= 1e-9 * greatest(abs(e.variance), 1))};
}
my $profile_consistent = profile_agrees_query(q{
	SELECT DISTINCT * FROM (SELECT user_id, ts, kind, price FROM planned WHERE arrival <= (SELECT upto FROM fed)
							EXCEPT ALL
							SELECT user_id, ts, kind, price FROM clicks_in) c});

ok($node->poll_query_until('postgres', "SELECT worker_pid IS NOT NULL FROM sessionize.pipeline_status WHERE name = 'clicks'"),
	'the worker runs');

# Each round the producer feeds the next share of the plan in small chunks at
# a random rate, so the worker keeps finding a backlog; the crash comes once
# the producer has fed a random part of its share, at least a chunk and no
# more than three quarters: while it still feeds, whatever the speed of the
# machine.
my $share = int($planned / ($crashes + 1));
my %busy = (backlog => 0, in_batch => 0);
for my $crash (1 .. $crashes)
{
	my $kill = $crash % 2 == 1;
	my $kind = $kill ? 'kill -9 of the worker' : 'immediate stop';
	my $worker_pid = $node->safe_psql('postgres', $worker_query);
	$node->safe_psql('postgres', "INSERT INTO crash_marker VALUES ($crash)");

	my $chunk = 50 + int(rand(101));
	my $stop_at = $crash * $share;
	my $fed = $node->safe_psql('postgres', 'SELECT upto FROM fed');
	my $last_target = $stop_at - int($share / 4);
	my $crash_at = $fed + $chunk;
	$crash_at += int(rand($last_target - $crash_at)) if $last_target > $crash_at;
	$crash_at = $stop_at if $crash_at > $stop_at;
	my ($out, $err) = ('', '');
	my $producer = IPC::Run::start(
		[
			'psql', '-X', '-q', '-d', $node->connstr('postgres'),
			'-c', "CALL feed($chunk, 0.01, $stop_at)"
		],
		'>', \$out, '2>', \$err,
		IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
	$node->safe_psql('postgres', qq{
		DO \$\$
		DECLARE
			give_up timestamptz := clock_timestamp() + $PostgreSQL::Test::Utils::timeout_default * interval '1 second';
		BEGIN
			WHILE (SELECT upto FROM fed) < $crash_at LOOP
				IF clock_timestamp() > give_up THEN
					RAISE EXCEPTION 'the producer did not feed up to arrival $crash_at';
				END IF;
				PERFORM pg_sleep(0.002);
			END LOOP;
		END \$\$});

	# What the worker is doing just before the crash.
	my ($backlog, $worker_state) = split /\|/, $node->safe_psql('postgres', qq{
		SELECT backlog, coalesce((SELECT state FROM pg_stat_activity a WHERE a.pid = worker_pid), 'gone')
		FROM sessionize.pipeline_status WHERE name = 'clicks'});
	crash_pipeline($node, $kill, $worker_pid, $producer);
	note "crash $crash ($kind): backlog $backlog, worker $worker_state";
	$busy{backlog}++ if $backlog > 0;
	$busy{in_batch}++ if $worker_state eq 'active';

	ok($node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM crash_marker'),
		"crash $crash ($kind): the server went through crash recovery");
	ok($node->poll_query_until('postgres',
			"SELECT worker_pid IS NOT NULL AND worker_pid <> $worker_pid FROM sessionize.pipeline_status WHERE name = 'clicks'"),
		"crash $crash: a new worker runs");
	is($node->safe_psql('postgres', $consistent), 't',
		"crash $crash: the pipeline holds exactly the batches committed before it");
	is($node->safe_psql('postgres', $profile_consistent), 't',
		"crash $crash: the profile holds exactly the batches committed before it");
}
note "crashes with a backlog: $busy{backlog}, inside a batch: $busy{in_batch}";
cmp_ok($busy{backlog}, '>=', $crashes / 2, 'most crashes came while the worker had a backlog');

# Feed the rest without crashes and let the worker drain the staging table.
$node->safe_psql('postgres', "CALL feed(1000, 0, $planned)");
ok($node->poll_query_until('postgres', "SELECT backlog = 0 FROM sessionize.pipeline_status WHERE name = 'clicks'"),
	'the worker drains the staging table');

my $expected = q{
	SELECT user_id, (s).started_at, (s).ended_at, (s).events
	FROM (SELECT user_id, unnest(sessionize.sessions(ts, '15 minutes')) AS s FROM distinct_events GROUP BY user_id) x};
is( $node->safe_psql('postgres', qq{
		SELECT count(*) FROM (
			(SELECT key, session_start, last_event_at, events FROM sessionize.clicks_sessions EXCEPT $expected)
			UNION ALL
			($expected EXCEPT SELECT key, session_start, last_event_at, events FROM sessionize.clicks_sessions)) d}),
	'0', 'the sessions equal sessions() over the distinct events, as without crashes');
my $measures_expected = q{
	SELECT user_id, min(ts), sessionize.first(ts, ts), sessionize.last(ts, ts),
		   count(*) FILTER (WHERE user_id % 2 = 0), sum(extract(second FROM ts)::int),
		   sessionize.approx_count_distinct(ts), bool_or(extract(second FROM ts) = 0)
	FROM (SELECT *, sessionize.session_id(ts, '15 minutes') OVER (PARTITION BY user_id ORDER BY ts) AS session
		  FROM distinct_events) e
	GROUP BY user_id, session};
my $measures_actual = q{
	SELECT key, session_start, first_ts, last_ts, even, seconds, distinct_ts, on_the_minute FROM sessionize.clicks_sessions};
is( $node->safe_psql('postgres', qq{
		SELECT count(*) FROM (($measures_actual EXCEPT $measures_expected)
							  UNION ALL ($measures_expected EXCEPT $measures_actual)) d}),
	'0', 'the session measures equal the batch query over the distinct events, as without crashes');
is($node->safe_psql('postgres', profile_agrees_query('SELECT * FROM distinct_events')), 't',
	'the profile equals a GROUP BY over the distinct events, as without crashes');
is($node->safe_psql('postgres', 'SELECT upto FROM fed'), $planned, 'the producer fed every planned row');
is( $node->safe_psql('postgres',
		"SELECT consumed, merged, duplicates, late, dead_lettered FROM sessionize.pipeline_state WHERE pipeline = 'clicks'"),
	join('|', $planned, $distinct, $planned - $distinct, 0, 0),
	'every row fed was consumed once: the distinct events merged, the re-deliveries counted as duplicates');
is($node->safe_psql('postgres', 'SELECT sum(events) FROM sessionize.clicks_sessions'), $distinct,
	'the sessions count each distinct event once');
is($node->safe_psql('postgres', 'SELECT count(*) FROM clicks_in'), '0', 'no row is left in the staging table');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM sessionize.clicks_sessions s
	WHERE s.revision IS DISTINCT FROM (SELECT max(c.revision) FROM sessionize.clicks_changes c
									   WHERE c.key = s.key AND c.session_start = s.session_start)}),
	'0', 'no batch is left half done: the last change of each session carries its revision');
is($node->safe_psql('postgres', 'SELECT count(*) FROM sessionize.dead_letter'), '0', 'the dead-letter table is empty');
is($node->safe_psql('postgres', 'SELECT count(*) FROM sessionize.clicks_late'), '0', 'the late table is empty');
like($node->safe_psql('postgres', $worker_query), qr/^\d+$/, 'the worker is running');

$node->stop;
done_testing();
