# Two connections racing on the same fingerprints: for each fingerprint
# exactly one caller is told it is new, also when claims are rolled back.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('race');
$node->init;
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION sessionize;
	CREATE TABLE verdicts (fingerprint int, first boolean);
	CREATE TABLE id_verdicts (event_id int, content int, verdict text);
});

# Each transaction keeps its claim uncommitted for a moment, so that the other
# connection runs into it; one in five rolls its claim back.
$node->pgbench(
	'--no-vacuum --client=2 --jobs=2 --transactions=1500',
	0,
	[qr{processed: 3000/3000}],
	[qr{^$}],
	'two connections claim overlapping fingerprints',
	{
		'first_seen_commit@4' => q{
			\set fp random(1, 200)
			BEGIN;
			INSERT INTO verdicts SELECT :fp, sessionize.first_seen('race', md5(:fp::text)::uuid, NULL);
			SELECT pg_sleep(0.0002);
			COMMIT;
		},
		'first_seen_rollback@1' => q{
			\set fp random(1, 200)
			BEGIN;
			INSERT INTO verdicts SELECT :fp, sessionize.first_seen('race', md5(:fp::text)::uuid, NULL);
			ROLLBACK;
		},
		'classify@2' => q{
			\set id random(1, 100)
			\set content random(1, 2)
			INSERT INTO id_verdicts
			SELECT :id, :content, sessionize.classify_duplicate('race', :id::text, md5(:content::text)::uuid, NULL);
		},
	});

is( $node->safe_psql('postgres', q{
		SELECT count(*) FROM (SELECT fingerprint FROM verdicts GROUP BY fingerprint
							  HAVING count(*) FILTER (WHERE first) <> 1) wrong}),
	'0',
	'every fingerprint was new for exactly one committed caller');
cmp_ok($node->safe_psql('postgres', 'SELECT count(DISTINCT fingerprint) FROM verdicts'),
	'>', 150, 'most fingerprints were claimed');
is( $node->safe_psql('postgres', q{
		SELECT (SELECT count(*) FROM sessionize.seen_fingerprints WHERE namespace = 'race')
			 = (SELECT count(DISTINCT fingerprint) FROM verdicts WHERE first)}),
	't', 'the memory holds exactly the committed claims: rolled-back ones left nothing');
is( $node->safe_psql('postgres', q{
		SELECT count(*) FROM (SELECT event_id FROM id_verdicts GROUP BY event_id
							  HAVING count(*) FILTER (WHERE verdict = 'new') <> 1) wrong}),
	'0',
	'every event id was new exactly once');
is( $node->safe_psql('postgres', q{
		SELECT count(*) FROM id_verdicts v
		JOIN id_verdicts f ON f.event_id = v.event_id AND f.verdict = 'new'
		WHERE v.verdict <> 'new'
		  AND v.verdict <> CASE WHEN v.content = f.content THEN 'natural_duplicate' ELSE 'synthetic_duplicate' END}),
	'0',
	'later copies are natural or synthetic duplicates of the first content');

$node->stop;
done_testing();
