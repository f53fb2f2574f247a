# Pipelines whose source is a table followed through a logical replication
# slot (source_kind => 'logical').  What this proves:
#   1. batch equals stream: events committed into an application table in
#      random-size transactions, some rolled back (whole or to a savepoint),
#      while the worker runs, end up as exactly sessions() over the distinct
#      committed events; rows from before create_pipeline() and UPDATEs and
#      DELETEs are ignored; every row stays in the table;
#   2. one transaction of 100,000 rows is consumed over many batches of
#      sessionize.batch_size, nothing lost or doubled, and the slot does not
#      pass it while it is only partly applied;
#   3. exactly once under crashes: kill -9 of the worker (the postmaster then
#      restarts the cluster) and immediate stops, at random moments and right
#      after a batch commits; the slot never passes what was committed,
#      neither while batches run nor after a restart;
#   4. a batch that fails leaves slot, checkpoint and dedup memory as they were;
#   5. updates_as_events: it needs REPLICA IDENTITY FULL; an UPDATE's new row
#      version is an event, deduplicated by fingerprint, and one whose
#      out-of-line value is not in the WAL is dead-lettered; a DELETE is
#      nothing; an insert-only pipeline leaves UPDATE and DELETE working on a
#      table without a replica identity;
#   6. drop_pipeline() drops the slot and takes the table out of the
#      publications no other logical pipeline of it needs;
#   7. without wal_level = logical, create_pipeline() says so.
# SESSIONIZE_SEED=n generates the same events again (crash moments still vary).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SessionizeTest;
use Time::HiRes qw(usleep);

my $crashes = 22;
my $seed = $ENV{SESSIONIZE_SEED} // int(rand(2**31));
note "seed $seed";
srand($seed);

# synchronous_commit stays on: logical decoding through SQL only sees flushed
# WAL, and a commit must be decodable once it returned.  A small batch size
# makes the worker commit many batches, so that crashes land inside batches,
# between them and inside source transactions taken over several batches.
my $node = PostgreSQL::Test::Cluster->new('logical');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'sessionize'
wal_level = logical
sessionize.naptime = '50ms'
sessionize.batch_size = 200
restart_after_crash = on
});
$node->start;

# The application table, and rows in it before the pipeline exists (users
# 500-509, url 'before'): they are not events.  The id is not part of an
# event's content (fingerprint_exclude), nor is the note that the
# application edits later.
$node->safe_psql('postgres', q{
	CREATE EXTENSION sessionize;
	CREATE TABLE app_events (id bigserial PRIMARY KEY, user_id int, ts timestamptz, url text, note text);
	INSERT INTO app_events (user_id, ts, url)
	SELECT 500 + n % 10, timestamptz '2024-01-01' + n * interval '7 minutes', 'before' FROM generate_series(1, 300) n;
});
my $first_id = $node->safe_psql('postgres', 'SELECT max(id) FROM app_events');

# create_pipeline() in a transaction of its own (psql -c runs one statement).
$node->safe_psql('postgres', q{
	SELECT sessionize.create_pipeline('app', 'app_events', 'user_id', 'ts', '15 minutes',
									  dedup_window => NULL, fingerprint_exclude => '{id,note}',
									  source_kind => 'logical')});
my $slot = $node->safe_psql('postgres', "SELECT sessionize.sessionize_slot_name('app')");
is($node->safe_psql('postgres', "SELECT plugin FROM pg_replication_slots WHERE slot_name = '$slot'"),
	'pgoutput', 'create_pipeline made a pgoutput slot');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_publication_tables WHERE pubname = 'sessionize_pipelines' AND tablename = 'app_events'"),
	'1', 'and put the table in the publication sessionize_pipelines');

