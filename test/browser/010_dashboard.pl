# The dashboard of examples/dashboard/ shows what the views say.  The demo
# pipeline (examples/dashboard/demo.sql: generated clicks run through
# run_pipeline(), with re-deliveries, late events, a dead letter and a
# backlog) is read by Evidence as a role granted with grant_reader(); the
# built site is served on 127.0.0.1 and opened in headless Chromium, and
# every KPI of the rendered page must equal the value SQL computes from the
# views, formatted as the page formats it.  The views are also checked
# against what the test knows of the data.  Screenshots and the rendered
# pages are kept in TEST_LOG_DIR.
#
# Runs against the server of the environment (PGHOST, PGPORT, PGUSER: a
# superuser), with the npm packages of examples/dashboard/ installed
# (scripts/install-deps.sh --dashboard --browser).  Builds in
# examples/dashboard/, replacing what was built there.
use strict;
use warnings;
use File::Temp qw(tempdir);
use IPC::Run;
use Test::More;

my $repo = $ENV{REPO_DIR} // '.';
my $project = "$repo/examples/dashboard";
my $log_dir = $ENV{TEST_LOG_DIR} // tempdir('sessionize-dashboard.XXXXXX', TMPDIR => 1);
my $db = 'sessionize_dashboard_test';
my $reader = 'sessionize_dashboard';

# One value (or row, columns joined by |) of a query; dies on an error.
sub psql
{
	my ($sql, %opt) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run(['psql', '-X', '-qAt', '-v', 'ON_ERROR_STOP=1', '-d', $opt{db} // $db,
				   ($opt{user} ? ('-U', $opt{user}) : ()), ($opt{file} ? ('-f', $opt{file}) : ('-c', $sql))],
				  '>', \$out, '2>', \$err)
	  or die "psql failed: $err";
	chomp $out;
	return $out;
}

# Runs a command in the project; true when it succeeds, its output logged.
sub run_logged
{
	my ($name, $cmd, %env) = @_;
	local @ENV{keys %env} = values %env;
	my $ok = IPC::Run::run($cmd, init => sub { chdir $project or die "chdir $project: $!" },
						   '>', "$log_dir/$name.log", '2>&1');
	diag("$name failed; see $log_dir/$name.log") unless $ok;
	return $ok;
}

psql("DROP DATABASE IF EXISTS $db", db => 'postgres');
psql("CREATE DATABASE $db", db => 'postgres');
psql(undef, file => "$project/demo.sql");

# The dashboard's role reads the pipeline's results and nothing else.
is(psql("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = '$reader'"), 'f',
	'the dashboard reads as a role that is no superuser');
ok(!eval { psql('SELECT count(*) FROM demo.click_stream', user => $reader); 1 },
	'the reader cannot read the staging table');
ok(!eval { psql('SELECT count(*) FROM sessionize.pipelines', user => $reader); 1 },
	"the reader cannot read the extension's tables");

# What the test knows of the data: the views equal sessions() over the
# distinct events the pipeline merged (those not set aside as late), the
# staging table holds the 25 events demo.sql left waiting, and one event was
# dead-lettered.
is(psql(q{
	WITH merged AS (
		SELECT DISTINCT user_id, ts, url FROM demo.deliveries
		EXCEPT
		SELECT (event ->> 'user_id')::bigint, (event ->> 'ts')::timestamptz, event ->> 'url' FROM sessionize.clicks_late),
	expected AS (
		SELECT count(*) AS sessions, sum((s).events) AS events
		FROM (SELECT unnest(sessionize.sessions(ts, '30 minutes')) AS s FROM merged GROUP BY user_id) x)
	SELECT e.sessions = k.sessions AND e.events = k.events AND k.sessions > 1000
	FROM expected e, (SELECT sum(sessions) AS sessions, sum(events) AS events FROM sessionize.clicks_kpi_daily) k}),
	't', 'the rollups hold the sessions of the distinct events merged');
is(psql(q{SELECT count(*) FROM demo.click_stream}), '25', 'demo.sql leaves 25 events waiting');

# What the page must show, from the views as the reader reads them: counts
# with thousands separators, percent and minutes with one decimal.
my %expected;
@expected{qw(day sessions users bounce_rate_pct p50_minutes)} = split /\|/, psql(q{
	SELECT to_char(bucket AT TIME ZONE 'UTC', 'YYYY-MM-DD'),
		   to_char(sessions, 'FM999,999,999,990'), to_char(users, 'FM999,999,999,990'),
		   to_char(round((100 * bounce_rate)::numeric, 1), 'FM990.0'),
		   to_char(round((p50_duration / 60)::numeric, 1), 'FM999,999,990.0')
	FROM sessionize.clicks_kpi_daily ORDER BY bucket DESC LIMIT 1}, user => $reader);
