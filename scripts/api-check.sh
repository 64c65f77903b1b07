#!/usr/bin/env bash
# service-cdm's read API tried by a real client: schemathesis, driven by docs/openapi.json,
# against the pipeline running on a scratch warehouse with a few hundred orders in it.
#
#   scripts/api-check.sh    stack up, datagen + the three services (dev build, in
#                           ${CARGO_TARGET_DIR:-target}/debug) on the
#                           database vaultline_api_check, their own topics and groups and
#                           Redis database API_CHECK_REDIS_DB (default 9); push
#                           API_CHECK_ORDERS orders (default 300), add a tag rule, wait until
#                           the datamart has them; then a bounded schemathesis run; stop and
#                           drop everything
#
# The run fails on any answer the document does not describe: a status it does not list, a
# body its schema refuses, a 5xx, a malformed request accepted, a well-formed one refused.
# Bounds: API_CHECK_MAX_EXAMPLES test cases per operation and phase (default 60),
# API_CHECK_MAX_SECONDS for the whole schemathesis run (default 90). API_TOKEN, when set, is
# given to service-cdm and sent by schemathesis as `Authorization: Bearer`.
#
# A failure prints its case id: `~/.cache/vaultline/schemathesis-*/bin/st replay ID` replays it
# from .schemathesis/ (git ignores it).
#
# schemathesis comes from PyPI, pinned, in a virtualenv under ~/.cache/vaultline
# (VAULTLINE_CACHE) made with Debian's python3-venv, installed when missing, as root.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO_ROOT
cd "$REPO_ROOT"