# The plan of what the application commits, per part: events of users in
# bursts an hour apart (a burst is one session, 15-minute gap), some bursts
# bridged by events in between that arrive after both (so two sessions merge
# late), 30% of the events delayed by up to two hours, 20% of the rows
# re-deliveries.  Rows are cut into transactions of random size; about 10% are
# rolled back, and about 10% commit after rolling back a savepoint that held
# ghost rows (url 'ghost'): neither may ever be an event.
$node->safe_psql('postgres', qq{
	SELECT setseed($seed / 2147483648.0);
	CREATE TABLE planned (part int, arrival int, txn int, user_id int, ts timestamptz, url text,
						  PRIMARY KEY (part, arrival));
	CREATE TABLE txns (part int, txn int, kind text, PRIMARY KEY (part, txn));
	CREATE TABLE fed (part int PRIMARY KEY, upto int NOT NULL);
	CREATE UNLOGGED TABLE crash_marker (crash int);

	CREATE PROCEDURE plan_part(p int, users int, bursts int, base timestamptz, mean_txn int) LANGUAGE sql AS \$\$
		INSERT INTO planned (part, arrival, txn, user_id, ts, url)
		WITH burst AS (
			SELECT u, b, base + b * interval '1 hour' + (random() * 300)::int * interval '1 second' AS start,
				   2 + (random() * 5)::int AS n, random() < 0.25 AS bridged
			FROM generate_series(0, users - 1) u, generate_series(0, bursts - 1) b),
		in_burst AS (
			-- at most 500 s apart, and a burst spans at most 35 minutes
			SELECT u, b, start + ((k - 1) * 300 + (random() * 200)::int) * interval '1 second' AS ts
			FROM burst, generate_series(1, n) k),
		edges AS (
			SELECT u, b, max(ts) AS ended, lead(min(ts)) OVER (PARTITION BY u ORDER BY b) AS next_start
			FROM in_burst GROUP BY u, b),
		bridge AS (
			-- every 10 minutes from one burst to the next: they become one session
			SELECT e.u, e.ended + j * interval '10 minutes' AS ts, e.next_start
			FROM edges e JOIN burst USING (u, b), generate_series(1, 7) j
			WHERE burst.bridged AND e.ended + j * interval '10 minutes' < e.next_start),
		events AS (
			SELECT u, ts, extract(epoch FROM ts) + CASE WHEN random() < 0.3 THEN random() * 7200 ELSE 0 END AS due
			FROM in_burst
			UNION ALL
			SELECT u, ts, extract(epoch FROM next_start) + 2400 + random() * 3600 FROM bridge),
		distinct_events AS (
			SELECT u, ts, (ARRAY['/', '/search', '/product', '/cart'])[1 + (random() * 3)::int] AS url, due FROM events),
		delivered AS (
			SELECT u, ts, url, due FROM distinct_events
			UNION ALL
			SELECT u, ts, url, due + random() * 3600 FROM distinct_events WHERE random() < 0.25),
		ordered AS (
			SELECT row_number() OVER (ORDER BY due, random()) AS arrival, u, ts, url FROM delivered),
		cut AS (
			SELECT arrival, u, ts, url,
				   CASE WHEN arrival > 1 AND random() < 1.0 / mean_txn THEN 1 ELSE 0 END AS starts
			FROM ordered)
		SELECT p, arrival, 1 + sum(starts) OVER (ORDER BY arrival), u, ts, url FROM cut;
		INSERT INTO txns
		SELECT p, txn, CASE WHEN random() < 0.1 THEN 'abort' WHEN random() < 0.12 THEN 'savepoint' ELSE 'commit' END
		FROM (SELECT DISTINCT txn FROM planned WHERE part = p) t;
		-- the last transaction commits: it shows when everything before was read
		UPDATE txns SET kind = 'commit' WHERE part = p AND txn = (SELECT max(txn) FROM txns WHERE part = p);
		INSERT INTO fed VALUES (p, 0);
	\$\$;

	CALL plan_part(1, 40, 12, '2024-01-01 00:00', 50);
	CALL plan_part(3, 80, 24, '2024-01-02 06:00', 80);
	-- part 2: one transaction of 100,000 rows, 10,000 of them re-deliveries
	INSERT INTO planned (part, arrival, txn, user_id, ts, url)
	WITH base AS (
		SELECT (random() * 199)::int AS u, timestamptz '2024-01-01' + (random() * 172800)::int * interval '1 second' AS ts,
			   (ARRAY['/', '/search', '/product', '/cart'])[1 + (random() * 3)::int] AS url
		FROM generate_series(1, 90000)),
	copies AS (SELECT * FROM base ORDER BY random() LIMIT 10000)
	SELECT 2, row_number() OVER (ORDER BY random()), 1, u, ts, url
	FROM (SELECT * FROM base UNION ALL SELECT * FROM copies) e;
	INSERT INTO txns VALUES (2, 1, 'commit');
	INSERT INTO fed VALUES (2, 0);

	-- Commits the planned transactions of a part up to stop_at, one by one.
	-- fed.upto moves in the transaction it counts, so after a crash the
	-- producer resumes exactly after its last commit.
	CREATE PROCEDURE feed(p int, stop_at int, pause float8) LANGUAGE plpgsql AS \$\$
	DECLARE
		done int;
		how text;
	BEGIN
		LOOP
			SELECT upto INTO done FROM fed WHERE part = p FOR UPDATE;
			EXIT WHEN done >= stop_at;
			SELECT kind INTO how FROM txns WHERE part = p AND txn = done + 1;
			INSERT INTO app_events (user_id, ts, url)
			SELECT user_id, ts, url FROM planned WHERE part = p AND txn = done + 1 ORDER BY arrival;
			IF how = 'abort' THEN
				ROLLBACK;
			ELSIF how = 'savepoint' THEN
				BEGIN
					INSERT INTO app_events (user_id, ts, url)
					SELECT user_id, ts + interval '7 minutes', 'ghost' FROM planned WHERE part = p AND txn = done + 1;
					RAISE EXCEPTION 'undone';
				EXCEPTION WHEN raise_exception THEN
					NULL;
				END;
			END IF;
			UPDATE fed SET upto = done + 1 WHERE part = p;
			COMMIT;
			IF pause > 0 THEN
				PERFORM pg_sleep(pause);
			END IF;
		END LOOP;
	END \$\$;
});
my %txns = map { split /\|/ } split /\n/,
  $node->safe_psql('postgres', 'SELECT part, count(*) FROM txns GROUP BY part');
note $node->safe_psql('postgres', q{
	SELECT format('part %s: %s rows in %s transactions (%s rolled back, %s with a rolled-back savepoint)',
				  part, sum(rows), count(*), count(*) FILTER (WHERE kind = 'abort'), count(*) FILTER (WHERE kind = 'savepoint'))
	FROM txns JOIN (SELECT part, txn, count(*) AS rows FROM planned GROUP BY part, txn) r USING (part, txn)
	GROUP BY part ORDER BY part});

# The events are the rows committed after create_pipeline(): those of
# app_events with a greater id.  There is one producer, so ids follow commit
# order and, within a transaction, the order of the changes: whatever the
# pipeline consumed is the first `consumed` of them.  What it holds must be
# sessions() over the distinct ones, each row counted once.  One statement
# sees one snapshot, so this holds while the worker runs.
my $consistent = pipeline_agrees_query(
	consumed_rows => qq{SELECT user_id, ts, url FROM app_events WHERE id > $first_id
		ORDER BY id LIMIT (SELECT consumed FROM sessionize.pipeline_state WHERE pipeline = 'app')},
	pipeline => 'app',
	gap => '15 minutes');
# Everything committed so far consumed (>=: more would be a bug the checks see).
my $drained = qq{
	SELECT consumed >= (SELECT count(*) FROM app_events WHERE id > $first_id)
	FROM sessionize.pipeline_state WHERE pipeline = 'app'};
my $worker_query = "SELECT worker_pid FROM sessionize.pipeline_status WHERE name = 'app'";
my $state_query = q{SELECT consumed, merged, duplicates, late, dead_lettered, batches
	FROM sessionize.pipeline_state WHERE pipeline = 'app'};

