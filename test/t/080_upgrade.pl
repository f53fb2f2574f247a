# Upgrades: a database made with sessionize 0.1.0, with pipelines, slot
# tables and dedup memory in use, updated with ALTER EXTENSION ... UPDATE,
# has the same objects (definitions, privileges, comments) as a database
# where the current version was installed and the same things were made, and
# its pipelines go on with the semantics of the current version.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# The lines of one description that the other lacks, marked - and +.
sub object_differences
{
	my ($fresh, $upgraded) = @_;
	my %in_fresh = map { $_ => 1 } split /\n/, $fresh;
	my %in_upgraded = map { $_ => 1 } split /\n/, $upgraded;
	return join("\n",
		(map { "- $_" } grep { !$in_upgraded{$_} } split /\n/, $fresh),
		(map { "+ $_" } grep { !$in_fresh{$_} } split /\n/, $upgraded));
}

my $node = PostgreSQL::Test::Cluster->new('upgrade');
$node->init(allows_streaming => 'logical');
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'sessionize'
sessionize.database = 'postgres'
max_worker_processes = 16
});
$node->start;
my $current = $node->safe_psql('postgres',
	"SELECT default_version FROM pg_available_extensions WHERE name = 'sessionize'");
my @versions = split /\n/, $node->safe_psql('postgres',
	"SELECT version FROM pg_available_extension_versions WHERE name = 'sessionize' ORDER BY string_to_array(version, '.')::int[]");
ok(scalar(@versions) >= 2, 'earlier versions are installed beside the current one (' . join(', ', @versions) . ')');

$node->safe_psql('postgres', q{
	CREATE ROLE runner LOGIN;
	CREATE ROLE tenant;
	CREATE ROLE creator;
});

# What a user of any version makes: tables, pipelines of both source kinds,
# one run by a role of its own, one over a table a non-superuser owns, one
# keyed by a domain; a slot table; dedup memory.
my $setup = q{
	CREATE DOMAIN user_key AS integer CHECK (VALUE > 0);
	CREATE TABLE clicks_in (user_id integer, ts timestamptz);
	GRANT SELECT, UPDATE, DELETE ON clicks_in TO runner;
	CREATE TABLE tenant_in (user_id user_key, ts timestamptz);
	ALTER TABLE tenant_in OWNER TO tenant;
	CREATE TABLE logged_in (user_id integer, ts timestamptz);
	SELECT sessionize.create_pipeline('clicks', 'clicks_in', 'user_id', 'ts', '30 minutes', run_as => 'runner');
	SELECT sessionize.create_pipeline('tenant', 'tenant_in', 'user_id', 'ts', '30 minutes', allowed_lateness => '1 hour');
	SELECT sessionize.create_slot_table('sends', '{k}', '{int}', 'int', 'int');
	SELECT sessionize.slot_upsert('sends', 1, 1, 10);
	SELECT sessionize.first_seen('mine', sessionize.fingerprint_bytes('{"a": "b"}'));
};
# An administrator lets a role create pipelines.  0.1.0 -> 0.2.0 shipped
# without carrying such grants over; later updates do.
my $grant = q{
	DO $$
	BEGIN
		EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO creator',
					   (SELECT oid::regprocedure FROM pg_proc
						WHERE proname = 'create_pipeline' AND pronamespace = 'sessionize'::regnamespace));
	END $$;
};
my $logical = q{SELECT sessionize.create_pipeline('logged', 'logged_in', 'user_id', 'ts', '30 minutes', source_kind => 'logical')};
my $events = q{
	INSERT INTO clicks_in VALUES (1, '2024-01-01 10:00'), (1, '2024-01-01 10:20'), (2, '2024-01-01 11:00');
	INSERT INTO tenant_in VALUES (1, '2024-01-01 10:00'), (1, '2024-01-01 13:00');
	INSERT INTO logged_in VALUES (1, '2024-01-01 10:00'), (1, '2024-01-01 10:10');
	SELECT * FROM sessionize.run_pipeline('clicks');
	SELECT * FROM sessionize.run_pipeline('tenant');
	SELECT * FROM sessionize.run_pipeline('logged');
};

