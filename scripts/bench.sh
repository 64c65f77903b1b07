#!/usr/bin/env bash
# The benchmark: starts the pipeline on the local stack (scripts/run.sh start) and runs
# vault-bench against it. Arguments go to vault-bench:
#
#   scripts/bench.sh                              2000 orders/s for 20 s, p99 target 1000 ms
#   scripts/bench.sh --rate 4000 --seconds 30 --p99-ms 500
#
# It exits non-zero when a target is missed. The services keep running afterwards;
# scripts/run.sh stop stops them.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO_ROOT
cd "$REPO_ROOT"

scripts/run.sh start
eval "$(scripts/stack.sh env)"
export KAFKA_BOOTSTRAP_SERVERS DATABASE_URL REDIS_URL
exec target/release/vault-bench "$@"
