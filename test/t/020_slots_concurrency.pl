# Connections applying messages to the same keys at once never lose one:
# the final rows equal the reference computed from every message sent.
# Meanwhile DDL, TRUNCATE and VACUUM elsewhere send invalidations, which
# arrive while the upserts' cached plans run: no error, nothing lost.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('slots');
$node->init;
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION sessionize;
	SELECT sessionize.create_slot_table('sends', '{id}', '{int}', 'int', 'bigint', slots => 2,
										value_name => 'sent', slot_key_name => 'day');
	CREATE TABLE sent (id int, day int);
	CREATE TABLE scratch (a int);
});

# Few keys and days, so that both connections keep meeting on the same rows,
# including rows that do not exist yet; the value is a function of the
# message, so re-deliveries are never conflicts.
$node->pgbench(
	'--no-vacuum --client=3 --jobs=3 --transactions=1500',
	0,
	[qr{processed: 4500/4500}],
	[qr{^$}],
	'connections apply overlapping messages among DDL',
	{
		'single@3' => q{
			\set id random(1, 25)
			\set day random(1, 8)
			BEGIN;
			INSERT INTO sent VALUES (:id, :day);
			SELECT sessionize.slot_upsert('sends', :id, :day, (:id * 1000 + :day)::bigint);
			COMMIT;
		},
		'batch@1' => q{
			\set id random(1, 25)
			\set day random(1, 8)
			BEGIN;
			INSERT INTO sent VALUES (:id, :day), (:id, (:day % 8) + 1);
			SELECT sessionize.slot_upsert_many('sends', ARRAY[:id, :id], ARRAY[:day, (:day % 8) + 1],
											   ARRAY[(:id * 1000 + :day)::bigint, (:id * 1000 + (:day % 8) + 1)::bigint]);
			COMMIT;
		},
		'ddl@1' => q{
			CREATE TABLE zz_:client_id ();
			DROP TABLE zz_:client_id;
			INSERT INTO scratch VALUES (1);
			TRUNCATE scratch;
			VACUUM scratch;
		},
	});

is( $node->safe_psql('postgres', q{
		SELECT count(*) FROM (
			(SELECT id, sum(id * 1000 + day) FROM (SELECT DISTINCT id, day FROM sent) d GROUP BY id
			 EXCEPT SELECT id, computed FROM sends)
			UNION ALL
			(SELECT id, computed FROM sends
			 EXCEPT SELECT id, sum(id * 1000 + day) FROM (SELECT DISTINCT id, day FROM sent) d GROUP BY id)) difference}),
	'0',
	'computed equals the sum over every distinct message sent');
is( $node->safe_psql('postgres', q{
		SELECT count(*) FROM (
			SELECT id, day FROM (SELECT id, day_1 AS day FROM sends UNION ALL SELECT id, day_2 FROM sends
								 UNION ALL SELECT id, day FROM sends_overflow) stored WHERE day IS NOT NULL
			EXCEPT ALL SELECT DISTINCT id, day FROM sent) extra}),
	'0', 'no message is stored twice');
is( $node->safe_psql('postgres', q{
		SELECT count(*) FROM (
			SELECT DISTINCT id, day FROM sent
			EXCEPT SELECT id, day FROM (SELECT id, day_1 AS day FROM sends UNION ALL SELECT id, day_2 FROM sends
										UNION ALL SELECT id, day FROM sends_overflow) stored) missing}),
	'0', 'no message is lost');

$node->stop;
done_testing();
