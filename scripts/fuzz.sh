#!/usr/bin/env bash
# Fuzzes every decoder of vault-core (the targets in vault-core/fuzz/fuzz_targets) for a
# bounded time each, with libFuzzer and AddressSanitizer, and prints what each run did.
#
#   scripts/fuzz.sh                    every target, 60 s each
#   scripts/fuzz.sh 300                every target, 300 s each
#   scripts/fuzz.sh 30 raw_order user  the named targets only
#
# The build is the one `cargo fuzz build` makes (release, debug assertions, overflow checks,
# SanitizerCoverage, ASan), done with plain cargo so that nothing has to be installed: the
# sanitizer flags are unstable, and RUSTC_BOOTSTRAP=1 lets the stable toolchain take them.
# libfuzzer-sys compiles libFuzzer itself, with the machine's C++ compiler.
#
# Properties: no panic (every target also checks its round trips), no single allocation over
# VAULTLINE_FUZZ_MALLOC_MB (default 128 MiB), no resident size over VAULTLINE_FUZZ_RSS_MB
# (default 1024 MiB), no input slower than 10 s. Inputs are at most 8 KiB.
#
# Each target starts from the committed seeds (vault-core/fuzz/seeds/<target>: the example
# messages and hand-made edge cases) plus what earlier runs found (vault-core/fuzz/corpus,
# not committed). A crash leaves its input in vault-core/fuzz/artifacts/<target>/; rerun it
# with `vault-core/fuzz/target/<triple>/release/<target> <file>`. Exit 1 when any target
# failed.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO_ROOT
readonly FUZZ_DIR=$REPO_ROOT/vault-core/fuzz
readonly SECONDS_PER_TARGET=${1:-60}
shift || true
readonly RSS_MB=${VAULTLINE_FUZZ_RSS_MB:-1024}
readonly MALLOC_MB=${VAULTLINE_FUZZ_MALLOC_MB:-128}
readonly MAX_LEN=8192

log() { printf '[fuzz] %s\n' "$*" >&2; }

if ! [[ $SECONDS_PER_TARGET =~ ^[0-9]+$ ]] || ((SECONDS_PER_TARGET < 1)); then
  echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2
  exit 2
fi

# libFuzzer is C++: libfuzzer-sys builds it with the machine's compiler.
if ! command -v c++ >/dev/null; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    log "installing a C++ compiler (build-essential) for libFuzzer"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends build-essential </dev/null
  else
    log "no C++ compiler: install one first (Debian: apt-get install build-essential)"
    exit 1
  fi
fi

mapfile -t all_targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' "$FUZZ_DIR/Cargo.toml" | tail -n +2)
targets=("$@")
((${#targets[@]} > 0)) || targets=("${all_targets[@]}")
for target in "${targets[@]}"; do
  [[ " ${all_targets[*]} " == *" $target "* ]] || {
    log "unknown target $target (known: ${all_targets[*]})"
    exit 2
  }
done

triple=$(rustc -vV | sed -n 's/^host: //p')
readonly TRIPLE=$triple
# Its own target directory: these flags would otherwise rebuild the workspace's artifacts.
export CARGO_TARGET_DIR=$FUZZ_DIR/target
export RUSTC_BOOTSTRAP=1
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cllvm-args=-sanitizer-coverage-stack-depth \
--cfg fuzzing -Cdebug-assertions -Coverflow-checks -Cforce-frame-pointers -Zsanitizer=address"
build_started=$SECONDS
log "building ${#targets[@]} targets for $TRIPLE"
bins=()
for target in "${targets[@]}"; do bins+=(--bin "$target"); done
cargo build --manifest-path "$FUZZ_DIR/Cargo.toml" --locked --release --target "$TRIPLE" "${bins[@]}"
log "built in $((SECONDS - build_started)) s"

# Leaks are not checked: a Rust value that is never freed is not a decoder bug, and
# LeakSanitizer needs ptrace, which sandboxes often refuse.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
failed=()
summary=()
for target in "${targets[@]}"; do
  corpus=$FUZZ_DIR/corpus/$target
  artifacts=$FUZZ_DIR/artifacts/$target
  mkdir -p "$corpus" "$artifacts"
  output=$CARGO_TARGET_DIR/$target.log
  log "running $target for ${SECONDS_PER_TARGET} s"
  status=0
  "$CARGO_TARGET_DIR/$TRIPLE/release/$target" \
    -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -max_len="$MAX_LEN" \
    -rss_limit_mb="$RSS_MB" -malloc_limit_mb="$MALLOC_MB" \
    -dict="$FUZZ_DIR/json.dict" -artifact_prefix="$artifacts/" -print_final_stats=1 \
    "$corpus" "$FUZZ_DIR/seeds/$target" >"$output" 2>&1 || status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$output" | tail -n 1)
  size=$(find "$corpus" -type f | wc -l)
  if ((status == 0)); then
    result=ok
  else
    result="FAILED (exit $status)"
    failed+=("$target")
    grep -E 'panicked at|ERROR: (libFuzzer|AddressSanitizer)|^SUMMARY|Test unit written' "$output" >&2 || true
    log "full output of $target: $output"
  fi
  summary+=("$(printf '%-16s %6s s  %12s runs  %6s corpus  %s' \
    "$target" "$SECONDS_PER_TARGET" "${runs:-?}" "$size" "$result")")
done

printf '%s\n' "target           time         executions    corpus  result" "${summary[@]}"
if ((${#failed[@]} > 0)); then
  log "failed: ${failed[*]} (inputs in vault-core/fuzz/artifacts/)"
  exit 1
fi
