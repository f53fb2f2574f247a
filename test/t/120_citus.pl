# Scaling out with Citus: a coordinator and two workers, 1M events in a table
# distributed by user_id, and the same events in a local table of the
# coordinator.  Every query must give the local table's result: grouped or
# partitioned by the distribution column it runs on the workers; sessions()
# and session_set() grouped by another column are combined partially on the
# workers (their state is a session_set, which Citus ships as text).  The
# nodes run in different time zones, and the client in a third.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $pg_config = $ENV{PG_CONFIG} // 'pg_config';
my $pkglibdir = `$pg_config --pkglibdir`;
chomp $pkglibdir;
if (!-f "$pkglibdir/citus.so")
{
	plan skip_all => "Citus is not installed in $pkglibdir (scripts/citus.sh builds it; make test runs it)";
}

my %zone = (coordinator => 'UTC', worker1 => 'America/New_York', worker2 => 'Asia/Kolkata');
my %nodes;
for my $name ('coordinator', 'worker1', 'worker2')
{
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'citus,sessionize'
max_worker_processes = 16
timezone = '$zone{$name}'
max_parallel_workers_per_gather = 0
});
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION citus');
	$nodes{$name} = $node;
}
my $coordinator = $nodes{coordinator};
$coordinator->safe_psql('postgres', sprintf(q{
	SELECT citus_set_coordinator_host('%s', %d);
	SELECT citus_add_node('%s', %d);
	SELECT citus_add_node('%s', %d);
	CREATE EXTENSION sessionize;},
	$coordinator->host, $coordinator->port,
	$nodes{worker1}->host, $nodes{worker1}->port,
	$nodes{worker2}->host, $nodes{worker2}->port));
for my $worker ('worker1', 'worker2')
{
	is($nodes{$worker}->safe_psql('postgres',
		"SELECT extversion FROM pg_extension WHERE extname = 'sessionize'"),
		$coordinator->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'sessionize'"),
		"CREATE EXTENSION sessionize on the coordinator reaches $worker");
}

# 1M events of 20k users over three days, on 5000 pages; the same rows in a
# local table and in one distributed by user_id.
$coordinator->safe_psql('postgres', q{
	SELECT setseed(0.12);
	CREATE TABLE local_events AS
	SELECT (random() * 19999)::bigint + 1 AS user_id,
		   (random() * 4999)::int + 1 AS page_id,
		   timestamptz '2024-05-01' + random() * interval '3 days' AS ts,
		   (ARRAY['view', 'cart', 'checkout'])[1 + (random() * random() * 3)::int % 3] AS kind
	FROM generate_series(1, 1000000);
	CREATE TABLE events (user_id bigint, page_id int, ts timestamptz, kind text);
	SELECT create_distributed_table('events', 'user_id');
	INSERT INTO events SELECT * FROM local_events;
	ANALYZE local_events;
	ANALYZE events;
});
is($coordinator->safe_psql('postgres', q{
	SELECT count(*) FILTER (WHERE groupid > 0) FROM pg_dist_node}), '2', 'two workers');
is($coordinator->safe_psql('postgres', q{
	SELECT count(DISTINCT nodeport) FROM citus_shards WHERE table_name = 'events'::regclass}),
	'2', 'the events are spread over both workers');

# Runs $query over the distributed table and over the local one, in a
# session of yet another time zone, and compares whole results.
sub same_as_local
{
	my ($query, $what) = @_;
	(my $local = $query) =~ s/\bevents\b/local_events/g;
	my $differences = $coordinator->safe_psql('postgres', qq{
		SET TimeZone = 'Asia/Tokyo';
		CREATE TEMP TABLE distributed_result AS $query;
		CREATE TEMP TABLE local_result AS $local;
		SELECT (SELECT count(*) FROM local_result) || ' rows, ' ||
			   ((SELECT count(*) FROM (SELECT * FROM distributed_result EXCEPT ALL SELECT * FROM local_result) d) +
				(SELECT count(*) FROM (SELECT * FROM local_result EXCEPT ALL SELECT * FROM distributed_result) d))
			   || ' differences'});
	like($differences, qr/^[1-9][0-9]* rows, 0 differences$/, "$what equals the local table's ($differences)");
}

sub explain_verbose
{
	my ($query) = @_;
	return $coordinator->safe_psql('postgres', "EXPLAIN (VERBOSE, COSTS OFF) $query");
}

