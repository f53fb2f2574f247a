# Hostile roles: a role that owns a table, a database, a schema or a tenant's
# pipeline tries every route to more rights that sessionize could open.  Each
# attempt must leave the role without superuser, the server up, and the other
# tenants' pipelines producing exactly what they would without the attacker.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('hostile');
$node->init(allows_streaming => 'logical');
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'sessionize'
sessionize.database = 'shared'
sessionize.naptime = '100ms'
max_worker_processes = 16
});
$node->start;
# The test's own queries never run the trojans planted below; the calls
# under test lift this (local $ENV{PGOPTIONS}).
$ENV{PGOPTIONS} = '-c search_path=public';
my $started = $node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()');

# Roles: mallory attacks, alice and bob are tenants; mallory owns the
# database the pipelines live in.
$node->safe_psql('postgres', q{
	CREATE ROLE mallory LOGIN;
	CREATE ROLE alice LOGIN;
	CREATE ROLE bob LOGIN;
	CREATE DATABASE shared OWNER mallory;
	CREATE DATABASE squat OWNER mallory;
	CREATE DATABASE squat_publication OWNER mallory;
});

sub is_superuser
{
	my ($role) = @_;
	return $node->safe_psql('postgres', "SELECT rolsuper FROM pg_roles WHERE rolname = '$role'");
}

sub still_safe
{
	my ($what) = @_;
	is(is_superuser('mallory'), 'f', "$what: mallory is not a superuser");
	is(is_superuser('alice'), 'f', "$what: alice is not a superuser");
	is($node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()'), $started,
		"$what: the server did not restart");
}

# Code that makes its author a superuser when a superuser runs it, and
# otherwise does nothing.
my $escalate = q{
	BEGIN
		EXECUTE format('ALTER ROLE %I SUPERUSER', '__ROLE__');
	EXCEPTION WHEN OTHERS THEN
		NULL;
	END;
};

sub escalating_body
{
	my ($role) = @_;
	(my $body = $escalate) =~ s/__ROLE__/$role/g;
	return $body;
}

# Route: a schema or a publication made before the extension is adopted.
my ($ret, $out, $err) = $node->psql('squat', 'CREATE SCHEMA sessionize', extra_params => ['-U', 'mallory']);
is($ret, 0, 'mallory, who may create in her database, makes schema sessionize');
($ret, $out, $err) = $node->psql('squat', 'CREATE EXTENSION sessionize');
isnt($ret, 0, 'CREATE EXTENSION refuses a schema sessionize that exists');
like($err, qr/schema "sessionize" already exists/, 'with a clear error');
$node->safe_psql('squat_publication', 'CREATE TABLE t (a int)', extra_params => ['-U', 'mallory']);
($ret, $out, $err) = $node->psql('squat_publication', 'CREATE PUBLICATION sessionize_pipelines FOR TABLE t',
	extra_params => ['-U', 'mallory']);
is($ret, 0, 'mallory makes a publication of sessionize\'s name');
($ret, $out, $err) = $node->psql('squat_publication', 'CREATE EXTENSION sessionize');
isnt($ret, 0, 'CREATE EXTENSION refuses a publication that exists');
like($err, qr/publication "sessionize_pipelines" already exists/, 'with a clear error');
still_safe('squatting');

# The shared database: the extension, two tenants with pipelines.
$node->safe_psql('shared', q{
	CREATE EXTENSION sessionize;
	GRANT EXECUTE ON FUNCTION sessionize.create_pipeline(text, regclass, name, name, interval, interval, interval,
														 text[], name, interval, name, text, boolean, name, boolean, text, text)
		TO alice, bob, mallory;
	GRANT CREATE ON SCHEMA public TO alice, bob, mallory;
	CREATE TABLE bob_expected (user_id int, ts timestamptz);
	INSERT INTO bob_expected
	SELECT DISTINCT (random() * 20)::int, timestamptz '2024-01-01' + (random() * 86400)::int * interval '1 second'
	FROM generate_series(1, 500);
	GRANT SELECT ON bob_expected TO bob;
});
$node->safe_psql('shared', q{
	CREATE TABLE bob_in (user_id int, ts timestamptz);
	SELECT sessionize.create_pipeline('bob_p', 'bob_in', 'user_id', 'ts', '15 minutes');
}, extra_params => ['-U', 'bob']);
$node->safe_psql('shared', q{
	CREATE TABLE alice_in (user_id int, ts timestamptz);
	SELECT sessionize.create_pipeline('alice_p', 'alice_in', 'user_id', 'ts', '15 minutes');
}, extra_params => ['-U', 'alice']);
is($node->safe_psql('shared', "SELECT owner FROM sessionize.pipelines WHERE name = 'bob_p'"), 'bob',
	'a pipeline belongs to the owner of its source');