# The checks of a drained pipeline: sessions and counts against the table,
# compared both ways, and the committed rows of the plan all in the table.
sub check_drained
{
	my ($label, @parts) = @_;
	my $parts = join(',', @parts);
	my $expected = qq{
		SELECT user_id, (s).started_at, (s).ended_at, (s).events
		FROM (SELECT user_id, unnest(sessionize.sessions(ts, '15 minutes')) AS s
			  FROM (SELECT DISTINCT user_id, ts, url FROM app_events WHERE id > $first_id) e GROUP BY user_id) x};
	is( $node->safe_psql('postgres', qq{
			SELECT count(*) FROM (
				(SELECT key, session_start, last_event_at, events FROM sessionize.app_sessions EXCEPT $expected)
				UNION ALL
				($expected EXCEPT SELECT key, session_start, last_event_at, events FROM sessionize.app_sessions)) d}),
		'0', "$label: the sessions equal sessions() over the distinct committed events");
	is( $node->safe_psql('postgres', qq{
			SELECT consumed = (SELECT count(*) FROM app_events WHERE id > $first_id)
			   AND merged = (SELECT count(*) FROM (SELECT DISTINCT user_id, ts, url FROM app_events WHERE id > $first_id) e)
			   AND consumed = merged + duplicates + late + dead_lettered
			   AND late = 0 AND dead_lettered = 0
			FROM sessionize.pipeline_state WHERE pipeline = 'app'}),
		't', "$label: every committed row counted once: consumed = merged + duplicates = rows inserted since creation");
	is( $node->safe_psql('postgres', qq{
			WITH committed AS (
				SELECT p.user_id, p.ts, p.url FROM planned p JOIN txns t USING (part, txn) JOIN fed f USING (part)
				WHERE p.part IN ($parts) AND t.kind <> 'abort' AND p.txn <= f.upto),
			in_table AS (SELECT user_id, ts, url FROM app_events WHERE id > $first_id)
			SELECT count(*) FROM ((SELECT * FROM committed EXCEPT ALL SELECT * FROM in_table)
								  UNION ALL
								  (SELECT * FROM in_table EXCEPT ALL SELECT * FROM committed)) d}),
		'0', "$label: the source table holds exactly the committed rows, none of the rolled-back ones");
	is($node->safe_psql('postgres', 'SELECT sum(events) FROM sessionize.app_sessions'),
		$node->safe_psql('postgres', "SELECT merged FROM sessionize.pipeline_state WHERE pipeline = 'app'"),
		"$label: the sessions count each distinct event once");
}

ok($node->poll_query_until('postgres', "SELECT worker_pid IS NOT NULL FROM sessionize.pipeline_status WHERE name = 'app'"),
	'the worker runs');

###############################################################################
# 1. Batch equals stream.  The producer commits part 1 while the worker
# follows.  Near the end the application edits notes of rows and deletes some
# old rows: with updates_as_events off neither is an event.  The transactions
# after that show when the worker has read past them.
my $last1 = $txns{1};
$node->safe_psql('postgres', 'CALL feed(1, ' . ($last1 - 3) . ', 0.005)');
$node->safe_psql('postgres', q{
	UPDATE app_events SET note = 'edited' WHERE id % 7 = 0;
	DELETE FROM app_events WHERE url = 'before' AND id % 2 = 0;
});
$node->safe_psql('postgres', "CALL feed(1, $last1, 0.005)");
ok($node->poll_query_until('postgres', $drained), 'part 1: the worker consumes what was committed');
cmp_ok($node->safe_psql('postgres', "SELECT batches FROM sessionize.pipeline_state WHERE pipeline = 'app'"),
	'>', 1, 'part 1: it did so batch by batch while the producer ran');
check_drained('part 1', 1);
is($node->safe_psql('postgres', 'SELECT count(*) FROM sessionize.app_sessions WHERE key BETWEEN 500 AND 509'),
	'0', 'part 1: rows inserted before create_pipeline() are not events');
is($node->safe_psql('postgres', "SELECT count(*) FROM app_events WHERE url = 'before'"), '150',
	'part 1: the rows from before it stay in the table, less those the application deleted');
is($node->safe_psql('postgres', $consistent), 't', 'part 1: the consumed prefix check agrees');

###############################################################################
# 2. One transaction of 100,000 rows with batch_size 5000.  The pipeline is
# paused while the setting changes, so that its next worker starts with it.
# Halfway through the pipeline is paused again: the checkpoint then lies
# inside the transaction, and the slot must not have passed its commit.  So
# that the pause lands halfway however fast the worker is, a session holds
# the pipeline's row of pipeline_state while the worker's first batch takes
# its 5000 rows: the batch cannot commit before it has written that row.
# The pause, sent meanwhile from a session of its own, waits for that batch;
# the worker's next batch then sees the pipeline paused.
$node->safe_psql('postgres', "SELECT sessionize.pause_pipeline('app')");
ok($node->poll_query_until('postgres', "SELECT worker_pid IS NULL FROM sessionize.pipeline_status WHERE name = 'app'"),
	'part 2: pausing stops the worker');
$node->safe_psql('postgres', "ALTER SYSTEM SET sessionize.batch_size = 5000; SELECT pg_reload_conf();");
ok($node->poll_query_until('postgres', "SELECT current_setting('sessionize.batch_size') = '5000'"),
	'part 2: sessionize.batch_size is 5000');
my ($consumed0, $batches0) = split /\|/,
  $node->safe_psql('postgres', "SELECT consumed, batches FROM sessionize.pipeline_state WHERE pipeline = 'app'");
$node->safe_psql('postgres', 'CALL feed(2, 1, 0)');
my $holder = $node->background_psql('postgres');
my $holder_pid = $holder->query_safe('SELECT pg_backend_pid()');
$holder->query_safe("BEGIN; SELECT FROM sessionize.pipeline_state WHERE pipeline = 'app' FOR UPDATE");
$node->safe_psql('postgres', "SELECT sessionize.resume_pipeline('app')");
ok( $node->poll_query_until('postgres',
		"SELECT $holder_pid = ANY (pg_blocking_pids(worker_pid)) FROM sessionize.pipeline_status WHERE name = 'app'"),
	'part 2: the worker\'s first batch of the transaction waits to record itself');
