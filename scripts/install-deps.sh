#!/usr/bin/env bash
# Installs what building and testing sessionize needs on Debian 12, if missing:
# the PostgreSQL 15 server and its headers, pgTAP and pg_prove, pg_cron, and the
# Perl modules the TAP tests use.  Not root: prints the command to run instead.
#
#   --dashboard  also Node.js and npm (from Debian when there is no node), and
#                the npm packages of examples/dashboard/ (`npm ci`, from the
#                npm registry, as package-lock.json pins them)
#   --browser    also Chromium, which the dashboard's browser test drives
#   --citus      also the libraries building Citus from source needs
#                (scripts/citus.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

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
dashboard=
for arg in "$@"; do
	case "$arg" in
		--dashboard)
			dashboard=1
			# a node installed otherwise (e.g. from NodeSource) serves as well
			if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
				packages+=(nodejs npm)
			fi
			;;
		--browser) packages+=(chromium) ;;
		--citus)
			packages+=(libcurl4-openssl-dev liblz4-dev libzstd-dev libkrb5-dev libssl-dev
				libselinux1-dev libxslt1-dev libpam0g-dev libreadline-dev)
			;;
		*)
			echo "usage: scripts/install-deps.sh [--dashboard] [--browser] [--citus]" >&2
			exit 2
			;;
	esac
done

missing=()
for p in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done

if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "sessionize needs these Debian packages: ${missing[*]}" >&2
		echo "install them with:" >&2
		echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
		exit 1
	fi
	echo "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	# another apt-get may hold the lock for a while: wait for it
	apt-get -o DPkg::Lock::Timeout=600 update -qq
	apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# npm keeps node_modules/.package-lock.json in step with what it installed
if [ -n "$dashboard" ] && ! [ examples/dashboard/node_modules/.package-lock.json -nt examples/dashboard/package-lock.json ]; then
	echo "installing the npm packages of examples/dashboard"
	(cd examples/dashboard && npm ci --no-audit --no-fund --loglevel=error)
fi