# Route: the database's owner puts trojan operators and functions first in
# the database's search_path.  Each does its work, and makes mallory a
# superuser if a superuser runs it.
my $trojans = q{
	CREATE SCHEMA evil;
};
my @operators = (
	[ '=', 'text', 'text', 'texteq' ], [ '=', 'name', 'name', 'nameeq' ],
	[ '=', 'integer', 'integer', 'int4eq' ], [ '=', 'bigint', 'bigint', 'int8eq' ],
	[ '=', 'oid', 'oid', 'oideq' ], [ '<', 'integer', 'integer', 'int4lt' ],
	[ '<', 'bigint', 'bigint', 'int8lt' ], [ '>', 'bigint', 'bigint', 'int8gt' ],
	[ '||', 'text', 'text', 'textcat' ], [ '||', 'text', 'integer', 'NULL' ],
	[ '+', 'timestamptz', 'interval', 'timestamptz_pl_interval' ],
	[ '-', 'timestamptz', 'interval', 'timestamptz_mi_interval' ],
	[ '<', 'timestamptz', 'timestamptz', 'timestamptz_lt' ],
	[ '<=', 'timestamptz', 'timestamptz', 'timestamptz_le' ],
	[ '>=', 'timestamptz', 'timestamptz', 'timestamptz_ge' ],
	[ '=', 'timestamptz', 'timestamptz', 'timestamptz_eq' ],
	[ '=', 'uuid', 'uuid', 'uuid_eq' ]);
my $i = 0;
for my $op (@operators)
{
	my ($name, $left, $right, $proc) = @$op;
	my $result = $proc eq 'NULL' ? "\$1 OPERATOR(pg_catalog.||) \$2::pg_catalog.text" : "pg_catalog.$proc(\$1, \$2)";
	my $type = $name =~ /^[=<>]/ ? 'boolean' : $name eq '||' ? 'text' : $left;
	$i++;
	$trojans .= "CREATE FUNCTION evil.op$i($left, $right) RETURNS $type LANGUAGE plpgsql AS \$f\$ BEGIN "
	  . escalating_body('mallory') . " RETURN $result; END \$f\$;\n"
	  . "CREATE OPERATOR evil.$name (LEFTARG = $left, RIGHTARG = $right, FUNCTION = evil.op$i);\n";
}
for my $function ([ 'now', '', 'timestamptz', 'pg_catalog.now()' ],
	[ 'lower', 'text', 'text', 'pg_catalog.lower($1)' ],
	[ 'format', 'text', 'text', 'pg_catalog.format($1)' ],
	[ 'current_setting', 'text', 'text', 'pg_catalog.current_setting($1)' ],
	[ 'hashtextextended', 'text, bigint', 'bigint', 'pg_catalog.hashtextextended($1, $2)' ])
{
	my ($name, $args, $type, $result) = @$function;
	$trojans .= "CREATE FUNCTION evil.$name($args) RETURNS $type LANGUAGE plpgsql AS \$f\$ BEGIN "
	  . escalating_body('mallory') . " RETURN $result; END \$f\$;\n";
}
$trojans .= "ALTER DATABASE shared SET search_path = evil, pg_catalog, public;\n";
$node->safe_psql('shared', $trojans, extra_params => ['-U', 'mallory']);
{
	local $ENV{PGOPTIONS};
	is($node->safe_psql('shared', 'SHOW search_path'), 'evil, pg_catalog, public',
		'every new connection to the database has the trojan search_path');
}

# A superuser works in that database: every user-facing function.
{
local $ENV{PGOPTIONS};
$node->safe_psql('shared', q{
	SELECT sessionize.create_slot_table('sends', '{k}', '{int}', 'int', 'int', slots => 2);
	SELECT sessionize.slot_upsert('sends', 1, 1, 10);
	SELECT sessionize.slot_upsert_many('sends', ARRAY[1, 2], ARRAY[2, 1], ARRAY[5, 6]);
	SELECT sessionize.first_seen('superuser-checks', sessionize.fingerprint_bytes('{"a": "b"}'));
	SELECT sessionize.first_seen_many('superuser-checks', ARRAY[sessionize.fingerprint_bytes('{"a": "c"}')]);
	SELECT sessionize.classify_duplicate('superuser-checks', 'e1', sessionize.fingerprint_bytes('{"a": "d"}'));
	SELECT sessionize.fingerprint(ROW(1, 'x'));
	SELECT sessionize.prune_seen();
	CREATE TABLE admin_in (user_id int, ts timestamptz);
	SELECT sessionize.create_pipeline('admin_p', 'admin_in', 'user_id', 'ts', '15 minutes', allowed_lateness => '1 hour');
	INSERT INTO admin_in VALUES (1, '2024-01-01 10:00'), (1, '2024-01-01 10:05'), (2, '2024-01-01 12:00'), (3, '2024-01-01 09:00');
	SELECT * FROM sessionize.run_pipeline('admin_p');
	SELECT sessionize.replay_late('admin_p');
	SELECT sessionize.alter_pipeline('admin_p', allowed_lateness => '2 hours');
	SELECT sessionize.pause_pipeline('admin_p');
	SELECT sessionize.resume_pipeline('admin_p');
	SELECT * FROM sessionize.pipeline_status;
	SELECT sessionize.pipeline_backlog('admin_p');
});
}
still_safe('a superuser calls every function under the trojan search_path');