# Grouped by the distribution column: the whole aggregate runs on the workers.
my $by_user = q{SELECT user_id, sessionize.session_set(ts, '30 minutes')::text AS s FROM events GROUP BY user_id};
same_as_local($by_user, 'session_set() by user_id');
my $plan = explain_verbose($by_user);
like($plan, qr/Task Count: \d+/, 'session_set() by user_id is a distributed plan');
like($plan, qr/Query: SELECT .*sessionize\.session_set\(.*GROUP BY .*user_id/,
	'session_set() by user_id runs on the workers');
unlike($plan, qr/worker_partial_agg|coord_combine_agg/, 'and needs no combining on the coordinator');

same_as_local(q{
	SELECT g.user_id, r.* FROM (SELECT user_id, sessionize.session_set(ts, '30 minutes') AS s
								 FROM events GROUP BY user_id) g,
		   sessionize.session_rows(g.s) r},
	'one row per session by user_id');
same_as_local(q{
	SELECT user_id, sessionize.sessions(ts, '30 minutes', '2 hours') AS s FROM events GROUP BY user_id},
	'sessions() with max_duration by user_id');

# Grouped by another column: partial states on the workers, combined on the
# coordinator.
my $by_page = q{SELECT page_id, sessionize.session_set(ts, '30 minutes')::text AS s FROM events GROUP BY page_id};
same_as_local($by_page, 'session_set() by page_id');
$plan = explain_verbose($by_page);
like($plan, qr/Query: SELECT .*worker_partial_agg\(.*session_set/,
	'session_set() by page_id is aggregated partially on the workers');
like($plan, qr/coord_combine_agg/, 'and combined on the coordinator');
my $sessions_by_page = q{SELECT page_id, sessionize.sessions(ts, '30 minutes') AS s FROM events GROUP BY page_id};
same_as_local($sessions_by_page, 'sessions() by page_id');
like(explain_verbose($sessions_by_page), qr/Query: SELECT .*worker_partial_agg\(/,
	'sessions() by page_id is aggregated partially on the workers');
same_as_local(q{SELECT sessionize.session_set(ts, '1 minute')::text AS s FROM events},
	'session_set() over the whole table');

# Per-day sets kept in a distributed table merge into the sets of all events.
$coordinator->safe_psql('postgres', q{
	CREATE TABLE daily_sets (user_id bigint, day date, s sessionize.session_set);
	SELECT create_distributed_table('daily_sets', 'user_id', colocate_with => 'events');
	INSERT INTO daily_sets
	SELECT user_id, (ts AT TIME ZONE 'UTC')::date, sessionize.session_set(ts, '30 minutes')
	FROM events GROUP BY user_id, (ts AT TIME ZONE 'UTC')::date;
	CREATE TABLE local_daily_sets AS SELECT * FROM daily_sets;
});
is($coordinator->safe_psql('postgres', q{
	CREATE TEMP TABLE merged AS SELECT user_id, sessionize.merge(s)::text FROM daily_sets GROUP BY user_id;
	CREATE TEMP TABLE whole AS
	SELECT user_id, sessionize.session_set(ts, '30 minutes')::text FROM local_events GROUP BY user_id;
	SELECT (SELECT count(*) FROM merged) || ' users, ' ||
		   ((SELECT count(*) FROM (SELECT * FROM merged EXCEPT ALL SELECT * FROM whole) d) +
			(SELECT count(*) FROM (SELECT * FROM whole EXCEPT ALL SELECT * FROM merged) d)) || ' differences'}),
	'20000 users, 0 differences', 'merge() of per-day sets on the workers equals session_set() of all events');
like(explain_verbose(q{SELECT sessionize.merge(s) FROM daily_sets}), qr/worker_partial_agg\(/,
	'merge() over the whole table is aggregated partially on the workers');
is($coordinator->safe_psql('postgres', q{
	SELECT count(*) FROM (
		SELECT day, sessionize.merge(s)::text FROM daily_sets GROUP BY day
		EXCEPT ALL
		SELECT day, sessionize.merge(s)::text FROM local_daily_sets GROUP BY day) d}),
	'0', 'merge() by day, combined from the workers, equals the local merge');

# session_id() partitioned by the distribution column runs on the workers.
my $labels = q{SELECT user_id, ts, sessionize.session_id(ts, '30 minutes') OVER (PARTITION BY user_id ORDER BY ts) AS sid,
					  sessionize.session_start(ts, '30 minutes') OVER (PARTITION BY user_id ORDER BY ts) AS started
			   FROM events};
same_as_local($labels, 'session_id() and session_start() by user_id');
like(explain_verbose($labels), qr/Query: SELECT .*sessionize\.session_id\(.*OVER/,
	'session_id() by user_id runs on the workers');

# Funnels and retention: by user_id on the workers; by another column Citus
# gathers the rows (their state is internal), with the same result.
my $funnels = q{
	SELECT user_id,
		   sessionize.window_funnel('1 hour', ts, kind = 'view', kind = 'cart', kind = 'checkout') AS depth,
		   sessionize.retention((ts AT TIME ZONE 'UTC')::date = '2024-05-01',
								(ts AT TIME ZONE 'UTC')::date = '2024-05-02',
								(ts AT TIME ZONE 'UTC')::date = '2024-05-03')::text AS retained
	FROM events GROUP BY user_id};
same_as_local($funnels, 'window_funnel() and retention() by user_id');
like(explain_verbose($funnels), qr/Query: SELECT .*sessionize\.window_funnel\(.*GROUP BY .*user_id/,
	'window_funnel() by user_id runs on the workers');
same_as_local(q{
	SELECT page_id, sessionize.window_funnel('1 hour', ts, kind = 'view', kind = 'cart') AS depth
	FROM events GROUP BY page_id}, 'window_funnel() by page_id');

# Fingerprints of rows computed on the shards, whose nodes run in other time
# zones, equal those of the local table.
same_as_local(q{SELECT sessionize.fingerprint(e) AS f FROM events e WHERE user_id % 10 = 0},
	'fingerprint() of rows on the shards');
like(explain_verbose(q{SELECT sessionize.fingerprint(e) FROM events e}), qr/Query: SELECT .*fingerprint/,
	'fingerprint() runs on the workers');

$_->stop for values %nodes;
done_testing();
