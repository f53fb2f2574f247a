#!/usr/bin/env bash
# The throwaway PostgreSQL cluster that `make demo`, `make test` and the
# benchmarks run against.  Source it, then call cluster_start / cluster_stop.
#
# The cluster lives in .cluster/ under the repository, or in
# SESSIONIZE_CLUSTER_DIR (or a temporary directory when the server's user
# cannot write there), listens on its own port (SESSIONIZE_PORT) and a
# private socket directory, and trusts local connections: it holds nothing but
# generated data.  Run as root, the server runs as the unprivileged `postgres`
# user, because PostgreSQL refuses to run as root.

: "${PG_CONFIG:=pg_config}"
PG_BINDIR=$("$PG_CONFIG" --bindir)
REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
: "${SESSIONIZE_PORT:=54329}"

# Runs a command as the user who owns the server processes.
as_server_user() {
	if [ "$(id -u)" -eq 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

cluster_start() {
	local preload=${1:-}
	CLUSTER_DIR=${SESSIONIZE_CLUSTER_DIR:-$REPO_DIR/.cluster}
	mkdir -p "$CLUSTER_DIR"
	if [ "$(id -u)" -eq 0 ]; then
		chown postgres: "$CLUSTER_DIR"
		if ! as_server_user test -w "$CLUSTER_DIR"; then
			rmdir "$CLUSTER_DIR" 2>/dev/null || true
			CLUSTER_DIR=$(mktemp -d /tmp/sessionize-cluster.XXXXXX)
			chown postgres: "$CLUSTER_DIR"
		fi
	fi
	CLUSTER_SOCKETS=$(as_server_user mktemp -d /tmp/sessionize-sock.XXXXXX)
	if [ -f "$CLUSTER_DIR/data/postmaster.pid" ]; then
		as_server_user "$PG_BINDIR/pg_ctl" -D "$CLUSTER_DIR/data" -m immediate stop >/dev/null 2>&1 || true
	fi
	as_server_user rm -rf "$CLUSTER_DIR/data"
	as_server_user "$PG_BINDIR/initdb" -D "$CLUSTER_DIR/data" -U postgres \
		--auth=trust --encoding=UTF8 --locale=C.UTF-8 >"$CLUSTER_DIR/initdb.log" 2>&1 ||
		{ cat "$CLUSTER_DIR/initdb.log" >&2; return 1; }
	cat >>"$CLUSTER_DIR/data/postgresql.conf" <<CONF
port = $SESSIONIZE_PORT
listen_addresses = ''
unix_socket_directories = '$CLUSTER_SOCKETS'
shared_preload_libraries = 'sessionize${preload:+,$preload}'
sessionize.database = 'postgres'
cron.database_name = 'postgres'
cron.use_background_workers = on
max_worker_processes = 16
wal_level = logical
max_replication_slots = 10
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 512MB
work_mem = 64MB
maintenance_work_mem = 512MB
max_wal_size = 4GB
log_min_messages = warning
track_commit_timestamp = on
CONF
	as_server_user "$PG_BINDIR/pg_ctl" -D "$CLUSTER_DIR/data" -l "$CLUSTER_DIR/server.log" -w start >/dev/null ||
		{ tail -20 "$CLUSTER_DIR/server.log" >&2; return 1; }
	export PGHOST=$CLUSTER_SOCKETS PGPORT=$SESSIONIZE_PORT PGUSER=postgres PGDATABASE=postgres
	printf 'export PGHOST=%s PGPORT=%s PGUSER=postgres PGDATABASE=postgres\n' \
		"$PGHOST" "$PGPORT" >"$CLUSTER_DIR/env"
	[ -n "${CLUSTER_KEEP:-}" ] || trap cluster_stop EXIT
}

cluster_stop() {
	if [ -n "${CLUSTER_DIR:-}" ] && [ -f "$CLUSTER_DIR/data/postmaster.pid" ]; then
		as_server_user "$PG_BINDIR/pg_ctl" -D "$CLUSTER_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
	fi
	[ -n "${CLUSTER_SOCKETS:-}" ] && rm -rf "$CLUSTER_SOCKETS"
	trap - EXIT
}

# As a command: `scripts/cluster.sh start` leaves a cluster running for
# interactive work (`. .cluster/env` to reach it); `scripts/cluster.sh stop`.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	set -euo pipefail
	case "${1:-}" in
		start)
			CLUSTER_KEEP=1 cluster_start "${2:-}"
			echo "cluster running; connect with: . $CLUSTER_DIR/env && psql"
			;;
		stop)
			CLUSTER_DIR=${SESSIONIZE_CLUSTER_DIR:-$REPO_DIR/.cluster}
			as_server_user "$PG_BINDIR/pg_ctl" -D "$CLUSTER_DIR/data" -m fast -w stop
			;;
		*)
			echo "usage: scripts/cluster.sh start [extra_preload] | stop" >&2
			exit 2
			;;
	esac
fi