# Route: triggers on a staging table that mallory owns, fired by the worker
# and by a superuser calling run_pipeline() by hand.
$node->safe_psql('shared', qq{
	CREATE TABLE mallory_in (user_id int, ts timestamptz);
	CREATE FUNCTION mallory_trigger() RETURNS trigger LANGUAGE plpgsql AS \$f\$ BEGIN
	@{[ escalating_body('mallory') ]}
	RETURN OLD; END \$f\$;
	CREATE TRIGGER escalate BEFORE DELETE ON mallory_in FOR EACH ROW EXECUTE FUNCTION mallory_trigger();
}, extra_params => ['-U', 'mallory']);
$node->safe_psql('shared', "SELECT sessionize.create_pipeline('mallory_p', 'mallory_in', 'user_id', 'ts', '15 minutes')");
is($node->safe_psql('shared', "SELECT owner FROM sessionize.pipelines WHERE name = 'mallory_p'"), 'mallory',
	'a superuser\'s pipeline over mallory\'s table runs as mallory');
$node->safe_psql('shared', "INSERT INTO mallory_in VALUES (1, '2024-01-01 10:00'), (2, '2024-01-01 10:00')",
	extra_params => ['-U', 'mallory']);
ok($node->poll_query_until('shared', "SELECT consumed = 2 FROM sessionize.pipeline_status WHERE name = 'mallory_p'"),
	'the worker runs mallory\'s pipeline, firing her trigger');
# The event for the superuser's batch is inserted once the worker has gone,
# so that the batch by hand is the one that takes it and fires the trigger.
$node->safe_psql('shared', "SELECT sessionize.pause_pipeline('mallory_p')");
ok($node->poll_query_until('shared', "SELECT worker_pid IS NULL FROM sessionize.pipeline_status WHERE name = 'mallory_p'"),
	'the paused pipeline has no worker');
$node->safe_psql('shared', "INSERT INTO mallory_in VALUES (3, '2024-01-01 10:00')", extra_params => ['-U', 'mallory']);
is($node->safe_psql('shared', "SELECT consumed FROM sessionize.run_pipeline('mallory_p')"), '1',
	'a superuser\'s batch by hand takes the event, firing her trigger');
still_safe('a trigger on the staging table, under the worker and a superuser');

($ret, $out, $err) = $node->psql('shared',
	"SELECT sessionize.create_pipeline('mallory_as_super', 'mallory_in', 'user_id', 'ts', '15 minutes', run_as => 'postgres')");
like($err, qr/would run with superuser rights over table public.mallory_in, which mallory owns/,
	'a superuser pipeline over mallory\'s table is refused');
($ret, $out, $err) = $node->psql('shared',
	"SELECT sessionize.create_pipeline('mallory_as_super', 'mallory_in', 'user_id', 'ts', '15 minutes', run_as => 'postgres', allow_superuser => true)");
like($err, qr/refuses to run code that another role wrote/, 'also when asked for, while her trigger is there');
like($err, qr/trigger escalate on table public.mallory_in/, 'the error names the trigger');

# Route: mallory may add triggers to a superuser's staging table.
$node->safe_psql('shared', q{
	CREATE TABLE audit_in (user_id int, ts timestamptz);
	SELECT sessionize.create_pipeline('audit_p', 'audit_in', 'user_id', 'ts', '15 minutes');
	GRANT TRIGGER ON audit_in TO mallory;
});
$node->safe_psql('shared', q{
	CREATE TRIGGER escalate BEFORE DELETE ON audit_in FOR EACH ROW EXECUTE FUNCTION mallory_trigger();
}, extra_params => ['-U', 'mallory']);
$node->safe_psql('shared', "INSERT INTO audit_in VALUES (1, '2024-01-01 10:00')");
ok($node->poll_query_until('shared', "SELECT last_error LIKE '%refuses to run code that another role wrote%' FROM sessionize.pipeline_status WHERE name = 'audit_p'"),
	'a batch refuses to fire a trigger that a role without its owner\'s rights wrote');
is($node->safe_psql('shared', "SELECT consumed FROM sessionize.pipeline_status WHERE name = 'audit_p'"), '0',
	'and consumes nothing');