for my $from (grep { $_ ne $current } @versions)
{
	my $database = 'from_' . ($from =~ s/\./_/gr);
	$node->safe_psql('postgres', "CREATE DATABASE $database");
	$node->safe_psql($database, "CREATE EXTENSION sessionize VERSION '$from'");
	$node->safe_psql($database, $setup);
	$node->safe_psql($database, $grant) if $from ne '0.1.0';
	$node->safe_psql($database, $logical);
	$node->safe_psql($database, $events);
	$node->safe_psql($database, 'ALTER EXTENSION sessionize UPDATE');
	is($node->safe_psql($database, "SELECT extversion FROM pg_extension WHERE extname = 'sessionize'"), $current,
		"$from: updated to $current");

	my $fresh = "fresh_for_$database";
	$node->safe_psql('postgres', "CREATE DATABASE $fresh");
	$node->safe_psql($fresh, 'CREATE EXTENSION sessionize');
	$node->safe_psql($fresh, $setup);
	$node->safe_psql($fresh, $grant) if $from ne '0.1.0';
	$node->safe_psql($fresh, $logical);
	$node->safe_psql($fresh, $events);

	my $describe = slurp_file('test/sql/describe_sessionize.sql');
	my $upgraded_objects = $node->safe_psql($database, $describe);
	my $fresh_objects = $node->safe_psql($fresh, $describe);
	ok(length($fresh_objects) > 10000, "$from: the description covers the schema");
	ok($upgraded_objects eq $fresh_objects, "$from: an upgraded database has the objects of a fresh install")
	  or diag(object_differences($fresh_objects, $upgraded_objects));

	if ($from ne '0.1.0')
	{
		is($node->safe_psql($database, q{
			SELECT bool_and(has_function_privilege('creator', oid, 'EXECUTE')) FROM pg_proc
			WHERE proname = 'create_pipeline' AND pronamespace = 'sessionize'::regnamespace}),
			't', "$from: a role granted create_pipeline() keeps it");
	}
	is($node->safe_psql($database, 'SELECT string_agg(name || \'=\' || owner, \',\' ORDER BY name) FROM sessionize.pipelines'),
		'clicks=runner,logged=postgres,tenant=tenant',
		"$from: pipelines belong to their run_as role, or to the source's owner instead of a superuser");
	is($node->safe_psql($database, q{
		SELECT count(*) FROM pg_class c, aclexplode(c.relacl) a
		WHERE c.relnamespace = 'sessionize'::regnamespace AND a.grantee = 'runner'::regrole AND a.privilege_type <> 'SELECT'}),
		'0', "$from: the run_as role keeps no write right on the extension's tables");

	# The pipelines go on, as their owners.
	for my $db ($database, $fresh)
	{
		$node->safe_psql($db, q{
			INSERT INTO clicks_in VALUES (1, '2024-01-01 10:40'), (3, '2024-01-01 12:00'), (1, '2024-01-01 10:40');
			INSERT INTO tenant_in VALUES (2, '2024-01-01 09:00'), (1, '2024-01-01 13:10');
			INSERT INTO logged_in VALUES (1, '2024-01-01 10:30');
			SELECT * FROM sessionize.run_pipeline('clicks');
			SELECT * FROM sessionize.run_pipeline('tenant');
			SELECT * FROM sessionize.run_pipeline('logged');
		});
	}
	my $results = q{
		SELECT string_agg(format('%s:%s:%s:%s', name, consumed, merged, late), ',' ORDER BY name) FROM sessionize.pipeline_status};
	is($node->safe_psql($database, $results), 'clicks:6:5:0,logged:3:3:0,tenant:4:3:1',
		"$from: the upgraded pipelines consume, dedup and set late events aside");
	is($node->safe_psql($database, $results), $node->safe_psql($fresh, $results),
		"$from: as the fresh install's pipelines do");
	my $sessions = q{
		SELECT string_agg(format('%s %s %s', key, session_start, events), ',' ORDER BY key, session_start)
		FROM (SELECT key, session_start, events FROM sessionize.clicks_sessions
			  UNION ALL SELECT key, session_start, events FROM sessionize.tenant_sessions
			  UNION ALL SELECT key, session_start, events FROM sessionize.logged_sessions) s};
	is($node->safe_psql($database, $sessions), $node->safe_psql($fresh, $sessions),
		"$from: with the same sessions");
}

$node->stop;
done_testing();
