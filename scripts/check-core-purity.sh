#!/usr/bin/env bash
# Fails when vault-core, the pure domain crate, depends (directly or not) on an I/O crate:
# the runtime, Kafka, Postgres, Redis or HTTP. Dev-dependencies are not checked.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO_ROOT
cd "$REPO_ROOT"

readonly FORBIDDEN=(tokio rdkafka diesel diesel-async redis bb8 warp hyper)

tree=$(cargo tree -p vault-core -e normal,build --prefix none)

found=()
for crate in "${FORBIDDEN[@]}"; do
  if grep -q "^$crate v" <<<"$tree"; then
    found+=("$crate")
  fi
done

if ((${#found[@]} > 0)); then
  printf 'vault-core must stay free of I/O crates, but depends on: %s\n' "${found[*]}" >&2
  for crate in "${found[@]}"; do
    printf '\nhow vault-core reaches %s:\n' "$crate" >&2
    cargo tree -p vault-core -e normal,build -i "$crate" >&2 || true
  done
  exit 1
fi
printf 'vault-core is pure: none of %s in its dependencies\n' "${FORBIDDEN[*]}"
