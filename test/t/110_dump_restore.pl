# pg_dump of a database with pipelines, restored into a fresh cluster, gives
# working pipelines: their sessions, late events, dead letters, dedup memory
# and state come back; a staging pipeline goes on where it stopped (a
# re-delivery of an event taken before the dump is still a duplicate), and
# a logical pipeline gets a new slot and says from where it goes on.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

my $config = q{
shared_preload_libraries = 'sessionize'
sessionize.naptime = '100ms'
max_worker_processes = 16
};
my $old = PostgreSQL::Test::Cluster->new('old');
$old->init(allows_streaming => 'logical');
$old->append_conf('postgresql.conf', $config);
$old->start;
my $new = PostgreSQL::Test::Cluster->new('new');
$new->init(allows_streaming => 'logical');
$new->append_conf('postgresql.conf', $config);
$new->start;

$old->safe_psql('postgres', q{
	CREATE EXTENSION sessionize;
	CREATE TABLE clicks_in (id bigserial, user_id int, ts timestamptz, url text);
	SELECT sessionize.create_pipeline('clicks', 'clicks_in', 'user_id', 'ts', '30 minutes',
		allowed_lateness => '1 hour', fingerprint_exclude => '{id}',
		measures => 'first(url) AS landing_page, count(*) AS clicks');
	CREATE TABLE app_events (user_id int, ts timestamptz, url text);
	SELECT sessionize.create_pipeline('app', 'app_events', 'user_id', 'ts', '30 minutes', source_kind => 'logical');
	INSERT INTO clicks_in (user_id, ts, url)
	SELECT n % 40, timestamptz '2024-01-01' + n * interval '20 s', 'u' || n % 3 FROM generate_series(1, 3000) n;
	INSERT INTO app_events SELECT n % 40, timestamptz '2024-01-01' + n * interval '20 s', 'a' FROM generate_series(1, 3000) n;
});
ok($old->poll_query_until('postgres', q{
	SELECT string_agg(name || '=' || consumed, ' ' ORDER BY name) = 'app=3000 clicks=3000' FROM sessionize.pipeline_status}),
	'the old cluster takes every event');
# a late event, a dead letter, a re-delivery
$old->safe_psql('postgres', q{
	INSERT INTO clicks_in (user_id, ts, url) VALUES (1, '2023-12-31', 'late'), (NULL, '2024-01-01', 'no key'),
		(5, timestamptz '2024-01-01' + 5 * interval '20 s', 'u2')});
ok($old->poll_query_until('postgres', q{
	SELECT late = 1 AND dead_lettered = 1 AND duplicates = 1 FROM sessionize.pipeline_status WHERE name = 'clicks'}),
	'with a late event, a dead letter and a duplicate');

my $dump = $old->basedir . '/pipelines.dump';
# As README says: without the publications (CREATE EXTENSION makes them),
# restored in one transaction, so that no worker runs a pipeline half
# restored.
$old->command_ok(['pg_dump', '-Fc', '--no-publications', '-f', $dump, '-d', $old->connstr('postgres')],
	'pg_dump --no-publications dumps the database');
$new->command_ok(['pg_restore', '--single-transaction', '--exit-on-error', '-d', $new->connstr('postgres'), $dump],
	'pg_restore --single-transaction restores it into a fresh cluster without an error');

my $everything = q{
	SELECT (SELECT string_agg(format('%s %s %s %s %s %s', key, session_start, last_event_at, events, landing_page, clicks), ',' ORDER BY key, session_start)
			FROM sessionize.clicks_sessions),
		   (SELECT string_agg(format('%s %s', key, session_start), ',' ORDER BY key, session_start) FROM sessionize.app_sessions),
		   (SELECT count(*) FROM sessionize.clicks_late),
		   (SELECT string_agg(error, ',') FROM sessionize.pipeline_dead_letters),
		   (SELECT string_agg(format('%s %s %s %s %s %s', name, consumed, merged, duplicates, late, dead_lettered), ',' ORDER BY name)
			FROM sessionize.pipeline_status)};
is($new->safe_psql('postgres', $everything), $old->safe_psql('postgres', $everything),
	'the restored sessions, measures, late events, dead letters and counters equal the old ones');

# The new cluster's worker makes the logical pipeline a new slot and says so.
ok($new->poll_query_until('postgres', q{
	SELECT last_error LIKE 'a new replication slot takes the changes committed from %' FROM sessionize.pipeline_status WHERE name = 'app'}),
	'the logical pipeline gets a new slot and says from which point it goes on');

# The same events on both sides: a re-delivery of an event taken before the
# dump, a new one that extends a session, and a new change of the logical
# source.  Both clusters must end the same.
for my $node ($old, $new)
{
	$node->safe_psql('postgres', q{
		INSERT INTO clicks_in (user_id, ts, url) VALUES (7, timestamptz '2024-01-01' + 7 * interval '20 s', 'u1'),
			(7, timestamptz '2024-01-01' + 3001 * interval '20 s', 'next');
		INSERT INTO app_events VALUES (7, timestamptz '2024-01-01' + 3001 * interval '20 s', 'a')});
	ok($node->poll_query_until('postgres', q{
		SELECT string_agg(name || '=' || consumed, ' ' ORDER BY name) = 'app=3001 clicks=3005' FROM sessionize.pipeline_status}),
		$node->name . ': the pipelines take the new events');
}
is($new->safe_psql('postgres', $everything), $old->safe_psql('postgres', $everything),
	'the restored pipelines go on as the old ones do: the re-delivery is a duplicate on both');

$old->stop;
$new->stop;
done_testing();
