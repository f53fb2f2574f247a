# The library works both ways: preloaded (settings known at start-up, prefix
# reserved) and loaded on demand by a backend (functions and aggregates only).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('plain');
$node->init;
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION sessionize');
is( $node->safe_psql(
		'postgres',
		"SELECT sessionize.session_id(ts, '1 hour') OVER (ORDER BY ts)
		 FROM (VALUES (timestamptz '2024-01-01 00:00'), ('2024-01-01 02:00')) e(ts)"),
	"1\n2",
	'window function works without preloading');

$node->append_conf('postgresql.conf', "shared_preload_libraries = 'sessionize'\nsessionize.naptime = '750ms'");
$node->restart;
is($node->safe_psql('postgres', 'SHOW sessionize.naptime'), '750ms', 'setting read from postgresql.conf when preloaded');
is($node->safe_psql('postgres', 'SHOW sessionize.max_workers'), '4', 'default max_workers');

my ($ret, $stdout, $stderr) = $node->psql('postgres', "SET sessionize.no_such_setting = 1");
isnt($ret, 0, 'unknown setting in the reserved prefix is refused');
like($stderr, qr/invalid configuration parameter name|unrecognized configuration parameter/, 'with a clear error');

is( $node->safe_psql(
		'postgres',
		"SELECT array_length(sessionize.sessions(ts, '1 hour'), 1)
		 FROM (VALUES (timestamptz '2024-01-01 00:00'), ('2024-01-01 02:00')) e(ts)"),
	'2',
	'aggregate works when preloaded');
$node->stop;
done_testing();