my $pauser = $node->background_psql('postgres');
$pauser->query_until(qr/pausing/, "\\echo pausing\nSELECT sessionize.pause_pipeline('app');\n");
ok( $node->poll_query_until('postgres', q{
		SELECT EXISTS (SELECT FROM pg_stat_activity
					   WHERE query LIKE '%pause_pipeline%' AND wait_event_type = 'Lock' AND pid <> pg_backend_pid())}),
	'part 2: the pause waits for the batch in hand');
$holder->query_safe('COMMIT');
$holder->quit;
$pauser->quit;
ok($node->poll_query_until('postgres', "SELECT worker_pid IS NULL FROM sessionize.pipeline_status WHERE name = 'app'"),
	'part 2: paused halfway');
my ($half, $inside, $slot_before_it) = split /\|/, $node->safe_psql('postgres', qq{
	SELECT s.consumed - $consumed0, s.checkpoint_commit_lsn > s.slot_advance_to,
		   r.confirmed_flush_lsn < s.checkpoint_commit_lsn
	FROM sessionize.pipeline_state s, pg_replication_slots r
	WHERE s.pipeline = 'app' AND r.slot_name = '$slot'});
note "paused after $half of the 100,000 rows";
is($half, 5000, 'part 2: paused after the batch in hand, one batch of 5000');
is($inside, 't', 'part 2: the checkpoint lies inside the transaction, and the slot may not pass it yet');
is($slot_before_it, 't', 'part 2: the slot has not passed the half-applied transaction');
is($node->safe_psql('postgres', $consistent), 't', 'part 2: the pipeline holds exactly the rows applied so far');
$node->safe_psql('postgres', "SELECT sessionize.resume_pipeline('app')");
ok($node->poll_query_until('postgres', $drained), 'part 2: a new worker goes on from the checkpoint and finishes it');
my $batches2 = $node->safe_psql('postgres', "SELECT batches FROM sessionize.pipeline_state WHERE pipeline = 'app'") - $batches0;
note "the transaction took $batches2 batches";
cmp_ok($batches2, '>=', 100000 / 5000, 'part 2: the transaction took at least 100,000 / 5,000 batches');
is( $node->safe_psql('postgres', "SELECT consumed - $consumed0 FROM sessionize.pipeline_state WHERE pipeline = 'app'"),
	'100000', 'part 2: all 100,000 rows consumed, none twice');
check_drained('part 2', 1, 2);
ok( $node->poll_query_until('postgres', qq{
		SELECT r.confirmed_flush_lsn > s.checkpoint_commit_lsn
		FROM pg_replication_slots r, sessionize.pipeline_state s
		WHERE r.slot_name = '$slot' AND s.pipeline = 'app'}),
	'part 2: once it is wholly applied, the next batch lets the slot pass it');

###############################################################################
# 3. Crashes.  Back to batches of 200, so that source transactions (80 rows
# on average, some several hundred) are often split over batches.  Each round
# the producer commits the next share of part 3 while the worker follows;
# then either the worker gets kill -9 or the server an immediate stop.  Every
# third crash waits for the moment right after a batch committed, before the
# next one advanced the slot; the others watch the slot while batches run.
# After each restart: the slot has not passed what the committed state
# allows, and the pipeline holds exactly the batches committed before the
# crash.
$node->safe_psql('postgres', "ALTER SYSTEM SET sessionize.batch_size = 200; SELECT pg_reload_conf();");
ok($node->poll_query_until('postgres', "SELECT current_setting('sessionize.batch_size') = '200'"),
	'part 3: sessionize.batch_size is 200');
ok($node->poll_query_until('postgres', "SELECT worker_pid IS NOT NULL FROM sessionize.pipeline_status WHERE name = 'app'"),
	'part 3: the worker runs');

# Whether the slot is behind what the committed state allows.
my $timeout = $PostgreSQL::Test::Utils::timeout_default;
my $slot_behind = qq{
	SELECT r.confirmed_flush_lsn < s.slot_advance_to
	FROM pg_replication_slots r, sessionize.pipeline_state s
	WHERE r.slot_name = '$slot' AND s.pipeline = 'app'};

# Watches the slot for a while, in the server, as often as it can: each time
# the slot first, then the committed state in a later snapshot.
# slot_advance_to only grows, so the slot may never be seen past it, not only
# after a crash (where the slot is what was last saved to disk) but while
# batches run.  Returns samples and violations.
sub watch_slot
{
	my ($ms) = @_;
	return $node->safe_psql('postgres', qq{
		DO \$\$
		DECLARE
			flush pg_lsn;
			samples int := 0;
			violations int := 0;
			stop_at timestamptz := clock_timestamp() + $ms * interval '1 millisecond';
		BEGIN
			WHILE clock_timestamp() < stop_at LOOP
				SELECT confirmed_flush_lsn INTO flush FROM pg_replication_slots WHERE slot_name = '$slot';
				samples := samples + 1;
				IF flush > (SELECT slot_advance_to FROM sessionize.pipeline_state WHERE pipeline = 'app') THEN
					violations := violations + 1;
				END IF;
				PERFORM pg_sleep(0.001);
			END LOOP;
			PERFORM set_config('watch.result', samples || '|' || violations, false);
		END \$\$;
		SELECT current_setting('watch.result')});
}

