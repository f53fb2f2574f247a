# Every database: one launcher serves the pipelines of every database where
# the extension is installed, each through a scheduler of its own; pipelines
# of the same name in two databases are two pipelines; dropping the
# extension in one database stops only its workers; a database that gets
# the extension later is served; sessionize.database restricts the launcher.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('databases');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'sessionize'
sessionize.naptime = '100ms'
max_worker_processes = 20
});
$node->start;

my $setup = q{
	CREATE EXTENSION sessionize;
	CREATE TABLE clicks_in (user_id int, ts timestamptz);
	SELECT sessionize.create_pipeline('clicks', 'clicks_in', 'user_id', 'ts', '30 minutes');
};
for my $database ('shop', 'blog', 'plain')
{
	$node->safe_psql('postgres', "CREATE DATABASE $database");
}
$node->safe_psql('shop', $setup);
$node->safe_psql('blog', $setup);
$node->safe_psql('shop', "INSERT INTO clicks_in SELECT g % 10, timestamptz '2024-01-01' + g * interval '1 minute' FROM generate_series(1, 300) g");
$node->safe_psql('blog', "INSERT INTO clicks_in SELECT g % 7, timestamptz '2024-01-01' + g * interval '1 minute' FROM generate_series(1, 200) g");

for my $database ('shop', 'blog')
{
	ok($node->poll_query_until($database, "SELECT backlog = 0 AND consumed > 0 FROM sessionize.pipeline_status WHERE name = 'clicks'"),
		"the pipeline of database $database runs");
	is($node->safe_psql($database, q{
		SELECT a.datname FROM sessionize.pipeline_status s JOIN pg_stat_activity a ON a.pid = s.worker_pid
		WHERE s.name = 'clicks'}), $database, "its status shows the worker of its own database ($database)");
}
is($node->safe_psql('shop', "SELECT consumed FROM sessionize.pipeline_status"), '300', 'shop consumed its own events');
is($node->safe_psql('blog', "SELECT consumed FROM sessionize.pipeline_status"), '200', 'blog consumed its own events');
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'sessionize launcher'"),
	'1', 'one launcher for the cluster');
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'sessionize scheduler' AND datname IN ('plain', 'postgres')}),
	'no scheduler stays in a database without the extension');

# Dropping the extension in one database stops only its workers.
$node->safe_psql('blog', 'SELECT sessionize.drop_pipeline(\'clicks\')');
$node->safe_psql('blog', 'DROP EXTENSION sessionize');
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 0 FROM pg_stat_activity WHERE datname = 'blog' AND backend_type LIKE 'sessionize%'}),
	'dropping the extension in blog stops its scheduler and workers');
$node->safe_psql('shop', "INSERT INTO clicks_in VALUES (1, '2024-01-02 00:00')");
ok($node->poll_query_until('shop', "SELECT consumed = 301 FROM sessionize.pipeline_status WHERE name = 'clicks'"),
	'shop goes on');

# A database that gets the extension later is served.
$node->safe_psql('plain', $setup);
$node->safe_psql('plain', "INSERT INTO clicks_in VALUES (1, '2024-01-01 00:00')");
ok($node->poll_query_until('plain', "SELECT consumed = 1 FROM sessionize.pipeline_status WHERE name = 'clicks'"),
	'a database that gets the extension later is served');

# sessionize.database restricts the launcher to one database.
$node->append_conf('postgresql.conf', "sessionize.database = 'shop'");
$node->restart;
$node->safe_psql('plain', "INSERT INTO clicks_in VALUES (2, '2024-01-01 00:00')");
$node->safe_psql('shop', "INSERT INTO clicks_in VALUES (2, '2024-01-03 00:00')");
ok($node->poll_query_until('shop', "SELECT consumed = 302 FROM sessionize.pipeline_status WHERE name = 'clicks'"),
	'with sessionize.database set, its database is served');
is($node->safe_psql('plain', "SELECT backlog FROM sessionize.pipeline_status WHERE name = 'clicks'"), '1',
	'and no other');

# DROP DATABASE, without FORCE, does not wait in vain for the workers: the
# scheduler sees it waiting and stops them.
$node->safe_psql('shop', "INSERT INTO clicks_in VALUES (3, '2024-01-04 00:00')");
ok($node->poll_query_until('postgres', "SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = 'shop' AND backend_type = 'sessionize pipeline'"),
	'shop has a pipeline worker');
my ($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE shop');
is($ret, 0, 'DROP DATABASE of a database with running pipelines succeeds');
ok($node->poll_query_until('postgres', "SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'sessionize scheduler'"),
	'and leaves no scheduler behind');

$node->stop;
done_testing();
