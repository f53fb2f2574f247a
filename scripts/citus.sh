#!/usr/bin/env bash
# Builds Citus 12.1.6 from its source archive and installs it into the
# PostgreSQL of $PG_CONFIG, for the scale-out test (test/t/120_citus.pl).
# Debian 12 does not package Citus, and nothing of sessionize needs it.
#
#   CITUS_TARBALL    the archive (default: ../shared/vendor/citus-12.1.6.tar.gz,
#                    beside this repository's checkout); it is `git archive` of
#                    tag v12.1.6 of the public repository citusdata/citus
#   CITUS_BUILD_DIR  where to build (default: .cluster/citus-build)
#
# Does nothing when that PostgreSQL already has Citus 12.1.  As root it
# installs the Debian packages the build needs; otherwise it prints them.
# Exits with 3 when there is no source archive.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PG_CONFIG:=pg_config}"
version=12.1.6
tarball=${CITUS_TARBALL:-../shared/vendor/citus-$version.tar.gz}
build_dir=${CITUS_BUILD_DIR:-.cluster/citus-build}

control="$("$PG_CONFIG" --sharedir)/extension/citus.control"
if [ -f "$control" ] && [ -f "$("$PG_CONFIG" --pkglibdir)/citus.so" ] &&
	grep -q "^default_version = '12.1-" "$control"; then
	echo "citus $version is installed in $("$PG_CONFIG" --pkglibdir)"
	exit 0
fi
if [ ! -f "$tarball" ]; then
	echo "no Citus source archive at $tarball: set CITUS_TARBALL (see README, Scaling out with Citus)" >&2
	exit 3
fi

bash scripts/install-deps.sh --citus

rm -rf "$build_dir"
mkdir -p "$build_dir"
tar xzf "$tarball" -C "$build_dir"
cd "$build_dir/citus-$version"
./configure PG_CONFIG="$PG_CONFIG" >configure.log 2>&1 || { tail -30 configure.log >&2; exit 1; }
make -j"$(nproc)" >make.log 2>&1 || { tail -30 make.log >&2; exit 1; }
make install >install.log 2>&1 || { tail -30 install.log >&2; exit 1; }
echo "citus $version installed into $("$PG_CONFIG" --pkglibdir)"
