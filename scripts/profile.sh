#!/usr/bin/env bash
# Where the time goes: a drain (scripts/bench.sh drain) with perf sampling each service and
# the benchmark database's Postgres backends, turned into one flame graph per process.
#
#   scripts/profile.sh [OUT_DIR] [-- DRAIN ARGS...]
#       OUT_DIR    where the flame graphs go (default target/profile): service-stg.svg,
#                  service-dds.svg, service-cdm.svg, postgres.svg, and each one's folded
#                  stacks (*.folded) for diffing one profile with another
#       DRAIN ARGS what scripts/bench.sh drain takes (default --orders 50000)
#
# Needs perf (Debian: linux-perf) and inferno (cargo install inferno), and the right to trace
# the processes (root, or kernel.perf_event_paranoid <= 1). Stacks are unwound from DWARF
# (the services are built with line tables, Postgres has its .eh_frame), so no rebuild with
# frame pointers is needed; the broker's JVM frames are not symbolised, so Kafka is left out
# (its CPU time is in the drain's own report).
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO_ROOT
cd "$REPO_ROOT"

OUT=target/profile
if [[ $# -gt 0 && $1 != -- ]]; then
  OUT=$1
  shift
fi
[[ ${1:-} == -- ]] && shift
DRAIN_ARGS=("$@")
[[ ${#DRAIN_ARGS[@]} -gt 0 ]] || DRAIN_ARGS=(--orders 50000)
readonly OUT DRAIN_ARGS
# Samples per second per process: enough for a 10-30 s drain, small enough for DWARF stacks.
readonly FREQUENCY=${VAULTLINE_PROFILE_HZ:-199}
readonly SERVICES=(service-stg service-dds service-cdm)

for tool in perf inferno-collapse-perf inferno-flamegraph; do
  command -v "$tool" >/dev/null || {
    printf '[profile] %s is missing: install perf (linux-perf) and inferno (cargo install inferno)\n' "$tool" >&2
    exit 2
  }
done
eval "$(scripts/stack.sh env)"
mkdir -p "$OUT"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The drain starts the services itself (scripts/run.sh start); perf attaches to them once
# they are up, which is before vault-bench produces its first order: vault-bench waits for
# the services' health, then the topics.
scripts/bench.sh drain "${DRAIN_ARGS[@]}" >"$work/drain.out" 2>&1 &
bench=$!
db=${VAULTLINE_BENCH_DB:-vaultline_bench}
until grep -q '^vault-bench drain' "$work/drain.out" 2>/dev/null; do
  kill -0 "$bench" 2>/dev/null || {
    cat "$work/drain.out" >&2
    exit 1
  }
  sleep 0.2
done
recorders=()
for service in "${SERVICES[@]}"; do
  perf record -q -F "$FREQUENCY" --call-graph dwarf,16384 -p "$(cat ".stack/run/$service.pid")" \
    -o "$work/$service.data" 2>/dev/null &
  recorders+=($!)
done
# The benchmark database's backends (every service's pool) and the server's own processes
# (WAL writer, checkpointer), which do the writes' background work.
pg_pids=$(psql "$DATABASE_URL" -qAt -c \
  "SELECT string_agg(pid::text, ',') FROM pg_stat_activity
    WHERE datname = '$db' OR backend_type IN ('walwriter', 'checkpointer', 'background writer')")
perf record -q -F "$FREQUENCY" --call-graph dwarf,16384 -p "$pg_pids" -o "$work/postgres.data" 2>"$work/postgres.err" &
recorders+=($!)

wait "$bench" || true
kill -INT "${recorders[@]}" 2>/dev/null || true
wait "${recorders[@]}" 2>/dev/null || true
cat "$work/drain.out"
cat "$work/postgres.err" >&2

for name in "${SERVICES[@]}" postgres; do
  perf script -i "$work/$name.data" 2>/dev/null | inferno-collapse-perf >"$OUT/$name.folded"
  inferno-flamegraph --title "$name: ${DRAIN_ARGS[*]}" <"$OUT/$name.folded" >"$OUT/$name.svg"
  printf '[profile] %s: %s samples -> %s\n' "$name" \
    "$(awk '{n += $NF} END {print n + 0}' "$OUT/$name.folded")" "$OUT/$name.svg"
done