still_safe('a trigger added through the TRIGGER privilege');
$node->safe_psql('shared', "SELECT sessionize.drop_pipeline('audit_p')");

# Route: a domain check that a logical source decodes, and that a late event
# replayed into a row runs.
$node->safe_psql('shared', qq{
	CREATE FUNCTION mallory_check(text) RETURNS boolean LANGUAGE plpgsql AS \$f\$ BEGIN
	@{[ escalating_body('mallory') ]}
	RETURN true; END \$f\$;
	CREATE DOMAIN mallory_text AS text CHECK (mallory_check(VALUE));
}, extra_params => ['-U', 'mallory']);
$node->safe_psql('shared', 'CREATE TABLE logged_in (user_id int, ts timestamptz, note mallory_text)');
($ret, $out, $err) = $node->psql('shared',
	"SELECT sessionize.create_pipeline('logged_p', 'logged_in', 'user_id', 'ts', '15 minutes', source_kind => 'logical')");
like($err, qr/constraint mallory_text_check on domain public.mallory_text was written by mallory/,
	'a logical pipeline refuses a source whose column type runs mallory\'s code');
is($node->safe_psql('shared', "SELECT count(*) FROM pg_replication_slots"), '0', 'and leaves no slot behind');
$node->safe_psql('shared', qq{
	CREATE TABLE mallory_logged (user_id int, ts timestamptz, note mallory_text);
	SELECT sessionize.create_pipeline('mallory_logged_p', 'mallory_logged', 'user_id', 'ts', '15 minutes',
									  source_kind => 'logical', allowed_lateness => '1 hour');
	INSERT INTO mallory_logged VALUES (1, '2024-01-01 10:00', 'x'), (1, '2024-01-01 14:00', 'y');
}, extra_params => ['-U', 'mallory']);
ok($node->poll_query_until('shared', "SELECT consumed = 2 FROM sessionize.pipeline_status WHERE name = 'mallory_logged_p'"),
	'mallory\'s own logical pipeline decodes her rows, as her');
$node->safe_psql('shared', "INSERT INTO mallory_logged VALUES (2, '2024-01-01 09:00', 'z')", extra_params => ['-U', 'mallory']);
ok($node->poll_query_until('shared', "SELECT consumed = 3 FROM sessionize.pipeline_status WHERE name = 'mallory_logged_p'"),
	'and the next');
is($node->safe_psql('shared', "SELECT late FROM sessionize.pipeline_status WHERE name = 'mallory_logged_p'"), '1',
	'one of them is late');
$node->safe_psql('shared', "SELECT sessionize.pause_pipeline('mallory_logged_p')");
is($node->safe_psql('shared', "SELECT sessionize.replay_late('mallory_logged_p')"), '1',
	'a superuser replays the late event, reading it back into a row with her domain');
still_safe('domain checks in decoding and replay');

# Route: the owner of a staging table turns it into a view once its
# pipeline exists; whoever then counts its backlog or runs it would run the
# view's code.
$node->safe_psql('shared', qq{
	CREATE TABLE mallory_view_in (user_id int, ts timestamptz);
	SELECT sessionize.create_pipeline('mallory_view_p', 'mallory_view_in', 'user_id', 'ts', '15 minutes');
	SELECT sessionize.pause_pipeline('mallory_view_p');
	DROP INDEX mallory_view_in_ts_idx;
	CREATE FUNCTION mallory_rule() RETURNS boolean LANGUAGE plpgsql AS \$f\$ BEGIN
	@{[ escalating_body('mallory') ]}
	RETURN true; END \$f\$;
}, extra_params => ['-U', 'mallory']);
$node->safe_psql('shared', 'VACUUM mallory_view_in');
$node->safe_psql('shared', q{
	CREATE RULE "_RETURN" AS ON SELECT TO mallory_view_in DO INSTEAD
	SELECT NULL::int AS user_id, NULL::timestamptz AS ts WHERE mallory_rule();
}, extra_params => ['-U', 'mallory']);
$node->safe_psql('shared', 'SELECT * FROM sessionize.pipeline_status');
($ret, $out, $err) = $node->psql('shared', "SELECT * FROM sessionize.run_pipeline('mallory_view_p')");
like($err, qr/is no longer a table/, 'a source that became a view is refused');
still_safe('a source table turned into a view');