@expected{qw(sessions_90_days events_90_days bounce_rate_pct_90_days)} = split /\|/, psql(q{
	SELECT to_char(sum(sessions), 'FM999,999,999,990'), to_char(sum(events), 'FM999,999,999,990'),
		   to_char(round(100 * sum(bounced) / sum(sessions), 1), 'FM990.0')
	FROM sessionize.clicks_kpi_daily
	WHERE bucket > (SELECT max(bucket) FROM sessionize.clicks_kpi_daily) - interval '90 days'}, user => $reader);
@expected{qw(backlog late dead_lettered consumed merged duplicates batches last_batch_at watermark)} =
  split /\|/, psql(q{
	SELECT to_char(backlog, 'FM999,999,999,990'), to_char(late, 'FM999,999,999,990'),
		   to_char(dead_lettered, 'FM999,999,999,990'), to_char(consumed, 'FM999,999,999,990'),
		   to_char(merged, 'FM999,999,999,990'), to_char(duplicates, 'FM999,999,999,990'),
		   to_char(batches, 'FM999,999,999,990'),
		   to_char(last_batch_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),
		   to_char(watermark AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')
	FROM sessionize.pipeline_status WHERE name = 'clicks'}, user => $reader);
is($expected{backlog}, '25', 'the reader sees the backlog');
is($expected{dead_lettered}, '1', 'the reader sees the dead letter');

# Build the site from the pipeline, as the reader.
my %env = (
	EVIDENCE_VAR__pipeline => 'clicks',
	EVIDENCE_SOURCE__sessionize__host => $ENV{PGHOST} // 'localhost',
	EVIDENCE_SOURCE__sessionize__port => $ENV{PGPORT} // 5432,
	EVIDENCE_SOURCE__sessionize__database => $db,
	EVIDENCE_SOURCE__sessionize__user => $reader);
ok(run_logged('sources', ['npm', 'run', 'sources'], %env), 'npm run sources reads the pipeline');
ok(run_logged('build', ['npm', 'run', 'build'], %env), 'npm run build builds the site');

# Serve it on 127.0.0.1 and open its pages in Chromium.
my $server_out = '';
# as long as PostgreSQL's TAP tests wait for anything (PG_TEST_TIMEOUT_DEFAULT)
my $started = IPC::Run::timeout($ENV{PG_TEST_TIMEOUT_DEFAULT} // 180);
our $server = IPC::Run::start(['node', "$project/serve.js", "$project/build"], '>', \$server_out, '2>&1', $started);
# reaping the server sets $?, which is the exit status in an END block
END { local $?; $server->kill_kill if $server; }
$server->pump until $server_out =~ m{^(http://127\.0\.0\.1:\d+/)$}m;
my $url = $1;
$started->reset;
my $profile = tempdir('chromium.XXXXXX', TMPDIR => 1, CLEANUP => 1);
my %kpi;
for my $page ('', 'status')
{
	my $name = $page || 'index';
	my @chromium = ('chromium', '--headless', '--no-sandbox', "--user-data-dir=$profile",
					'--virtual-time-budget=20000', '--window-size=1280,2000');
	my $dom = '';
	IPC::Run::run([@chromium, '--dump-dom', "$url$page"], '>', \$dom, '2>>', "$log_dir/chromium.log")
	  or die "chromium failed; see $log_dir/chromium.log";
	IPC::Run::run([@chromium, "--screenshot=$log_dir/dashboard-$name.png", "$url$page"],
				  '>>', "$log_dir/chromium.log", '2>&1');
	open my $fh, '>', "$log_dir/dashboard-$name.html" or die $!;
	print $fh $dom;
	close $fh;
	ok(-s "$log_dir/dashboard-$name.png", "a screenshot of the $name page");

	# A BigValue shows its title in a <p>, its value in the <div> after it.
	while ($dom =~ m{data-kpi="(\w+)">(?:(?!data-kpi=).)*?<p[^>]*>([^<]*)</p>\s*<div[^>]*>(.*?)</div>}sg)
	{
		my ($key, $value) = ($1, $3);
		$value =~ s/<[^>]*>//g;
		$value =~ s/^\s+|\s+$//g;
		$kpi{$key} = $value;
	}
	if ($name eq 'index')
	{
		like($dom, qr{The latest day: (?:<[^>]*>|\s)*\Q$expected{day}\E}, 'the index page names the latest day');
		my $charts = () = $dom =~ /<canvas/g;
		is($charts, 3, 'the index page draws its three charts');
	}
	# Evidence shows a failed or empty query in red, or as an empty data set
	unlike($dom, qr{text-red-600|bg-red-50|Dataset is empty|No Records}, "the $name page shows no error");
}
for my $key (sort keys %expected)
{
	next if $key eq 'day';
	is($kpi{$key}, $expected{$key}, "the page shows $key as SQL computes it: $expected{$key}");
}

psql("DROP DATABASE $db", db => 'postgres');
psql("DROP ROLE $reader", db => 'postgres');
done_testing();
