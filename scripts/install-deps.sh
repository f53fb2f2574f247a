#!/usr/bin/env bash
# Installs what building and testing sessionize needs on Debian 12, if missing:
# the PostgreSQL 15 server and its headers, pgTAP and pg_prove, pg_cron, and the
# Perl modules the TAP tests use.  Not root: prints the command to run instead.
set -euo pipefail

packages=(
	build-essential
	postgresql-15
	postgresql-server-dev-15
	postgresql-contrib
	postgresql-15-pgtap
	postgresql-15-cron
	libtap-parser-sourcehandler-pgtap-perl
	libipc-run-perl
)

missing=()
for p in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done

if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
	echo "sessionize needs these Debian packages: ${missing[*]}" >&2
	echo "install them with:" >&2
	echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
	exit 1
fi

echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