my $last3 = $txns{3};
my $share = int($last3 / ($crashes + 1));
my %seen = (backlog => 0, in_batch => 0, slot_behind => 0, samples => 0, violations => 0);
for my $crash (1 .. $crashes)
{
	my $kill = $crash % 2 == 1;
	my $right_after_commit = $crash % 3 == 0;
	my $kind = ($kill ? 'kill -9 of the worker' : 'immediate stop') . ($right_after_commit ? ', right after a batch' : '');
	my $worker_pid = $node->safe_psql('postgres', $worker_query);
	$node->safe_psql('postgres', "INSERT INTO crash_marker VALUES ($crash)");
	my $watch = $right_after_commit
	  ? start_watching_slot($node, $slot, 'app', "crash $crash: the slot is watched before the producer starts")
	  : undef;

	my ($out, $err) = ('', '');
	my $producer = IPC::Run::start(
		[
			'psql', '-X', '-q', '-d', $node->connstr('postgres'),
			'-c', "CALL feed(3, " . ($crash * $share) . ', 0.01)'
		],
		'>', \$out, '2>', \$err,
		IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));

	# What the worker is doing just before the crash; when waiting for the
	# moment after a commit, nothing more is asked, to crash at once.
	my ($behind, $backlog, $worker_state) = ('', '?', '?');
	if ($right_after_commit)
	{
		$behind = watched_slot_behind($watch) ? 't' : 'f';
	}
	else
	{
		my ($samples, $violations) = split /\|/, watch_slot(int(rand($share * 30)));
		$seen{samples} += $samples;
		$seen{violations} += $violations;
		($backlog, $worker_state, $behind) = split /\|/, $node->safe_psql('postgres', qq{
			SELECT (SELECT count(*) FROM app_events WHERE id > $first_id) - s.consumed,
				   coalesce((SELECT state FROM pg_stat_activity a WHERE a.pid = $worker_pid), 'gone'),
				   ($slot_behind)
			FROM sessionize.pipeline_state s WHERE s.pipeline = 'app'});
		$seen{backlog}++ if $backlog > 0;
		$seen{in_batch}++ if $worker_state eq 'active';
	}
	crash_pipeline($node, $kill, $worker_pid, $producer);
	note "crash $crash ($kind): backlog $backlog, worker $worker_state, slot behind the committed state: $behind";
	$seen{slot_behind}++ if $behind eq 't';

	ok($node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM crash_marker'),
		"crash $crash ($kind): the server went through crash recovery");
	# The slot first, the state after: slot_advance_to only grows, so a
	# later snapshot of it can only make the comparison easier.
	my $flush = $node->safe_psql('postgres',
		"SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '$slot'");
	is( $node->safe_psql('postgres',
			"SELECT slot_advance_to >= '$flush'::pg_lsn FROM sessionize.pipeline_state WHERE pipeline = 'app'"),
		't', "crash $crash: the slot ($flush) has not passed the committed slot_advance_to");
	is($node->safe_psql('postgres', $consistent), 't',
		"crash $crash: the pipeline holds exactly the batches committed before it");
	ok( $node->poll_query_until('postgres',
			"SELECT worker_pid IS NOT NULL AND worker_pid <> $worker_pid FROM sessionize.pipeline_status WHERE name = 'app'"),
		"crash $crash: a new worker runs");
}
note "crashes with a backlog: $seen{backlog}, inside a batch: $seen{in_batch}, "
  . "with the slot behind the last committed batch: $seen{slot_behind}";
note "slot watched $seen{samples} times while batches ran";
is($seen{violations}, 0, 'part 3: while batches ran, the slot was never seen past the committed slot_advance_to');
# The streaming worker keeps up with this producer most of the time; the
# staging-table crash loop of 040_pipeline_crash.pl crashes under a backlog
# nearly every time.
cmp_ok($seen{backlog}, '>=', 2, 'part 3: some crashes came while the worker had a backlog');
cmp_ok($seen{slot_behind}, '>=', $crashes / 4,
	'part 3: many crashes came after a batch committed and before the next advanced the slot');

# The rest without crashes; then the result must be the one without crashes.
$node->safe_psql('postgres', "CALL feed(3, $last3, 0)");
ok($node->poll_query_until('postgres', $drained), 'part 3: the worker consumes everything committed');
is($node->safe_psql('postgres', 'SELECT upto FROM fed WHERE part = 3'), $last3, 'part 3: the producer committed every planned transaction');
check_drained('part 3', 1, 2, 3);
is($node->safe_psql('postgres', $consistent), 't', 'part 3: the consumed prefix check agrees');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM sessionize.app_sessions s
	WHERE s.revision IS DISTINCT FROM (SELECT max(c.revision) FROM sessionize.app_changes c
									   WHERE c.key = s.key AND c.session_start = s.session_start)}),
	'0', 'part 3: no batch is left half done: the last change of each session carries its revision');
is($node->safe_psql('postgres', "SELECT count(*) FROM sessionize.dead_letter"), '0', 'part 3: no dead letters');
is($node->safe_psql('postgres', "SELECT count(*) FROM sessionize.app_late"), '0', 'part 3: no late events');
is($node->safe_psql('postgres', "SELECT count(*) FROM app_events WHERE url = 'ghost'"), '0',
	'part 3: the ghost rows of rolled-back savepoints are not in the table');

###############################################################################
# 4. A failing batch changes nothing.  The worker is stopped, and batches by
# hand with nothing to consume let the slot catch up with the committed
# slot_advance_to (any batch, failed or not, may advance it that far).  An
# idle batch moves slot_advance_to on over WAL it has no use for while the
# slot's restart point lags, until PostgreSQL logs a running-transactions
# record (every 15 s while it writes) and the slot passes it.  Then a trigger
# makes the merge fail: run_pipeline() errors out, and slot, state, sessions
# and dedup memory are as they were.
$node->safe_psql('postgres', "SELECT sessionize.pause_pipeline('app')");
ok($node->poll_query_until('postgres', "SELECT worker_pid IS NULL FROM sessionize.pipeline_status WHERE name = 'app'"),
	'part 4: pausing stops the worker');
