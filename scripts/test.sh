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

if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --workspace --no-fail-fast --test-threads "$THREADS" "$@"
else
  printf '[test] cargo-nextest not found; using cargo test\n' >&2
  exec cargo test --workspace --no-fail-fast "$@" -- --test-threads "$THREADS"
fi