# Route: code of a type's owner that reading events runs through casts (to
# json when a row becomes jsonb, to text for the type column), also through
# a domain over that type.
$node->safe_psql('shared', qq{
	CREATE TYPE mood AS ENUM ('happy', 'sad');
	CREATE FUNCTION mood_json(mood) RETURNS json LANGUAGE plpgsql AS \$f\$ BEGIN
	@{[ escalating_body('mallory') ]}
	RETURN to_json(\$1::text); END \$f\$;
	CREATE CAST (mood AS json) WITH FUNCTION mood_json(mood);
	CREATE FUNCTION mood_text(mood) RETURNS text LANGUAGE plpgsql AS \$f\$ BEGIN
	@{[ escalating_body('mallory') ]}
	RETURN 'x'; END \$f\$;
	CREATE CAST (mood AS text) WITH FUNCTION mood_text(mood);
}, extra_params => ['-U', 'mallory']);
$node->safe_psql('shared', q{
	CREATE DOMAIN bob_mood AS mood;
	CREATE TABLE bob_moods (user_id int, ts timestamptz, kind bob_mood);
}, extra_params => ['-U', 'bob']);
($ret, $out, $err) = $node->psql('shared',
	"SELECT sessionize.create_pipeline('bob_moods', 'bob_moods', 'user_id', 'ts', '15 minutes', type_column => 'kind')",
	extra_params => ['-U', 'bob']);
like($err, qr/cast from public.mood to (json|text) was written by mallory/, 'a cast another role wrote is refused, also through a domain');
still_safe('casts of a type');

# Route: a slot table whose owner changes the type of a slot column after
# the fact.
$node->safe_psql('shared', q{
	SELECT sessionize.create_slot_table('public.mallory_slots', '{id}', '{int4}', 'numeric', 'int8', 2);
	ALTER TABLE mallory_slots ALTER COLUMN slot_key_2 TYPE int8;
	INSERT INTO mallory_slots VALUES (1, 1.0, 1, 5, 1, 2);
}, extra_params => ['-U', 'mallory']);
($ret, $out, $err) = $node->psql('shared', "SELECT sessionize.slot_upsert('mallory_slots', 1, 3.0, 1::int8)",
	extra_params => ['-U', 'mallory']);
like($err, qr/column "slot_key_2" of slot table "mallory_slots" is of type bigint, not numeric/,
	'a slot table whose columns changed type is refused, not misread');
still_safe('a slot table changed by its owner');

# A role whose name needs quotes owns its pipeline and slot tables.
$node->safe_psql('shared', q{
	CREATE ROLE "Carol";
	GRANT EXECUTE ON FUNCTION sessionize.create_pipeline(text, regclass, name, name, interval, interval, interval,
														 text[], name, interval, name, text, boolean, name, boolean, text, text)
		TO "Carol";
	GRANT CREATE ON SCHEMA public TO "Carol";
	SET ROLE "Carol";
	CREATE TABLE carol_in (user_id int, ts timestamptz);
	SELECT sessionize.create_pipeline('carol_p', 'carol_in', 'user_id', 'ts', '15 minutes');
	SELECT sessionize.create_slot_table('carol_slots', '{id}', '{int}', 'int', 'int');
	SELECT count(*) FROM sessionize.carol_p_sessions;
	SELECT sessionize.drop_pipeline('carol_p');
});
is($node->safe_psql('shared', "SELECT tableowner FROM pg_tables WHERE tablename = 'carol_slots'"), 'Carol',
	'a role whose name needs quotes owns its slot table');

# Route: a + operator of alice's found through her search_path, cached and
# then run by a superuser's SECURITY DEFINER function that sums into a slot
# table.
$node->safe_psql('shared', q{
	SELECT sessionize.create_slot_table('public.admin_sends', '{k}', '{int}', 'timestamptz', 'int');
	CREATE FUNCTION public.add_send(k int, at timestamptz, n int) RETURNS text LANGUAGE sql SECURITY DEFINER
	SET search_path = pg_catalog RETURN sessionize.slot_upsert('public.admin_sends', k, at, n);
	GRANT EXECUTE ON FUNCTION public.add_send(int, timestamptz, int) TO alice;
});
$node->safe_psql('shared', qq{
	CREATE FUNCTION public.evil_add(int, int) RETURNS int LANGUAGE plpgsql AS \$f\$ BEGIN
	@{[ escalating_body('alice') ]}
	RETURN \$1 OPERATOR(pg_catalog.+) \$2; END \$f\$;
	CREATE OPERATOR public.+ (LEFTARG = int, RIGHTARG = int, FUNCTION = public.evil_add);
	SET search_path = public, pg_catalog;
	DO \$d\$ BEGIN PERFORM sessionize.slot_upsert('public.admin_sends', 1, now(), 1); EXCEPTION WHEN OTHERS THEN NULL; END \$d\$;
	SELECT public.add_send(1, '2024-01-01 01:00', 2);
	SELECT public.add_send(1, '2024-01-01 02:00', 3);
}, extra_params => ['-U', 'alice']);
still_safe('an operator of the caller\'s search path in a slot sum');

