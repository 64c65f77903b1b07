#!/usr/bin/env bash
# Runs the workspace's tests against the local stack: brings it up (scripts/stack.sh up),
# then runs every test with the stack's settings in the environment.
#
#   scripts/test.sh                  all tests
#   scripts/test.sh -p vault-core    extra arguments go to cargo nextest run / cargo test
#
# VAULTLINE_TEST_THREADS (default 2) bounds how many tests run at once: integration tests each
# start services and consumer groups, and a small machine thrashes with more.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO_ROOT
readonly THREADS=${VAULTLINE_TEST_THREADS:-2}
cd "$REPO_ROOT"

if cargo nextest --version >/dev/null 2>&1; then
  runner=(cargo nextest run --workspace --no-fail-fast --test-threads "$THREADS" "$@")
else
  printf '[test] cargo-nextest not found; using cargo test\n' >&2
  runner=(cargo test --workspace --no-fail-fast "$@" -- --test-threads "$THREADS")
fi

# The dashboard test (tests/tests/dashboard.rs) drives headless Chromium. Without it the test
# skips itself, except under CI, where it fails: say so before the long build.
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null \
  && ! command -v google-chrome >/dev/null && [[ -z ${CHROMIUM:-} ]]; then
  if [[ -n ${CI:-} ]]; then
    printf '[test] chromium is missing and CI is set: apt-get install -y chromium\n' >&2
    exit 1
  fi
  printf '[test] chromium not found: the dashboard test will be skipped (apt-get install -y chromium)\n' >&2
fi

# The metrics test (tests/tests/metrics_exposition.rs) runs promtool (Debian's prometheus
# package) on every service's /metrics; likewise skipped without it, except under CI.
if ! command -v promtool >/dev/null && [[ -z ${PROMTOOL:-} ]]; then
  if [[ -n ${CI:-} ]]; then
    printf '[test] promtool is missing and CI is set: apt-get install -y prometheus\n' >&2
    exit 1
  fi
  printf '[test] promtool not found: promtool check metrics will be skipped (apt-get install -y prometheus)\n' >&2
fi

# The tests build while the stack comes up (on a fresh machine: Postgres, Redis, a JRE and
# Maven installed, Kafka's jars fetched), so that both cores stay busy. Some tests start the services' real
# binaries (SIGTERM, kill -9): those build too. With arguments (a package, a filter) only the
# binaries: the rest is the runner's to choose.
build='cargo build --workspace --bins && cargo test --workspace --no-run'
(($# == 0)) || build='cargo build --workspace --bins'
# librdkafka's C unoptimised, as in run.sh's dev build (the same target/debug, built once).
build="export CFLAGS='${CFLAGS:--O0 -g0}' CXXFLAGS='${CXXFLAGS:--O0 -g0}'; $build"
stack_env=$(scripts/stack.sh up --beside .stack/logs/test-build.log -- \
  bash -c "$build")
eval "$stack_env"
printf '[test] %s\n' "using: ${stack_env//$'\n'/; }" >&2

export RUST_BACKTRACE=${RUST_BACKTRACE:-1}

# Each integration test makes its own database (vaultline_test_<created>_<id>). A passing run
# drops the ones it made; a failing run leaves them for inspection until a later run, three
# hours on (no run lasts that long), drops them. Left to pile up they cost disk and make
# Postgres's recovery after an unclean stop take minutes.
drop_test_databases() { # $1: an SQL condition on created, the epoch seconds in the name
  command -v psql >/dev/null || return 0
  local databases database
  databases=$(psql "$DATABASE_URL" -X -At -c \
    "SELECT datname FROM pg_database WHERE datname ~ '^vaultline_test_[0-9]+_' \
       AND split_part(datname, '_', 3)::bigint $1" 2>/dev/null || true)
  for database in $databases; do
    psql "$DATABASE_URL" -X -q -c "DROP DATABASE IF EXISTS \"$database\"" >/dev/null 2>&1 || true
  done
  [[ -z $databases ]] || printf '[test] dropped %s test databases (%s)\n' "$(wc -w <<<"$databases")" "$2" >&2
}
drop_test_databases "< $(($(date +%s) - 3 * 3600))" "of runs three hours old or more"

started=$(date +%s)
status=0
"${runner[@]}" || status=$?
if ((status == 0)); then
  drop_test_databases ">= $started" "made by this run, which passed"
fi
exit "$status"
