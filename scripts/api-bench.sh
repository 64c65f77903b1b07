#!/usr/bin/env bash
# Measures service-cdm's read API (docs/contract.md §6.4, §6.5) under load with wrk, on a
# scratch warehouse about a million orders big, generated directly in SQL:
#
#   BENCH_USERS users (default 200,000), 5 orders each on average (cdm.order_state: 1,000,000
#   rows, 80% counted), ~4 category counters and 10 dish counters per user (~0.8M and 2M rows),
#   10 tag rules and their holders (cdm.user_tags, exact for the rules), 300 dead letters.
#
#   scripts/api-bench.sh            build (release), generate, run wrk on each route, clean up
#
# Each route is loaded for BENCH_DURATION (default 10s) with BENCH_CONNECTIONS connections
# (default 16) on 2 wrk threads; per-user and per-page routes pick a random user or cursor per
# request (a wrk Lua script). The service runs on 127.0.0.1:BENCH_PORT (default 55014) against
# the scratch database `vaultline_api_bench`, which is dropped at the end (BENCH_KEEP=1 keeps
# it). The results are what docs/api-bench.md reports.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO_ROOT
cd "$REPO_ROOT"

readonly USERS=${BENCH_USERS:-200000}
readonly DURATION=${BENCH_DURATION:-10s}
readonly CONNECTIONS=${BENCH_CONNECTIONS:-16}
readonly PORT=${BENCH_PORT:-55014}
readonly DB=vaultline_api_bench
readonly TARGET=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
WORK=$(mktemp -d)
readonly WORK

log() { printf '[api-bench] %s\n' "$*" >&2; }

command -v wrk >/dev/null || { log "wrk is missing: apt-get install -y wrk"; exit 1; }
command -v psql >/dev/null || { log "psql is missing: apt-get install -y postgresql-client"; exit 1; }

