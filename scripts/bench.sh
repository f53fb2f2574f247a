#!/usr/bin/env bash
# `make bench [BENCH=name]`: runs bench/NAME.sh (all of them by default)
# against a fresh throwaway cluster and prints their tables.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/cluster.sh

bash scripts/install-deps.sh
make -s
make -s install >/dev/null
cluster_start

for script in bench/${BENCH:-*}.sh; do
	echo "== $script"
	bash "$script"
done
