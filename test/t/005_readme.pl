# README's examples work as shown.  Every ```sql block of README.md runs, in
# the order README gives them, in one fresh database; where a block is
# followed directly by an output block (``` without a language), psql's
# output of the block holds that output line for line.  The database has the
# demo clickstream (demo.clicks, generated as make demo does) and a table
# clicks (user_id, ts, url) of some of its users, the table README's first
# examples read.  A block that needs more than one plain database says so on
# the line before it: <!-- not run by the README test: why -->.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use IPC::Run;
use Test::More;

my $sharedir = `pg_config --sharedir`;
chomp $sharedir;
my $have_cron = -f "$sharedir/extension/pg_cron.control";

# The fenced blocks of a Markdown text, each with its language, text, first
# and last line, whether the line before it asks for it not to run, and
# whether only blank lines part it from the block before.
sub fenced_blocks
{
	my ($text) = @_;
	my @lines = split /\n/, $text, -1;
	my (@blocks, $open);
	for my $number (0 .. $#lines)
	{
		my $line = $lines[$number];
		if ($open)
		{
			if ($line =~ /^\s*```\s*$/)
			{
				$open->{end} = $number;
				push @blocks, $open;
				undef $open;
			}
			else
			{
				(my $unindented = $line) =~ s/^\Q$open->{indent}\E//;
				$open->{text} .= "$unindented\n";
			}
		}
		elsif ($line =~ /^(\s*)```(\w*)\s*$/)
		{
			my $previous = $number > 0 ? $lines[ $number - 1 ] : '';
			$open = {
				indent => $1,
				language => $2,
				text => '',
				line => $number + 1,
				skip => ($previous =~ /<!-- not run by the README test: (.*?) -->/ ? $1 : undef),
				right_after => (@blocks
					  && !grep { $lines[$_] !~ /^\s*$/ } $blocks[-1]{end} + 1 .. $number - 1),
			};
		}
	}
	return @blocks;
}

my $readme = slurp_file("$ENV{TESTDIR}/README.md");
my @blocks = fenced_blocks($readme);
my @sql = grep { $_->{language} eq 'sql' } @blocks;
ok(scalar(@sql) >= 10, 'README has its SQL examples (' . scalar(@sql) . ' blocks)');

my $node = PostgreSQL::Test::Cluster->new('readme');
$node->init(allows_streaming => 'logical');
# The library is preloaded as README says, with no worker, so that what a
# block shows does not depend on when a worker ran.
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'sessionize@{[ $have_cron ? ",pg_cron" : "" ]}'
sessionize.max_workers = 0
cron.database_name = 'postgres'
cron.use_background_workers = on
max_worker_processes = 16
timezone = 'UTC'
datestyle = 'ISO, MDY'
lc_messages = 'C'
});
$node->start;
$node->safe_psql('postgres', 'CREATE SCHEMA demo');
$node->safe_psql('postgres', slurp_file("$ENV{TESTDIR}/scripts/demo_clickstream.sql"));
$node->safe_psql('postgres', q{
	CREATE TABLE clicks AS SELECT user_id, ts, url FROM demo.clicks WHERE user_id <= 200;
	ANALYZE clicks});

# Runs one block as a user would paste it into psql.
sub run_block
{
	my ($text) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres') ],
		'<', \$text, '>', \$out, '2>', \$err);
	return ($? == 0, $out, $err);
}

# Whether the lines of $shown appear, one after the other, in $printed
# (trailing blanks aside).
sub shows
{
	my ($printed, $shown) = @_;
	my @printed = map { s/\s+$//r } split /\n/, $printed;
	my @shown = map { s/\s+$//r } split /\n/, $shown;
	for my $start (0 .. @printed - @shown)
	{
		return 1 if !grep { $printed[ $start + $_ ] ne $shown[$_] } 0 .. $#shown;
	}
	return 0;
}

for my $index (0 .. $#blocks)
{
	my $block = $blocks[$index];
	next unless $block->{language} eq 'sql';
	my $where = "README line $block->{line}";
	if (defined $block->{skip})
	{
		note "$where not run: $block->{skip}";
		next;
	}
	my $next = $blocks[ $index + 1 ];
	my ($ran, $out, $err) = run_block($block->{text});
	ok($ran, "$where runs") or diag "$block->{text}\n$err";
	if ($next && $next->{language} eq '' && $next->{right_after})
	{
		ok(shows($out, $next->{text}), "$where shows what README shows")
		  or diag "README shows:\n$next->{text}\npsql printed:\n$out";
	}
}

$node->stop;
done_testing();