# Route: a logical pipeline over a table with row security would decode
# rows its owner may not see.
$node->safe_psql('shared', q{
	CREATE TABLE bob_private (user_id int, ts timestamptz, secret text);
	ALTER TABLE bob_private ENABLE ROW LEVEL SECURITY;
	GRANT SELECT ON bob_private TO alice;
}, extra_params => ['-U', 'bob']);
($ret, $out, $err) = $node->psql('shared',
	"SELECT sessionize.create_pipeline('snoop', 'bob_private', 'user_id', 'ts', '15 minutes', run_as => 'alice', source_kind => 'logical')");
like($err, qr/cannot follow table public.bob_private through its WAL: the table has row security/,
	'a logical pipeline refuses a table whose rows its owner may not all see');

# Dead letters go with their pipeline: a pipeline made again under the name
# by someone else does not see them.
$node->safe_psql('shared', q{
	CREATE TABLE alice_cards (user_id int, ts timestamptz, card text);
	SELECT sessionize.create_pipeline('shared_name', 'alice_cards', 'user_id', 'ts', '15 minutes');
	INSERT INTO alice_cards VALUES (NULL, '2024-01-01 10:00', '4111');
	SELECT * FROM sessionize.run_pipeline('shared_name');
	SELECT sessionize.drop_pipeline('shared_name');
}, extra_params => ['-U', 'alice']);
$node->safe_psql('shared', q{
	CREATE TABLE bob_cards (user_id int, ts timestamptz);
	SELECT sessionize.create_pipeline('shared_name', 'bob_cards', 'user_id', 'ts', '15 minutes');
}, extra_params => ['-U', 'bob']);
is($node->safe_psql('shared', "SELECT count(*) FROM sessionize.pipeline_dead_letters WHERE pipeline = 'shared_name'",
	extra_params => ['-U', 'bob']), '0', 'a dropped pipeline\'s dead letters go with it');

# One tenant cannot make pipeline_status fail for everyone.
$node->safe_psql('shared', q{
	CREATE TABLE alice_dos (user_id int, ts timestamptz);
	SELECT sessionize.create_pipeline('alice_dos', 'alice_dos', 'user_id', 'ts', '15 minutes');
	REVOKE SELECT ON alice_dos FROM alice;
}, extra_params => ['-U', 'alice']);
is($node->safe_psql('shared', "SELECT backlog IS NULL FROM sessionize.pipeline_status WHERE name = 'alice_dos'"), 't',
	'a backlog that cannot be counted is NULL, and pipeline_status still reads');

# A time zone PostgreSQL reads in AT TIME ZONE but refuses as a setting.
($ret, $out, $err) = $node->psql('shared',
	"SELECT sessionize.create_pipeline('pst', 'alice_dos', 'user_id', 'ts', '15 minutes', time_zone => 'PST')");
like($err, qr/invalid time zone "PST"/, 'a time zone a batch could not use is refused at creation');

# A multirange over a range over mallory's domain is code of hers too.
$node->safe_psql('shared', q{
	CREATE DOMAIN mallory_int AS int CHECK (mallory_check(VALUE::text));
	CREATE TYPE mallory_range AS RANGE (subtype = mallory_int);
}, extra_params => ['-U', 'mallory']);
$node->safe_psql('shared', 'CREATE TABLE ranged_in (user_id int, ts timestamptz, span mallory_multirange)');
($ret, $out, $err) = $node->psql('shared',
	"SELECT sessionize.create_pipeline('ranged', 'ranged_in', 'user_id', 'ts', '15 minutes', source_kind => 'logical')");
like($err, qr/mallory_int_check on domain public.mallory_int was written by mallory/,
	'a multirange column is followed to the domain under its range');

# A pipeline of alice's over bob's table makes no index on it.
$node->safe_psql('shared', q{
	CREATE TABLE bob_stage (user_id int, ts timestamptz);
	GRANT SELECT, UPDATE, DELETE ON bob_stage TO alice;
}, extra_params => ['-U', 'bob']);
$node->safe_psql('shared', q{
	SELECT sessionize.create_pipeline('alice_on_bob', 'bob_stage', 'user_id', 'ts', '15 minutes', run_as => 'alice');
});
is($node->safe_psql('shared', "SELECT count(*) FROM pg_indexes WHERE tablename = 'bob_stage'"), '0',
	'a pipeline whose owner does not own the table makes no index on it');
still_safe('the second review');