my $caught_up = 0;
my $give_up = time() + $timeout;
while (time() < $give_up)
{
	$node->safe_psql('postgres', "SELECT * FROM sessionize.run_pipeline('app')");
	$caught_up = $node->safe_psql('postgres', $slot_behind) eq 'f' ? $caught_up + 1 : 0;
	last if $caught_up == 2;
	usleep(500_000);
}
is($caught_up, 2, 'part 4: idle batches let the slot catch up with the committed state, and it stays there');
$node->safe_psql('postgres', q{
	INSERT INTO planned (part, arrival, txn, user_id, ts, url)
	SELECT 4, n, 1, 7, timestamptz '2024-02-01 10:00' + n * interval '1 minute', '/' FROM generate_series(1, 10) n;
	INSERT INTO txns VALUES (4, 1, 'commit');
	INSERT INTO fed VALUES (4, 0);
	CALL feed(4, 1, 0);
	CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		RAISE EXCEPTION 'sessions refused by a test trigger';
	END $$;
	CREATE TRIGGER refuse BEFORE INSERT ON sessionize.app_stored_sessions FOR EACH ROW EXECUTE FUNCTION refuse();
});
my $everything = qq{
	SELECT r.confirmed_flush_lsn, r.restart_lsn,
		   (SELECT s FROM sessionize.pipeline_state s WHERE s.pipeline = 'app'),
		   (SELECT md5(string_agg(format('%s %s %s %s', key, session_start, events, revision), ',' ORDER BY key, session_start))
			FROM sessionize.app_sessions),
		   (SELECT count(*) FROM sessionize.seen_fingerprints WHERE namespace = 'pipeline:app'),
		   (SELECT count(*) FROM sessionize.app_changes)
	FROM pg_replication_slots r WHERE r.slot_name = '$slot'};
my $before = $node->safe_psql('postgres', $everything);
my ($ret, $stdout, $stderr) = $node->psql('postgres', "SELECT * FROM sessionize.run_pipeline('app')");
isnt($ret, 0, 'part 4: the batch fails');
like($stderr, qr/sessions refused by a test trigger/, 'part 4: with the trigger\'s error');
is($node->safe_psql('postgres', $everything), $before,
	'part 4: slot, pipeline_state, sessions, change log and dedup memory are unchanged');
$node->safe_psql('postgres', 'DROP TRIGGER refuse ON sessionize.app_stored_sessions');
is($node->safe_psql('postgres', "SELECT consumed, merged, duplicates FROM sessionize.run_pipeline('app')"),
	'10|10|0', 'part 4: without the trigger the batch consumes the rows, all new');
is($node->safe_psql('postgres', $slot_behind), 't',
	'part 4: the slot moves only with the next batch, once this one is committed');
is($node->safe_psql('postgres', "SELECT consumed FROM sessionize.run_pipeline('app')"), '0', 'part 4: nothing is left');
is($node->safe_psql('postgres', $slot_behind), 'f', 'part 4: and that next batch advanced the slot');
check_drained('part 4', 1, 2, 3, 4);
$node->safe_psql('postgres', "SELECT sessionize.resume_pipeline('app')");

###############################################################################
# 5. updates_as_events, on another table: the new version of an updated row
# is an event, deduplicated by its content like any other (the id is
# excluded); a DELETE is nothing.  The notes are kept out of line, as every
# long text is.
$node->safe_psql('postgres', q{
	CREATE TABLE profile_events (id bigserial PRIMARY KEY, user_id int, ts timestamptz, note text);
	ALTER TABLE profile_events ALTER note SET STORAGE EXTERNAL;
});
my $create_profiles = q{
	SELECT sessionize.create_pipeline('profiles', 'profile_events', 'user_id', 'ts', '15 minutes',
									  dedup_window => NULL, fingerprint_exclude => '{id}',
									  source_kind => 'logical', updates_as_events => true)};
my ($refused, $refused_out, $refused_error) = $node->psql('postgres', $create_profiles);
like($refused_error, qr/updates_as_events needs REPLICA IDENTITY FULL on "public.profile_events".*HINT:  ALTER TABLE public.profile_events REPLICA IDENTITY FULL/s,
	'part 5: updates_as_events without REPLICA IDENTITY FULL is refused, with the command to run');
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_replication_slots WHERE slot_name = sessionize.sessionize_slot_name('profiles')"),
	'0', 'part 5: and leaves no slot behind');
$node->safe_psql('postgres', 'ALTER TABLE profile_events REPLICA IDENTITY FULL');
$node->safe_psql('postgres', $create_profiles);
my $profiles = "SELECT consumed, merged, duplicates FROM sessionize.pipeline_state WHERE pipeline = 'profiles'";
my $step = sub {
	my ($sql, $consumed, $expected, $label) = @_;
	$node->safe_psql('postgres', $sql);
	ok( $node->poll_query_until('postgres',
			"SELECT consumed >= $consumed FROM sessionize.pipeline_state WHERE pipeline = 'profiles'"),
		"part 5: $label: the worker read it");
	is($node->safe_psql('postgres', $profiles), $expected, "part 5: $label");
};
my $sessions_of = sub {
	$node->safe_psql('postgres',
		"SELECT string_agg(format('%s-%s:%s', to_char(session_start, 'HH24:MI'), to_char(last_event_at, 'HH24:MI'), events), ' ' ORDER BY session_start)"
		  . " FROM sessionize.profiles_sessions WHERE key = $_[0]");
};
$step->("INSERT INTO profile_events (user_id, ts, note) VALUES (1, '2024-03-01 10:00', 'a'), (2, '2024-03-01 10:00', repeat('long note ', 500))",
	2, '2|2|0', 'two inserts are two events');
$step->("UPDATE profile_events SET ts = '2024-03-01 10:05' WHERE user_id = 1", 3, '3|3|0',
	'an UPDATE that moves ts is an event');
is($sessions_of->(1), '10:00-10:05:2', 'part 5: the moved row version joined the session of the first');
$step->("UPDATE profile_events SET note = note WHERE user_id = 1", 4, '4|3|1',
	'an UPDATE that changes nothing is a duplicate');
$step->("UPDATE profile_events SET id = id + 1000 WHERE user_id = 1", 5, '5|3|2',
	'an UPDATE of the excluded id only (a new key) is a duplicate');
$step->("UPDATE profile_events SET note = 'b' WHERE user_id = 1", 6, '6|4|2',
	'an UPDATE that changes the content is an event');
is($sessions_of->(1), '10:00-10:05:3', 'part 5: it counts in the session');
# A DELETE is not an event; the insert after it shows the worker read past it.
$step->("DELETE FROM profile_events WHERE user_id = 1; INSERT INTO profile_events (user_id, ts, note) VALUES (3, '2024-03-01 11:00', 'c')",
	7, '7|5|2', 'a DELETE is nothing');
