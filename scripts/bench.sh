#!/usr/bin/env bash
# The benchmark: starts the pipeline on the local stack (scripts/run.sh start) and runs
# vault-bench against it. Arguments go to vault-bench:
#
#   scripts/bench.sh                              latency: 2000 orders/s for 20 s, p99 target 1000 ms
#   scripts/bench.sh --rate 4000 --seconds 30 --p99-ms 500
#   scripts/bench.sh drain --orders 100000 --reference
#                                                 drain: 100,000 orders as fast as they go, orders/s
#                                                 per stage and end to end, against the database
#                                                 alone (a scratch database, dropped after)
#   ... --json FILE --plots DIR                   either mode: the figures as JSON, SVG plots
#
# Both report each process's CPU-seconds and memory. It exits non-zero when a target is missed
# (drain: when the counters differ from the recount, or the reference's rows from the
# pipeline's). The services keep running afterwards; scripts/run.sh stop stops them.
#
# Every run starts from the same state: its own database (VAULTLINE_BENCH_DB, default
# vaultline_bench), created empty, so the warehouse you work with (dwh) is left alone, and an
# empty local broker (no topic, message or group of an earlier run or test), so that the
# services start with nothing behind them. VAULTLINE_BENCH_KEEP=1 keeps the database as it is
# instead: a warehouse filled beforehand, e.g. with 5,000,000 orders by scripts/bi-bench.sh
# (VAULTLINE_BENCH_DB=vaultline_bi), to measure what history costs the drain.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO_ROOT
cd "$REPO_ROOT"

export VAULTLINE_DB=${VAULTLINE_BENCH_DB:-vaultline_bench}
scripts/run.sh stop
eval "$(scripts/stack.sh up)"
if [[ ${VAULTLINE_BENCH_KEEP:-0} != 1 ]]; then
  psql "${DATABASE_URL%/*}/postgres" -qAt -v ON_ERROR_STOP=1 \
    -c "DROP DATABASE IF EXISTS $VAULTLINE_DB WITH (FORCE)" -c "CREATE DATABASE $VAULTLINE_DB" >/dev/null
fi
scripts/stack.sh restart-kafka --empty >/dev/null
VAULTLINE_PROFILE=release scripts/run.sh start
# run.sh builds the services only.
cargo build --release --quiet --bin vault-bench
export KAFKA_BOOTSTRAP_SERVERS DATABASE_URL REDIS_URL
exec target/release/vault-bench "$@"
