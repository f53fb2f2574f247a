# Helpers shared by the TAP tests of pipelines.
package SessionizeTest;

use strict;
use warnings;
use Exporter 'import';

our @EXPORT = qw(pipeline_agrees_query crash_pipeline start_watching_slot watched_slot_behind);

# A query that is true when the sessions of pipeline $pipeline equal
# sessions() with gap $gap over the distinct (user_id, ts[, more]) events of
# $consumed_rows (a query returning the consumed rows), and its counters
# account for every consumed row with no late or dead-lettered event.  One
# statement sees one snapshot, so it holds while the worker runs.
sub pipeline_agrees_query
{
	my (%args) = @_;
	my ($consumed_rows, $pipeline, $gap) = @args{qw(consumed_rows pipeline gap)};
	return qq{
	WITH consumed_rows AS ($consumed_rows),
	seen AS (SELECT DISTINCT * FROM consumed_rows),
	expected AS (
		SELECT user_id, (s).started_at, (s).ended_at, (s).events
		FROM (SELECT user_id, unnest(sessionize.sessions(ts, '$gap')) AS s FROM seen GROUP BY user_id) x),
	actual AS (SELECT key, session_start, last_event_at, events FROM sessionize.${pipeline}_sessions)
	SELECT NOT EXISTS ((SELECT * FROM actual EXCEPT SELECT * FROM expected)
					   UNION ALL
					   (SELECT * FROM expected EXCEPT SELECT * FROM actual))
		   AND st.consumed = (SELECT count(*) FROM consumed_rows)
		   AND st.merged = (SELECT count(*) FROM seen)
		   AND st.duplicates = st.consumed - st.merged
		   AND st.late = 0 AND st.dead_lettered = 0
	FROM sessionize.pipeline_state st WHERE st.pipeline = '$pipeline'};
}

# Crashes $node under a running pipeline: SIGKILL to the worker $worker_pid
# ($kill true: the postmaster then restarts every backend) or an immediate
# stop and a start.  The producer $producer (an IPC::Run harness) is reaped
# while the server is down.
sub crash_pipeline
{
	my ($node, $kill, $worker_pid, $producer) = @_;
	if ($kill)
	{
		kill('KILL', $worker_pid) or die "could not kill worker $worker_pid: $!";
	}
	else
	{
		$node->stop('immediate');
	}
	$producer->finish;
	$node->start unless $kill;
}

# Starts to watch, in a session of its own and in the server, for a batch of
# pipeline $pipeline to commit a slot_advance_to that its replication slot
# $slot has not reached yet (the next batch advances it), for at most
# timeout_default.  Started before events arrive, it cannot miss the batches
# that take them.  Passes test $name once the watch runs; returns the watch
# for watched_slot_behind().
sub start_watching_slot
{
	my ($node, $slot, $pipeline, $name) = @_;
	my $timeout = $PostgreSQL::Test::Utils::timeout_default;
	my $watch = $node->background_psql('postgres', timeout => 2 * $timeout);
	$watch->query_safe("SET application_name = 'watch_slot_behind'");
	# psql has the whole watch once it prints the line before it (on stderr,
	# which it does not buffer); the watch may end at once, when the slot is
	# already behind
	$watch->{stdin} .= qq{\\warn watching
	DO \$\$
	DECLARE
		give_up timestamptz := clock_timestamp() + $timeout * interval '1 second';
	BEGIN
		PERFORM set_config('wait.behind', 'f', false);
		WHILE clock_timestamp() < give_up LOOP
			IF (SELECT r.confirmed_flush_lsn < s.slot_advance_to
				FROM pg_replication_slots r, sessionize.pipeline_state s
				WHERE r.slot_name = '$slot' AND s.pipeline = '$pipeline') THEN
				PERFORM set_config('wait.behind', 't', false);
				RETURN;
			END IF;
			PERFORM pg_sleep(0.001);
		END LOOP;
	END \$\$;
	SELECT current_setting('wait.behind');
};
	$watch->{run}->pump until $watch->{stderr} =~ /watching/ || $watch->{timeout}->is_expired;
	die 'the slot watch did not start' unless $watch->{stderr} =~ /watching/;
	Test::More::ok(
		$node->poll_query_until('postgres', q{
			SELECT EXISTS (SELECT FROM pg_stat_activity WHERE application_name = 'watch_slot_behind'
						   AND (state = 'active' OR query LIKE 'SELECT current_setting(%'))}),
		$name);
	return $watch;
}

# Waits for the answer of a watch start_watching_slot() began and ends it:
# true when it saw the slot behind the committed state.
sub watched_slot_behind
{
	my ($watch) = @_;
	my ($answer) = $watch->query_until(qr/^[tf]$/m, '') =~ /^([tf])$/m;
	$watch->quit;
	return defined($answer) && $answer eq 't';
}

1;
