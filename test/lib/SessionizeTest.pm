# Helpers shared by the TAP tests of pipelines.
package SessionizeTest;

use strict;
use warnings;
use Exporter 'import';

our @EXPORT = qw(pipeline_agrees_query crash_pipeline);

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

1;