readonly SCHEMATHESIS_PIN=schemathesis==4.32.5
readonly DB=vaultline_api_check
readonly ORDERS=${API_CHECK_ORDERS:-300}
readonly MAX_EXAMPLES=${API_CHECK_MAX_EXAMPLES:-60}
readonly MAX_SECONDS=${API_CHECK_MAX_SECONDS:-90}
readonly REDIS_DB=${API_CHECK_REDIS_DB:-9}
readonly PORT_BASE=${API_CHECK_PORT_BASE:-55110}
readonly CACHE_DIR=${VAULTLINE_CACHE:-$HOME/.cache/vaultline}
readonly BIN=${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug
readonly SERVICES=(datagen service-stg service-dds service-cdm)
WORK=$(mktemp -d)
readonly WORK

say() { printf '[api-check] %s\n' "$*" >&2; }
die() {
  printf '[api-check] error: %s\n' "$*" >&2
  exit 1
}

command -v psql >/dev/null || die "psql is missing: apt-get install -y postgresql-client"
command -v curl >/dev/null || die "curl is missing: apt-get install -y curl"

# Prints the virtualenv's bin directory, making it when missing (python3-venv from Debian).
schemathesis_venv() {
  local venv="$CACHE_DIR/schemathesis-${SCHEMATHESIS_PIN#*==}"
  if [[ ! -x $venv/bin/schemathesis || ! -f $venv/.complete ]]; then
    if ! /usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null; then
      if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        say "apt-get install python3-venv"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv </dev/null >&2
      else
        die "python3-venv is missing: install it (sudo apt-get install -y python3-venv) and rerun"
      fi
    fi
    say "making the virtualenv $venv ($SCHEMATHESIS_PIN)"
    rm -rf "$venv"
    mkdir -p "$CACHE_DIR"
    /usr/bin/python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$SCHEMATHESIS_PIN" >&2 ||
      die "pip could not install $SCHEMATHESIS_PIN (is PyPI reachable?)"
    touch "$venv/.complete"
  fi
  printf '%s\n' "$venv/bin"
}

st_bin=$(schemathesis_venv)
say "$("$st_bin/schemathesis" --version)"

eval "$(scripts/stack.sh up)"
readonly ADMIN_URL=$DATABASE_URL
readonly CHECK_URL=${DATABASE_URL%/*}/$DB
readonly CHECK_REDIS=${REDIS_URL%/}/$REDIS_DB

# Nothing to do when CI's earlier sections built them (the same command as the wiring test's).
say "building the services (dev profile)"
cargo build --quiet -p service-stg -p service-dds -p service-cdm -p datagen -p vaultctl --bins

pids=()
cleanup() {
  local rc=$? pid
  # On failure, what service-cdm logged (a 5xx's cause goes to the log, not to the client).
  if ((rc != 0)) && [[ -s $WORK/service-cdm.log ]]; then
    say "last lines of service-cdm's log:"
    tail -n 30 "$WORK/service-cdm.log" >&2
  fi
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  psql "$ADMIN_URL" -X -q -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

psql "$ADMIN_URL" -X -q -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
# A Redis database of its own: datagen writes its dictionaries there when it is empty, and
# nobody else's are touched (nothing is deleted: a previous run's dictionaries serve as well).

suffix="check_$(date +%s)_$$"
raw="stg_$suffix" enriched="dds_$suffix" counters="cdm_$suffix" tags="tags_$suffix"
port_of() {
  case $1 in
    datagen) echo $((PORT_BASE + 1)) ;;
    service-stg) echo $((PORT_BASE + 2)) ;;
    service-dds) echo $((PORT_BASE + 3)) ;;
    service-cdm) echo $((PORT_BASE + 4)) ;;
  esac
}
topics_of() {
  case $1 in
    datagen) echo "- $raw -" ;;
    service-stg) echo "$raw $enriched service-stg-$suffix" ;;
    service-dds) echo "$enriched $counters service-dds-$suffix" ;;
    service-cdm) echo "$counters $tags service-cdm-$suffix" ;;
  esac
}

for service in "${SERVICES[@]}"; do
  read -r source destination group <<<"$(topics_of "$service")"
  env DATABASE_URL="$CHECK_URL" REDIS_URL="$CHECK_REDIS" KAFKA_BOOTSTRAP_SERVERS="$KAFKA_BOOTSTRAP_SERVERS" \
    KAFKA_SOURCE_TOPIC="$source" KAFKA_DESTINATION_TOPIC="$destination" KAFKA_CONSUMER_GROUP="$group" \
    PIPELINE_STG_TOPIC="$raw" PIPELINE_STG_GROUP="service-stg-$suffix" \
    PIPELINE_DDS_TOPIC="$enriched" PIPELINE_DDS_GROUP="service-dds-$suffix" \
    PIPELINE_CDM_TOPIC="$counters" PIPELINE_CDM_GROUP="service-cdm-$suffix" \
    HTTP_HOST=127.0.0.1 HTTP_PORT="$(port_of "$service")" RUST_LOG=warn \
    "$BIN/$service" >"$WORK/$service.log" 2>&1 &
  pids+=("$!")
  say "started $service (pid $!, http 127.0.0.1:$(port_of "$service"), log $WORK/$service.log)"
done

for service in "${SERVICES[@]}"; do
  for attempt in $(seq 1 600); do
    curl -fsS "http://127.0.0.1:$(port_of "$service")/health" >/dev/null 2>&1 && break
    if ((attempt == 600)); then
      tail -n 20 "$WORK/$service.log" >&2
      die "$service not healthy after 120 s"
    fi
    sleep 0.2
  done
done
say "all four healthy"

API=http://127.0.0.1:$(port_of service-cdm)
readonly API
psql_check() { psql "$CHECK_URL" -X -q -At -v ON_ERROR_STOP=1 "$@"; }

say "pushing $ORDERS orders"
curl -fsS -X POST -H 'Content-Type: application/json' -d "{\"N\": $ORDERS}" \
  "http://127.0.0.1:$(port_of datagen)/push" >/dev/null
wait_for() {
  local what=$1 sql=$2 attempt
  for attempt in $(seq 1 600); do
    [[ $(psql_check -c "$sql") == t ]] && return
    ((attempt == 600)) && die "$what: not within 120 s"
    sleep 0.2
  done
}
wait_for "orders in the datamart" "SELECT count(*) > 0 FROM cdm.user_category_counters"
# A rule held by somebody, so that the holders' route has pages to serve.
psql_check -c "INSERT INTO cdm.tag_rules (tag, scope, target, threshold) \
  SELECT 'Fan of ' || category_name, 'category', category_name, 1 FROM cdm.user_category_counters \
  WHERE order_cnt > 0 GROUP BY category_name ORDER BY count(*) DESC LIMIT 1"
wait_for "the rule's holders" "SELECT count(*) > 0 FROM cdm.user_tags"
say "datamart: $(psql_check -c "SELECT count(*) FROM cdm.order_state") orders," \
  "$(psql_check -c "SELECT count(*) FROM cdm.user_tags") tag holders"

# curl and schemathesis both take --header.
auth=()
[[ -n ${API_TOKEN:-} ]] && auth=(--header "Authorization: Bearer $API_TOKEN")

# Uptime checkers ask with HEAD, which the document does not list (schemathesis leaves it out).
for path in /api/v1/tags /api/v1/summary /api/v1/openapi.json / /health /metrics; do
  status=$(curl -sS -I -o /dev/null -w '%{http_code}' "${auth[@]}" "$API$path")
  [[ $status == 200 ]] || die "HEAD $path answered $status, not 200"
done
say "HEAD: 200 on the API, /, /health and /metrics"

say "schemathesis: at most $MAX_EXAMPLES cases per operation, $MAX_SECONDS s in all"
"$st_bin/schemathesis" run docs/openapi.json --url "$API" "${auth[@]}" \
  --checks all --max-examples "$MAX_EXAMPLES" --max-time "$MAX_SECONDS" --seed 16 \
  --workers 2 --request-timeout 10 --suppress-health-check too_slow --generation-database none --no-color
say "done: the API answers as docs/openapi.json says"