eval "$(scripts/stack.sh up)"
# The stack's API_TOKEN (exported above) is the service's too: every request carries it.
readonly AUTH="Authorization: Bearer $API_TOKEN"
# The stack's DATABASE_URL names the dwh database: the scratch one sits beside it.
readonly ADMIN_URL=$DATABASE_URL
readonly BENCH_URL=${DATABASE_URL%/*}/$DB

log "building service-cdm (release)"
cargo build --release -p service-cdm --quiet

service_pid=""
cleanup() {
  if [[ -n $service_pid ]]; then
    kill -TERM "$service_pid" 2>/dev/null || true
    wait "$service_pid" 2>/dev/null || true
  fi
  if [[ ${BENCH_KEEP:-0} != 1 ]]; then
    psql "$ADMIN_URL" -X -q -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

psql "$ADMIN_URL" -X -q -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"

# A topic of its own, so that nothing flows into the datamart during the measurement.
topic="bench_cdm_$(date +%s)"
log "starting service-cdm on 127.0.0.1:$PORT (log: $WORK/service-cdm.log)"
env DATABASE_URL="$BENCH_URL" KAFKA_BOOTSTRAP_SERVERS="$KAFKA_BOOTSTRAP_SERVERS" \
  KAFKA_SOURCE_TOPIC="$topic" KAFKA_CONSUMER_GROUP="bench-$topic" PIPELINE_CDM_TOPIC="$topic" \
  HTTP_HOST=127.0.0.1 HTTP_PORT="$PORT" RUST_LOG=warn \
  "$TARGET/release/service-cdm" >"$WORK/service-cdm.log" 2>&1 &
service_pid=$!

# The service applies the migrations at start; the schema is there once the API answers.
for _ in $(seq 1 300); do
  if curl -fsS -H "$AUTH" "http://127.0.0.1:$PORT/api/v1/tags" >/dev/null 2>&1; then break; fi
  kill -0 "$service_pid" 2>/dev/null || { cat "$WORK/service-cdm.log" >&2; exit 1; }
  sleep 0.2
done
curl -fsS -H "$AUTH" "http://127.0.0.1:$PORT/api/v1/tags" >/dev/null

log "generating the warehouse: $USERS users"
start=$SECONDS
psql "$BENCH_URL" -X -q -v ON_ERROR_STOP=1 -v users="$USERS" <<'SQL'
CREATE EXTENSION IF NOT EXISTS "uuid-ossp";
-- Users: the source id is i in 24 hex digits; the hub key as the services compute it.
CREATE TEMP TABLE u AS
  SELECT i, uuid_generate_v3(uuid_ns_x500(), lpad(to_hex(i), 24, '0')) AS user_id
  FROM generate_series(1, :users) i;
CREATE TEMP TABLE c AS
  SELECT n, name, uuid_generate_v3(uuid_ns_x500(), name) AS category_id
  FROM unnest(ARRAY['Пицца','Выпечка','Суши','Супы','Салаты','Десерты','Напитки','Бургеры',
                    'Паста','Завтраки','Гриль',''])
       WITH ORDINALITY AS x(name, n);
CREATE TEMP TABLE p AS
  SELECT j, lpad(to_hex(1000000 + j), 24, '0') AS source,
         uuid_generate_v3(uuid_ns_x500(), lpad(to_hex(1000000 + j), 24, '0')) AS product_id,
         'Блюдо ' || j AS name
  FROM generate_series(0, 599) j;
INSERT INTO cdm.user_category_counters (user_id, category_id, category_name, order_cnt)
  SELECT u.user_id, c.category_id, c.name, 1 + (u.i * 7 + c.n * 13) % 6
  FROM u JOIN c ON (u.i + c.n) % 3 = 0;
INSERT INTO cdm.user_product_counters (user_id, product_id, product_name, order_cnt)
  SELECT u.user_id, p.product_id, p.name, 1 + (u.i + k) % 4
  FROM u CROSS JOIN generate_series(0, 9) k JOIN p ON p.j = (u.i * 31 + k * 61) % 600;
INSERT INTO cdm.order_state (order_id, user_id, update_ts, counted)
  SELECT uuid_generate_v3(uuid_ns_x500(), o::text),
         uuid_generate_v3(uuid_ns_x500(), lpad(to_hex(1 + o % :users), 24, '0')),
         now() - make_interval(secs => o), o % 5 <> 0
  FROM generate_series(1, 5 * :users) o;
-- The rules, their holders and their applied state in one transaction: service-cdm's rule
-- watcher would otherwise see rules not applied yet and write the same holders concurrently.
BEGIN;
INSERT INTO cdm.tag_rules (tag, scope, target, threshold, description)
  SELECT 'Любитель: ' || CASE name WHEN '' THEN 'без категории' ELSE name END, 'category', name,
         2 + n % 4, 'at least ' || (2 + n % 4) || ' orders in ' || name
  FROM c WHERE n <= 8;
INSERT INTO cdm.tag_rules (tag, scope, target, threshold)
  SELECT 'Fan of ' || name, 'product', source, 3 FROM p WHERE j IN (7, 42);
INSERT INTO cdm.user_tags (user_id, tag, order_cnt)
  SELECT k.user_id, r.tag, k.order_cnt FROM cdm.tag_rules r
  JOIN cdm.user_category_counters k ON r.scope = 'category'
   AND k.category_id = uuid_generate_v3(uuid_ns_x500(), r.target) AND k.order_cnt >= r.threshold
  UNION ALL
  SELECT k.user_id, r.tag, k.order_cnt FROM cdm.tag_rules r
  JOIN cdm.user_product_counters k ON r.scope = 'product'
   AND k.product_id = uuid_generate_v3(uuid_ns_x500(), r.target) AND k.order_cnt >= r.threshold;
INSERT INTO cdm.tag_rules_applied (tag, scope, target, threshold, took_ms, users)
  SELECT tag, scope, target, threshold, 100 + length(tag), 0 FROM cdm.tag_rules;
COMMIT;
INSERT INTO ops.dead_letters (service, topic, partition, "offset", payload, error_kind, reason)
  SELECT (ARRAY['service-stg','service-dds','service-cdm'])[1 + d % 3], 'bench', 0, d,
         '{}'::bytea, 'invalid_json', 'generated'
  FROM generate_series(1, 300) d;
VACUUM ANALYZE;
SQL
log "generated in $((SECONDS - start)) s:"
psql "$BENCH_URL" -X -A -t -F ' ' -c "
  SELECT 'order_state', count(*) FROM cdm.order_state UNION ALL
  SELECT 'user_category_counters', count(*) FROM cdm.user_category_counters UNION ALL
  SELECT 'user_product_counters', count(*) FROM cdm.user_product_counters UNION ALL
  SELECT 'user_tags', count(*) FROM cdm.user_tags UNION ALL
  SELECT 'tag_rules', count(*) FROM cdm.tag_rules" | sed 's/^/  /' >&2

# A random user (source id or hub key) per request; a random page of the biggest tag.
user_script() {
  cat <<LUA
math.randomseed(42)
request = function()
  local id = string.format("%024x", math.random(1, $USERS))
  return wrk.format("GET", "/api/v1/users/" .. id .. "/$1")
end
LUA
}
user_script counters >"$WORK/counters.lua"
user_script tags >"$WORK/tags.lua"
big_tag=$(psql "$BENCH_URL" -X -A -t -c "SELECT tag FROM cdm.user_tags GROUP BY tag ORDER BY count(*) DESC LIMIT 1")
encoded_tag=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$big_tag")
cat >"$WORK/page.lua" <<LUA
math.randomseed(42)
request = function()
  local cursor = ""
  for _ = 1, 8 do cursor = cursor .. string.format("%04x", math.random(0, 65535)) end
  return wrk.format("GET", "/api/v1/tags/$encoded_tag/users?limit=100&after=" .. cursor)
end
LUA

base="http://127.0.0.1:$PORT"
bench() {
  local name=$1 url=$2 script=${3:-}
  printf '\n### %s\n' "$name"
  if [[ -n $script ]]; then
    wrk -H "$AUTH" -t2 -c"$CONNECTIONS" -d"$DURATION" --timeout 5s --latency -s "$script" "$url"
  else
    wrk -H "$AUTH" -t2 -c"$CONNECTIONS" -d"$DURATION" --timeout 5s --latency "$url"
  fi
}
# One request first, so that the warm-up (connections, first aggregate) is not measured.
for path in /api/v1/tags /api/v1/summary /api/v1/pipeline /; do
  curl -fsS -H "$AUTH" -o /dev/null "$base$path"
done
bench "GET /api/v1/users/{user}/counters (random user)" "$base" "$WORK/counters.lua"
bench "GET /api/v1/users/{user}/tags (random user)" "$base" "$WORK/tags.lua"
bench "GET /api/v1/tags" "$base/api/v1/tags"
bench "GET /api/v1/tags/{tag}/users?limit=100 (first page of '$big_tag')" "$base/api/v1/tags/$encoded_tag/users?limit=100"
bench "GET /api/v1/tags/{tag}/users?limit=100&after=<random cursor>" "$base" "$WORK/page.lua"
bench "GET /api/v1/summary" "$base/api/v1/summary"
bench "GET /api/v1/pipeline" "$base/api/v1/pipeline"
bench "GET / (dashboard page)" "$base/"

printf '\n### Uncached aggregates (what one summary refresh costs, psql \\timing)\n'
psql "$BENCH_URL" -X -q -c '\timing on' \
  -c "SELECT count(*), count(*) FILTER (WHERE counted) FROM cdm.order_state" \
  -c "SELECT tag, count(*) FROM cdm.user_tags GROUP BY tag" \
  -c "SELECT category_id, sum(order_cnt) FROM cdm.user_category_counters GROUP BY 1 ORDER BY 2 DESC LIMIT 10" \
  -c "SELECT product_id, sum(order_cnt) FROM cdm.user_product_counters GROUP BY 1 ORDER BY 2 DESC LIMIT 10" \
  | grep -E '^Time'
