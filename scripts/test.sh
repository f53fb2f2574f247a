#!/usr/bin/env bash
# `make test`: every test of sessionize against a throwaway cluster.
#
#   1. pg_regress suites (sql/, expected/)       -- make installcheck
#   2. pgTAP suites (test/pgtap/*.sql)            -- pg_prove
#   3. the dashboard in a browser (test/browser)  -- prove: examples/dashboard/
#      built by Evidence from a pipeline, opened in headless Chromium
#   4. TAP tests with their own clusters (test/t) -- prove, for restarts/crashes
#      and the Citus cluster of test/t/120_citus.pl (scripts/citus.sh builds
#      Citus in the background while the other suites run)
#
# Installs missing packages first, builds and installs the extension, and ends
# with one line "sessionize: N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/cluster.sh

bash scripts/install-deps.sh --dashboard --browser || exit 1
# Citus, for the scale-out test, builds in the background meanwhile.
citus_log=$(mktemp /tmp/sessionize-citus.XXXXXX)
PG_CONFIG="$PG_CONFIG" bash scripts/citus.sh >"$citus_log" 2>&1 &
citus_pid=$!
control_version=$(sed -nE "s/^default_version = '(.*)'/\1/p" sessionize.control)
if ! grep -q "\"version\": \"$control_version\"" META.json; then
	echo "META.json does not carry version $control_version of sessionize.control" >&2
	exit 1
fi
make -s PG_CFLAGS="${PG_CFLAGS:--Wall -Wextra -Werror}" || exit 1
if [ -w "$("$PG_CONFIG" --pkglibdir)" ]; then
	make -s install >/dev/null || exit 1
else
	echo "cannot install into $("$PG_CONFIG" --pkglibdir); run: sudo make install" >&2
	exit 1
fi

cluster_start pg_cron || exit 1
passed=0
failed=0
logs=$(mktemp -d /tmp/sessionize-test.XXXXXX)
chmod 755 "$logs"

echo "== pg_regress"
make -s installcheck 2>&1 | tee "$logs/regress.log"
n_ok=$(grep -cE '\.\.\. ok|^ok ' "$logs/regress.log" || true)
n_bad=$(grep -cE '\.\.\. FAILED|^not ok ' "$logs/regress.log" || true)
passed=$((passed + n_ok))
failed=$((failed + n_bad))
if [ "$n_bad" -gt 0 ] && [ -f regression.diffs ]; then
	cat regression.diffs
fi

echo "== pgTAP"
psql -X -q -c 'DROP DATABASE IF EXISTS sessionize_tap' -c 'CREATE DATABASE sessionize_tap' >/dev/null
pg_prove -d sessionize_tap test/pgtap/*.sql 2>&1 | tee "$logs/pgtap.log"
tests=$(sed -nE 's/^Files=[0-9]+, Tests=([0-9]+),.*/\1/p' "$logs/pgtap.log")
bad=$(grep -oE 'Failed [0-9]+/' "$logs/pgtap.log" | grep -oE '[0-9]+' | awk '{ s += $1 } END { if (s) print s }')
grep -q '^Result: PASS' "$logs/pgtap.log" || [ -n "$bad" ] || bad=1
passed=$((passed + ${tests:-0} - ${bad:-0}))
failed=$((failed + ${bad:-0}))

echo "== dashboard (Evidence in headless Chromium; screenshots in $logs/dashboard)"
mkdir -p "$logs/dashboard"
REPO_DIR="$PWD" TEST_LOG_DIR="$logs/dashboard" prove -v --ext .pl test/browser 2>&1 |
	tee "$logs/dashboard.log" | grep -E '^(ok|not ok|#|Files=|Result:)'
tests=$(sed -nE 's/^Files=[0-9]+, Tests=([0-9]+),.*/\1/p' "$logs/dashboard.log")
bad=$(grep -cE '^not ok' "$logs/dashboard.log" || true)
grep -q '^Result: PASS' "$logs/dashboard.log" || [ "$bad" -gt 0 ] || bad=1
passed=$((passed + ${tests:-0} - bad))
failed=$((failed + bad))

cluster_stop

wait "$citus_pid"
citus_status=$?
if [ "$citus_status" -eq 3 ]; then
	echo "no Citus source archive: test/t/120_citus.pl skips (see README, Scaling out with Citus)" >&2
elif [ "$citus_status" -ne 0 ]; then
	echo "could not build Citus, without which test/t/120_citus.pl skips (counted as a failure):" >&2
	failed=$((failed + 1))
fi
cat "$citus_log"
rm -f "$citus_log"

if ls test/t/*.pl >/dev/null 2>&1; then
	echo "== TAP (PostgreSQL::Test::Cluster)"
	tap_dir=$logs/tap
	mkdir -p "$tap_dir"
	cp -r test README.md scripts "$tap_dir/"
	[ "$(id -u)" -eq 0 ] && chown -R postgres: "$tap_dir"
	(cd "$tap_dir" && as_server_user env \
		PATH="$PG_BINDIR:$PATH" \
		PERL5LIB="$("$PG_CONFIG" --pkglibdir)/pgxs/src/test/perl:$tap_dir/test/lib" \
		TESTDIR="$tap_dir" PG_REGRESS=/bin/true PG_CONFIG="$PG_CONFIG" \
		REPO_DIR="$PWD" \
		prove -v --ext .pl test/t ) 2>&1 | tee "$logs/tap.log" | grep -E '^(t/|test/|ok|not ok|#   Failed|Files=|Result:|All tests)'
	tests=$(sed -nE 's/^Files=[0-9]+, Tests=([0-9]+),.*/\1/p' "$logs/tap.log")
	bad=$(grep -cE '^not ok' "$logs/tap.log" || true)
	grep -q '^Result: PASS' "$logs/tap.log" || [ "$bad" -gt 0 ] || bad=1
	if [ "$bad" -gt 0 ]; then
		find "$tap_dir" -name '*.log' -path '*tmp_check/log*' -exec tail -n 30 {} + 2>/dev/null | tail -200
	fi
	passed=$((passed + ${tests:-0} - bad))
	failed=$((failed + bad))
fi

echo "sessionize: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