# Route: a tenant against another tenant and the extension's own state.
$node->safe_psql('shared', q{
	INSERT INTO bob_in SELECT user_id, ts FROM bob_expected;
	INSERT INTO bob_in SELECT user_id, ts FROM bob_expected WHERE random() < 0.3;
}, extra_params => ['-U', 'bob']);
my @attacks = (
	[ "UPDATE sessionize.pipeline_state SET watermark = 'infinity' WHERE pipeline = 'bob_p'", qr/permission denied/ ],
	[ "UPDATE sessionize.pipeline_state SET slot_advance_to = 'FFFFFFFF/0' WHERE pipeline = 'bob_p'", qr/permission denied/ ],
	[ "INSERT INTO sessionize.seen_fingerprints VALUES ('pipeline:bob_p', gen_random_uuid(), now(), NULL)", qr/permission denied/ ],
	[ "SELECT sessionize.first_seen_many('pipeline:bob_p', ARRAY[gen_random_uuid()])", qr/belongs to a pipeline/ ],
	[ "SELECT sessionize.first_seen('pipeline:bob_p', gen_random_uuid())", qr/belongs to a pipeline/ ],
	[ "SELECT sessionize.classify_duplicate('pipeline:bob_p', 'e', gen_random_uuid())", qr/belongs to a pipeline/ ],
	[ "SELECT sessionize.sessionize_first_seen_many('pipeline:bob_p', ARRAY[gen_random_uuid()], NULL)", qr/permission denied for function/ ],
	[ "CREATE TRIGGER t BEFORE INSERT ON sessionize.alice_p_stored_sessions FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger()", qr/permission denied|must be owner/ ],
	[ "TRUNCATE sessionize.alice_p_changes", qr/permission denied/ ],
	[ "DELETE FROM sessionize.alice_p_late", qr/permission denied/ ],
	[ "SELECT sessionize.alter_pipeline('bob_p', allowed_lateness => '1 second')", qr/permission denied for pipeline "bob_p"/ ],
	[ "SELECT sessionize.drop_pipeline('bob_p')", qr/permission denied for pipeline "bob_p"/ ],
	[ "SELECT sessionize.pause_pipeline('bob_p')", qr/permission denied for pipeline "bob_p"/ ],
	[ "SELECT * FROM sessionize.run_pipeline('bob_p')", qr/permission denied for pipeline "bob_p"/ ],
	[ "SELECT sessionize.replay_late('bob_p')", qr/permission denied for pipeline "bob_p"/ ],
	[ "SELECT sessionize.pipeline_backlog('bob_p')", qr/permission denied for pipeline "bob_p"/ ],
	[ "SELECT * FROM sessionize.bob_p_sessions", qr/permission denied/ ],
	[ "SELECT * FROM sessionize.dead_letter", qr/permission denied/ ],
	[ "SELECT * FROM sessionize.pipelines", qr/permission denied/ ],
	[ "SELECT sessionize.sessionize_run_pipeline('alice'::regrole, 'bob_p', 10)", qr/permission denied for function/ ],
	[ "SELECT * FROM sessionize.sessionize_rows_as('postgres'::regrole, 'SELECT 1', NULL::int) AS r(x int)", qr/permission denied for function/ ],
	[ "SELECT sessionize.sessionize_lock_pipeline_batch('bob_p')", qr/permission denied for function/ ],
	[ "SELECT sessionize.sessionize_record_failure('bob_p', 'x')", qr/permission denied for function/ ],
	[ "SELECT sessionize.sessionize_drop_pipeline('bob'::regrole, 'bob_p')", qr/permission denied for function/ ],
	[ "SELECT sessionize.create_pipeline('stolen', 'bob_in', 'user_id', 'ts', '15 minutes')", qr/must be a member of role "bob"/ ],
	[ "SELECT sessionize.create_pipeline('stolen', 'bob_in', 'user_id', 'ts', '15 minutes', run_as => 'alice')", qr/role "alice" cannot consume table public.bob_in/ ],
	[ "SELECT sessionize.create_slot_table('sessionize.mine', '{k}', '{int}', 'int', 'int')", qr/permission denied for schema sessionize/ ],
	[ "INSERT INTO sessionize.slot_tables SELECT * FROM sessionize.slot_tables", qr/permission denied/ ]);
for my $attack (@attacks)
{
	my ($sql, $expected) = @$attack;
	($ret, $out, $err) = $node->psql('shared', $sql, extra_params => ['-U', 'alice']);
	like($err, $expected, "alice is refused: $sql");
}
is($node->safe_psql('shared', 'SELECT string_agg(name, \',\' ORDER BY name) FROM sessionize.pipeline_status',
	extra_params => ['-U', 'alice']), 'alice_dos,alice_on_bob,alice_p', 'alice sees only her own pipelines in pipeline_status');