is($sessions_of->(1), '10:00-10:05:3', 'part 5: the deleted row\'s sessions stay');
# The same as the no-op update above, for a row whose note is stored out of
# line: pgoutput does not send an unchanged TOASTed value.
$step->("UPDATE profile_events SET note = note WHERE user_id = 2", 8, '8|5|3',
	'an UPDATE that changes nothing is a duplicate, also when a column is TOASTed');
is($sessions_of->(2), '10:00-10:00:1', 'part 5: and the session still has one event');
is($node->safe_psql('postgres', "SELECT count(*) FROM sessionize.dead_letter WHERE pipeline = 'profiles'"), '0',
	'part 5: no dead letters');
# Without the old row in the WAL, the unchanged out-of-line note cannot be
# read: the event is dead-lettered with the reason, never guessed.
$node->safe_psql('postgres', 'ALTER TABLE profile_events REPLICA IDENTITY DEFAULT');
$node->safe_psql('postgres', "UPDATE profile_events SET ts = '2024-03-01 10:10' WHERE user_id = 2");
ok( $node->poll_query_until('postgres',
		"SELECT dead_lettered = 1 FROM sessionize.pipeline_state WHERE pipeline = 'profiles'"),
	'part 5: an update whose out-of-line value is not in the WAL is dead-lettered');
is($node->safe_psql('postgres',
		"SELECT error, event ->> 'user_id', event ->> 'note' IS NULL FROM sessionize.dead_letter WHERE pipeline = 'profiles'"),
	'the update leaves out a value stored out of line: the source table needs REPLICA IDENTITY FULL|2|t',
	'part 5: with the rest of the row and the reason');
is($sessions_of->(2), '10:00-10:00:1', 'part 5: and nothing of it reaches the sessions');
$node->safe_psql('postgres', 'ALTER TABLE profile_events REPLICA IDENTITY FULL');
$step->("INSERT INTO profile_events (user_id, ts, note) VALUES (3, '2024-03-01 11:05', 'f')", 10, '10|6|3',
	'the pipeline goes on after the dead letter');

# An insert-only logical pipeline leaves UPDATE and DELETE of its source to
# the application, also on a table without a replica identity.
$node->safe_psql('postgres', 'CREATE TABLE bare_events (user_id int, ts timestamptz)');
$node->safe_psql('postgres', q{
	SELECT sessionize.create_pipeline('bare', 'bare_events', 'user_id', 'ts', '15 minutes', source_kind => 'logical')});
my ($bare_rc, $bare_out, $bare_error) = $node->psql('postgres', q{
	INSERT INTO bare_events VALUES (1, '2024-03-01 10:00');
	UPDATE bare_events SET ts = '2024-03-01 10:01';
	DELETE FROM bare_events});
is("$bare_rc|$bare_error", '0|', 'part 5: UPDATE and DELETE work on the source of an insert-only pipeline without a replica identity');
ok( $node->poll_query_until('postgres',
		"SELECT consumed = 1 AND merged = 1 FROM sessionize.pipeline_state WHERE pipeline = 'bare'"),
	'part 5: and its insert is the one event');
$node->safe_psql('postgres', "SELECT sessionize.drop_pipeline('bare')");

# The rows of a COPY share the LSN of their WAL record: taken seven at a time,
# each is still taken exactly once.
$node->safe_psql('postgres', 'CREATE TABLE copied_events (user_id int, ts timestamptz)');
$node->safe_psql('postgres', q{
	SELECT sessionize.create_pipeline('copied', 'copied_events', 'user_id', 'ts', '15 minutes',
									  dedup_window => NULL, source_kind => 'logical')});
$node->safe_psql('postgres', "SELECT sessionize.pause_pipeline('copied')");
ok($node->poll_query_until('postgres', "SELECT worker_pid IS NULL FROM sessionize.pipeline_status WHERE name = 'copied'"),
	'part 5: the copied pipeline is run by hand');
my $copy_file = $node->basedir . '/copied.tsv';
PostgreSQL::Test::Utils::append_to_file($copy_file,
	join('', map { sprintf("%d\t2024-03-02 10:00:00+00\n", $_) } 1 .. 300));
$node->safe_psql('postgres', "COPY copied_events FROM '$copy_file'");
my ($copied, $copy_batches) = (0, 0);
$give_up = time() + $timeout;
while (time() < $give_up)
{
	my $taken = $node->safe_psql('postgres', "SELECT consumed FROM sessionize.run_pipeline('copied', 7)");
	$copied += $taken;
	$copy_batches++ if $taken > 0;
	last if $copied >= 300;
	usleep(100_000) if $taken == 0;
}
is("$copied|$copy_batches", '300|43', 'part 5: a COPY of 300 rows, taken 7 at a time, is taken exactly once');
is($node->safe_psql('postgres', "SELECT consumed, merged, duplicates FROM sessionize.run_pipeline('copied', 7)"), '0|0|0',
	'part 5: and nothing is left of it');
is($node->safe_psql('postgres', "SELECT count(*), sum(events) FROM sessionize.copied_sessions"), '300|300',
	'part 5: every row is a session of its own');
$node->safe_psql('postgres', "SELECT sessionize.drop_pipeline('copied')");

# A slot is not undone by a rollback: a creation that fails after making it drops it.
$node->safe_psql('postgres', q{
	CREATE FUNCTION no_tables() RETURNS event_trigger LANGUAGE plpgsql AS $$
	BEGIN
		RAISE EXCEPTION 'no new tables today';
	END $$;
	CREATE EVENT TRIGGER no_tables ON ddl_command_start WHEN TAG IN ('CREATE TABLE') EXECUTE FUNCTION no_tables();
});
my ($failed_rc, $failed_out, $failed_error) = $node->psql('postgres', q{
	SELECT sessionize.create_pipeline('failing', 'copied_events', 'user_id', 'ts', '15 minutes', source_kind => 'logical')});
