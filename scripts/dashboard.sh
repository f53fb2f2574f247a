#!/usr/bin/env bash
# `make dashboard`: the Evidence dashboard of examples/dashboard/ over the demo
# pipeline of examples/dashboard/demo.sql, on a throwaway cluster that is
# stopped once the dashboard has read its data; the built site is then served
# on 127.0.0.1 until Ctrl-C.  DASHBOARD_PORT chooses the port (default 3000).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/cluster.sh

bash scripts/install-deps.sh --dashboard
make -s
make -s install >/dev/null
cluster_start
echo "throwaway cluster on port $PGPORT: the demo pipeline"
psql -X -q -v ON_ERROR_STOP=1 -f examples/dashboard/demo.sql >/dev/null

cd examples/dashboard
# the dashboard reads as the role demo.sql gave the pipeline's results
export EVIDENCE_VAR__pipeline=clicks \
	EVIDENCE_SOURCE__sessionize__host="$PGHOST" \
	EVIDENCE_SOURCE__sessionize__port="$PGPORT" \
	EVIDENCE_SOURCE__sessionize__database="$PGDATABASE" \
	EVIDENCE_SOURCE__sessionize__user=sessionize_dashboard
npm run sources
cluster_stop
npm run build
echo "the dashboard, until Ctrl-C:"
PORT=${DASHBOARD_PORT:-3000} exec node serve.js build
