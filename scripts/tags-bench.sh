#!/usr/bin/env bash
# How long a tag rule takes to apply over many users (docs/tags.md): a scratch warehouse with
# USERS users' category counters (order_cnt 1..20, evenly), the real service-cdm (release build)
# running against it, then a rule added, raised and deleted; each time it prints how long the
# recompute took (`cdm.tag_rules_applied.took_ms`, measured by service-cdm), how many users it
# settled, and the tags and events that resulted, then how long the outbox took to publish.
#
#   scripts/tags-bench.sh                 1,000,000 users
#   TAGS_BENCH_USERS=200000 scripts/tags-bench.sh
#
# Bounded: every wait gives up after TAGS_BENCH_TIMEOUT seconds (default 900). The scratch
# database is dropped at the end.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO_ROOT
cd "$REPO_ROOT"

readonly USERS=${TAGS_BENCH_USERS:-1000000}
readonly TIMEOUT=${TAGS_BENCH_TIMEOUT:-900}
readonly DB=vaultline_tags_bench
readonly LOG=.stack/logs/tags-bench-service-cdm.log

say() { printf '[tags-bench] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

eval "$(scripts/stack.sh up)"
export KAFKA_BOOTSTRAP_SERVERS
admin_url=$DATABASE_URL
bench_url=${admin_url%/*}/$DB
sql() { psql "$bench_url" -qAt -v ON_ERROR_STOP=1 -c "$1"; }
# Seconds since a `date +%s%N` reading, with one decimal.
seconds_since() { local ms=$((($(date +%s%N) - $1) / 1000000)); printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100)); }

say "building the release binaries"
cargo build --release --quiet -p service-cdm -p vaultctl --bins

psql "$admin_url" -qAt -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null
cdm_pid=
cleanup() {
  if [[ -n $cdm_pid ]]; then kill -TERM "$cdm_pid" 2>/dev/null && wait "$cdm_pid" 2>/dev/null; fi
  psql "$admin_url" -qAt -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT

DATABASE_URL=$bench_url target/release/vaultctl migrate >/dev/null
say "filling $USERS users' counters of category 'Bench' (order_cnt 1..20)"
started=$(date +%s%N)
sql "INSERT INTO cdm.user_category_counters (user_id, category_id, category_name, order_cnt)
     SELECT md5('user-' || g)::uuid, bi.hash_key('Bench'), 'Bench', 1 + g % 20
     FROM generate_series(1, $USERS) AS g"
sql "ANALYZE cdm.user_category_counters"
say "filled in $(seconds_since "$started") s"

topic=tags_bench_$(date +%s)
mkdir -p "$(dirname "$LOG")"
DATABASE_URL=$bench_url KAFKA_SOURCE_TOPIC=${topic}_in KAFKA_DESTINATION_TOPIC=${topic}_out \
  KAFKA_CONSUMER_GROUP=$topic KAFKA_TOPIC_PARTITIONS=1 HTTP_HOST=127.0.0.1 HTTP_PORT=0 \
  target/release/service-cdm >"$LOG" 2>&1 &
cdm_pid=$!

# Waits until the tags reflect the rules (no recompute pending); prints the seconds it took.
await_applied() {
  local from=$1 deadline=$((SECONDS + TIMEOUT))
  until [[ $(sql "SELECT count(*) FROM (
                    SELECT tag, scope, target, threshold FROM cdm.tag_rules WHERE enabled
                    EXCEPT SELECT tag, scope, target, threshold FROM cdm.tag_rules_applied) a") == 0 &&
           $(sql "SELECT count(*) FROM cdm.tag_rules_applied a WHERE NOT EXISTS (
                    SELECT 1 FROM cdm.tag_rules r WHERE r.enabled AND r.tag = a.tag
                    AND r.threshold = a.threshold)") == 0 ]]; do
    ((SECONDS < deadline)) || die "the rule was not applied within $TIMEOUT s (log: $LOG)"
    kill -0 "$cdm_pid" 2>/dev/null || die "service-cdm exited (log: $LOG)"
    sleep 0.2
  done
  seconds_since "$from"
}

report() {
  local what=$1 from=$2 waited
  waited=$(await_applied "$from")
  local applied
  applied=$(sql "SELECT coalesce(max(took_ms)::text || ' ms over ' || max(users) || ' users', 'rule gone')
                 FROM cdm.tag_rules_applied")
  printf '%-34s applied after %6s s   recompute %s   holders %s   events %s\n' "$what" "$waited" \
    "$applied" "$(sql "SELECT count(*) FROM cdm.user_tags")" \
    "$(sql "SELECT count(*) FROM cdm.user_tag_events")"
}

start=$(date +%s%N)
sql "INSERT INTO cdm.tag_rules (tag, scope, target, threshold) VALUES ('Bench Lover', 'category', 'Bench', 10)"
report "rule added (threshold 10)" "$start"
start=$(date +%s%N)
sql "UPDATE cdm.tag_rules SET threshold = 15 WHERE tag = 'Bench Lover'"
report "threshold raised to 15" "$start"
start=$(date +%s%N)
sql "DELETE FROM cdm.tag_rules WHERE tag = 'Bench Lover'"
report "rule deleted" "$start"

deadline=$((SECONDS + TIMEOUT))
until [[ $(sql "SELECT count(*) FROM cdm.user_tag_events WHERE published_at IS NULL") == 0 ]]; do
  ((SECONDS < deadline)) || die "the outbox was not published within $TIMEOUT s"
  sleep 0.5
done
printf '%-34s %s events, first at %s, last published at %s\n' "outbox published" \
  "$(sql "SELECT count(*) FROM cdm.user_tag_events")" \
  "$(sql "SELECT to_char(min(at), 'HH24:MI:SS.MS') FROM cdm.user_tag_events")" \
  "$(sql "SELECT to_char(max(published_at), 'HH24:MI:SS.MS') FROM cdm.user_tag_events")"