like($failed_error, qr/no new tables today/, 'part 5: a logical pipeline whose tables cannot be made is not created');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM pg_replication_slots WHERE slot_name = sessionize.sessionize_slot_name('failing')"),
	'0', 'part 5: and its slot is dropped');
$node->safe_psql('postgres', 'DROP EVENT TRIGGER no_tables');

###############################################################################
# 6. Observability and drop_pipeline().  A second logical pipeline on
# profile_events shares the table's place in the publication: dropping one
# of the two keeps it there, dropping the other takes it out.
like($node->safe_psql('postgres', "SELECT retained_wal_bytes FROM sessionize.pipeline_status WHERE name = 'app'"),
	qr/^\d+$/, 'part 6: pipeline_status shows the WAL a logical pipeline retains');
# the worker decodes the slot itself: a count would only compete with it
ok( $node->poll_query_until('postgres', q{
		SELECT source_kind = 'logical' AND worker_pid IS NOT NULL AND backlog IS NULL
		FROM sessionize.pipeline_status WHERE name = 'profiles'}),
	'part 6: and, while its worker serves it, no count of its slot');
$node->safe_psql('postgres', q{
	SELECT sessionize.create_pipeline('profiles_copy', 'profile_events', 'user_id', 'ts', '15 minutes',
									  source_kind => 'logical')});
# publication:table, the publication without its sessionize_ prefix
my $published = q{SELECT string_agg(substr(pubname, 12) || ':' || tablename, ',' ORDER BY pubname, tablename)
	FROM pg_publication_tables WHERE pubname LIKE 'sessionize\_%'};
is($node->safe_psql('postgres', $published), 'pipeline_updates:profile_events,pipelines:app_events,pipelines:profile_events',
	'part 6: the source of an updates_as_events pipeline is also in the publication of updates');
my $slots = q{SELECT string_agg(slot_name, ',' ORDER BY slot_name) FROM pg_replication_slots};
my ($slot_profiles, $slot_copy) = split /\|/, $node->safe_psql('postgres',
	"SELECT sessionize.sessionize_slot_name('profiles'), sessionize.sessionize_slot_name('profiles_copy')");
$node->safe_psql('postgres', "INSERT INTO profile_events (user_id, ts, note) VALUES (4, '2024-03-01 12:00', 'd')");
ok( $node->poll_query_until('postgres',
		"SELECT consumed = 1 FROM sessionize.pipeline_state WHERE pipeline = 'profiles_copy'"),
	'part 6: a second logical pipeline on the same table sees only what came after it');
$node->safe_psql('postgres', "SELECT sessionize.drop_pipeline('profiles')");
is($node->safe_psql('postgres', $published), 'pipelines:app_events,pipelines:profile_events',
	'part 6: dropping one of two pipelines of a table keeps the table in the publication the other needs');
is($node->safe_psql('postgres', $slots), join(',', sort($slot, $slot_copy)), 'part 6: and drops only its own slot');
$node->safe_psql('postgres', "INSERT INTO profile_events (user_id, ts, note) VALUES (4, '2024-03-01 12:05', 'e')");
ok( $node->poll_query_until('postgres',
		"SELECT consumed = 2 FROM sessionize.pipeline_state WHERE pipeline = 'profiles_copy'"),
	'part 6: the other pipeline goes on');
# Over a megabyte of WAL that no pipeline needs: the idle pipeline app lets
# its slot pass it, so that its peeks do not decode it again and again.
my $unrelated_end = $node->safe_psql('postgres', q{
	CREATE TABLE unrelated AS SELECT g, repeat('x', 500) AS filler FROM generate_series(1, 5000) g;
	SELECT pg_current_wal_flush_lsn()});
ok( $node->poll_query_until('postgres',
		"SELECT confirmed_flush_lsn >= '$unrelated_end' FROM pg_replication_slots WHERE slot_name = '$slot'"),
	'part 6: an idle logical pipeline lets its slot pass the WAL it has no use for');
$node->safe_psql('postgres', "SELECT sessionize.drop_pipeline('profiles_copy')");
is($node->safe_psql('postgres', $published), 'pipelines:app_events',
	'part 6: dropping the last pipeline of a table takes it out of the publication');
my $rows = $node->safe_psql('postgres', 'SELECT count(*) FROM app_events');
$node->safe_psql('postgres', "SELECT sessionize.drop_pipeline('app')");
is($node->safe_psql('postgres', $published), '', 'part 6: no table is left in the publication');
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_replication_slots"), '0', 'part 6: no slot is left');
is($node->safe_psql('postgres', 'SELECT count(*) FROM app_events'), $rows, 'part 6: the source table keeps its rows');
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'sessionize pipeline'"),
	'part 6: the workers of dropped pipelines stop');
$node->stop;

###############################################################################
# 7. Without wal_level = logical there is no slot to make: create_pipeline()
# says what to change, and leaves nothing behind.
my $replica = PostgreSQL::Test::Cluster->new('replica_wal');
$replica->init;
$replica->append_conf('postgresql.conf', "wal_level = replica\n");
$replica->start;
$replica->safe_psql('postgres', q{
	CREATE EXTENSION sessionize;
	CREATE TABLE app_events (id bigserial PRIMARY KEY, user_id int, ts timestamptz);
});
($ret, $stdout, $stderr) = $replica->psql('postgres', q{
	SELECT sessionize.create_pipeline('app', 'app_events', 'user_id', 'ts', '15 minutes', source_kind => 'logical')});
isnt($ret, 0, 'part 7: create_pipeline() of a logical pipeline fails under wal_level = replica');
like($stderr, qr/ERROR:  a logical pipeline needs wal_level = logical/, 'part 7: with the message that says why');
like($stderr, qr/HINT:  .*wal_level = logical/, 'part 7: and a hint to set wal_level = logical');
is( $replica->safe_psql('postgres',
		"SELECT (SELECT count(*) FROM sessionize.pipelines) + (SELECT count(*) FROM pg_replication_slots)"),
	'0', 'part 7: no pipeline and no slot is left behind');
$replica->stop;

done_testing();
