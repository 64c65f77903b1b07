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

stack_env=$(scripts/stack.sh up)
eval "$stack_env"
printf '[test] %s\n' "using: ${stack_env//$'\n'/; }" >&2

export RUST_BACKTRACE=${RUST_BACKTRACE:-1}

# Each integration test makes its own database and leaves it for inspection; the ones from
# earlier runs go now, so that they do not pile up on the machine.
if command -v psql >/dev/null; then
  stale=$(psql "$DATABASE_URL" -X -At -c \
    "SELECT datname FROM pg_database WHERE datname LIKE 'vaultline\_test\_%'" 2>/dev/null || true)
  for database in $stale; do
    psql "$DATABASE_URL" -X -q -c "DROP DATABASE IF EXISTS \"$database\" WITH (FORCE)" >/dev/null 2>&1 || true
  done
  [[ -z $stale ]] || printf '[test] dropped %s databases of earlier test runs\n' "$(wc -w <<<"$stale")" >&2
fi

# Some tests start the services' real binaries (SIGTERM, kill -9): build them first.
cargo build --workspace --bins --quiet

if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --workspace --no-fail-fast --test-threads "$THREADS" "$@"
else
  printf '[test] cargo-nextest not found; using cargo test\n' >&2
  exec cargo test --workspace --no-fail-fast "$@" -- --test-threads "$THREADS"
fi