($ret, $out, $err) = $node->psql('shared', q{
	CREATE FUNCTION public.peek(text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS $f$
	BEGIN RAISE NOTICE 'seen %', $1; RETURN true; END $f$;
	SELECT name FROM sessionize.pipeline_status WHERE public.peek(name);
	SELECT pipeline FROM sessionize.pipeline_dead_letters WHERE public.peek(pipeline);
}, extra_params => ['-U', 'alice']);
unlike($err, qr/seen (bob|mallory|admin)/, 'a cheap function of alice\'s sees no row of another pipeline');

# Old-style advisory locks of bob's pipeline, held by alice, stall nothing.
my $holder = $node->background_psql('shared', extra_params => ['-U', 'alice']);
$holder->query_safe(q{
	SELECT pg_advisory_lock(hashtextextended('sessionize pipeline bob_p', 0)),
		   pg_advisory_lock(hashtextextended('sessionize worker bob_p', 0))});
ok($node->poll_query_until('shared', q{
	SELECT backlog = 0 FROM sessionize.pipeline_status WHERE name = 'bob_p'}),
	'bob\'s pipeline runs while alice holds advisory locks of its name');
is($node->safe_psql('shared', q{
	WITH expected AS (
		SELECT user_id, (s).started_at, (s).ended_at, (s).events
		FROM (SELECT user_id, unnest(sessionize.sessions(ts, '15 minutes')) AS s FROM bob_expected GROUP BY user_id) x),
	actual AS (SELECT key, session_start, last_event_at, events FROM sessionize.bob_p_sessions)
	SELECT NOT EXISTS ((SELECT * FROM actual EXCEPT SELECT * FROM expected)
					   UNION ALL (SELECT * FROM expected EXCEPT SELECT * FROM actual))}, extra_params => ['-U', 'bob']),
	't', 'bob\'s sessions are exactly sessions() over his distinct events');
$holder->quit;
still_safe('tenants');

# Every function of the schema with NULL arguments, as a superuser and as a
# tenant: errors are fine, a crash is not.  Functions taking internal cannot
# be called from SQL (their aggregates are called instead).
my $calls = $node->safe_psql('shared', q{
	SELECT string_agg(call, E'\n' ORDER BY call) FROM (
		SELECT CASE p.prokind
				   WHEN 'a' THEN format('SELECT %s(%s) FROM generate_series(1, 3)', p.oid::regproc, args)
				   WHEN 'w' THEN format('SELECT %s(%s) OVER () FROM generate_series(1, 3)', p.oid::regproc, args)
				   ELSE format('SELECT %s(%s)', p.oid::regproc, args) END AS call
		FROM pg_proc p,
			 LATERAL (SELECT coalesce(string_agg(format('NULL::%s',
								CASE WHEN t IN ('anyelement'::regtype, '"any"'::regtype) THEN 'integer'::regtype
									 WHEN t = 'anyarray'::regtype THEN 'integer[]'::regtype
									 WHEN t = 'record'::regtype THEN 'pg_class'::regtype ELSE t END),
								', ' ORDER BY n), '') AS args
					  FROM unnest(p.proargtypes::regtype[]) WITH ORDINALITY AS a(t, n)) a
		WHERE p.pronamespace = 'sessionize'::regnamespace
		  AND NOT 'internal'::regtype = ANY (p.proargtypes::regtype[])
		  AND p.prorettype <> 'internal'::regtype) calls});
my $call_count = () = $calls =~ /\n/g;
ok($call_count > 40, 'the sweep calls every function (' . ($call_count + 1) . ')');
for my $role ('postgres', 'alice')
{
	for my $call (split /\n/, $calls)
	{
		$node->psql('shared', "SET search_path = pg_catalog; $call", extra_params => ['-U', $role]);
	}
	is($node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()'), $started,
		"every function called with NULL arguments by $role: the server did not restart");
}
my ($deserialize) = $node->psql('shared',
	"SELECT sessionize.sessionize_sessions_deserialize('\\x00ff'::bytea, NULL)");
isnt($deserialize, 0, 'a deserialize function cannot be called from SQL with a state of one\'s choosing');
still_safe('the NULL sweep');

# What PUBLIC may execute is what README documents as granted to it.
my $readme = slurp_file("$ENV{REPO_DIR}/README.md");
my %documented;
for my $line (split /\n/, $readme)
{
	next unless $line =~ /^\| `([a-z_]+)\(/;
	my $function = $1;
	next if $line =~ /not granted to `PUBLIC`/;
	$documented{$function} = 1;
}
my $public = $node->safe_psql('shared', q{
	SELECT string_agg(DISTINCT p.proname, ',' ORDER BY p.proname)
	FROM pg_proc p
	WHERE p.pronamespace = 'sessionize'::regnamespace
	  AND (p.proacl IS NULL OR EXISTS (SELECT FROM aclexplode(p.proacl) a
									   WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'))});
is($public, join(',', sort keys %documented), 'the functions PUBLIC may execute are those README documents for everyone');

$node->stop;
done_testing();
