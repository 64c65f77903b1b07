#!/usr/bin/env bash
# The main job: the whole pipeline on a local stack, with data pushed through it.
#
#   scripts/run.sh          stack up, build (dev profile; VAULTLINE_PROFILE=release for the
#                           optimised build), start datagen + the three services (HTTP 5011-5014),
#                           push VAULTLINE_PUSH orders (default 10000), wait until the datamarts
#                           reflect them, print a summary; the services keep running
#   scripts/run.sh start    the same up to the health checks, without pushing anything
#   scripts/run.sh stop     stop the services this script started
#
# Logs: .stack/logs/<service>.log. Health: curl 127.0.0.1:501{1,2,3,4}/health.
# VAULTLINE_REPLICAS=N runs N of each pipeline service (a service's replicas share its consumer
# group; ports 5022-5024 for the second, ...), with KAFKA_TOPIC_PARTITIONS partitions (default 3)
# per topic.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO_ROOT
cd "$REPO_ROOT"

readonly SERVICES=(datagen service-stg service-dds service-cdm)
readonly RUN_DIR=.stack/run
readonly LOG_DIR=.stack/logs
readonly PUSH=${VAULTLINE_PUSH:-10000}
readonly REPLICAS=${VAULTLINE_REPLICAS:-1}
readonly WAIT_SECONDS=${VAULTLINE_WAIT_SECONDS:-900}
# Cargo's dev profile by default: a third less to compile than release, which is what makes the
# first result on a fresh machine come within 10 minutes, and the build the tests reuse; still
# thousands of orders a second here. VAULTLINE_PROFILE=release for the optimised build (what
# scripts/bench.sh measures and the image ships).
readonly PROFILE=${VAULTLINE_PROFILE:-dev}
case $PROFILE in
  dev) BIN=target/debug ;;
  release) BIN=target/release ;;
  *)
    printf '[run] VAULTLINE_PROFILE: "%s" is not dev or release\n' "$PROFILE" >&2
    exit 2
    ;;
esac
readonly BIN
# librdkafka (rdkafka-sys) is C that its own configure compiles at -O2 -g whatever Cargo's
# profile; in a dev build it is unoptimised like the rest: 65 CPU-seconds to build instead of
# 142 (docs/performance.md, "Build costs"). rdkafka-sys does not rebuild when CFLAGS change, so
# this only shapes its first build in target/debug; release builds are left as they are.
with_dev_cflags=()
if [[ $PROFILE == dev ]]; then
  with_dev_cflags=(env "CFLAGS=${CFLAGS:--O0 -g0}" "CXXFLAGS=${CXXFLAGS:--O0 -g0}")
fi
readonly with_dev_cflags
PROFILE_NOTE=
[[ $PROFILE == release ]] || PROFILE_NOTE='; VAULTLINE_PROFILE=release for the optimised one'
readonly PROFILE_NOTE

say() { printf '[run] %s\n' "$*" >&2; }

port_of() {
  case $1 in
    datagen) echo 5011 ;;
    service-stg) echo 5012 ;;
    service-dds) echo 5013 ;;
    service-cdm) echo 5014 ;;
  esac
}

# Every process this script starts, one per line: its name (the pid and log files'), its
# binary and its HTTP port. VAULTLINE_REPLICAS (default 1) runs more than one of each pipeline
# service, as the scale-out benchmark does: replica r > 1 is <service>-<r>, on the port
# 10 × (r - 1) above the first's.
instances() {
  local service r
  for service in "${SERVICES[@]}"; do
    printf '%s %s %s\n' "$service" "$service" "$(port_of "$service")"
    [[ $service == datagen ]] && continue
    for ((r = 2; r <= REPLICAS; r++)); do
      printf '%s-%s %s %s\n' "$service" "$r" "$service" $(($(port_of "$service") + 10 * (r - 1)))
    done
  done
}

stop_services() {
  local file service pid
  for file in "$RUN_DIR"/*.pid; do
    [[ -f $file ]] || continue
    service=$(basename "$file" .pid)
    pid=$(<"$file")
    # Only our own process: a pid file can outlive its process, and the pid be reused.
    if kill -0 "$pid" 2>/dev/null && grep -qa "${service%-[0-9]*}" "/proc/$pid/cmdline" 2>/dev/null; then
      say "stopping $service (pid $pid)"
      kill -TERM "$pid"
      for _ in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
    rm -f "$file"
  done
}

if [[ ${1:-} == stop ]]; then
  stop_services
  exit 0
fi

# The services build while the stack comes up: on a fresh machine that is the installation of
# Postgres, Redis, a JRE and Maven and the download of Kafka's jars, which leave the cores
# mostly idle (docs/performance.md, "A fresh machine").
stack_env=$(scripts/stack.sh up --beside "$LOG_DIR/build.log" -- "${with_dev_cflags[@]}" \
  cargo build --profile "$PROFILE" --bin datagen --bin service-stg --bin service-dds --bin service-cdm \
  --bin vaultctl)
eval "$stack_env"
export KAFKA_BOOTSTRAP_SERVERS DATABASE_URL REDIS_URL API_TOKEN

stop_services
mkdir -p "$RUN_DIR" "$LOG_DIR"
while read -r service binary port; do
  HTTP_HOST=127.0.0.1 HTTP_PORT=$port KAFKA_TOPIC_PARTITIONS=${KAFKA_TOPIC_PARTITIONS:-3} \
    nohup "$BIN/$binary" </dev/null >"$LOG_DIR/$service.log" 2>&1 &
  echo $! >"$RUN_DIR/$service.pid"
  say "started $service (pid $!, http 127.0.0.1:$port)"
done < <(instances)

while read -r service _ port; do
  for attempt in $(seq 1 600); do
    if curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; then
      break
    fi
    if ! kill -0 "$(<"$RUN_DIR/$service.pid")" 2>/dev/null; then
      say "$service exited; its log:"
      tail -n 20 "$LOG_DIR/$service.log" >&2
      exit 1
    fi
    ((attempt == 600)) && { say "$service not healthy after 60 s; see $LOG_DIR/$service.log"; exit 1; }
    sleep 0.1
  done
  say "$service healthy"
done < <(instances)

if [[ ${1:-} == start ]]; then
  say "services are running; stop them with scripts/run.sh stop"
  exit 0
fi

say "pushing $PUSH orders"
started=$(date +%s.%N)
response=$(curl -fsS -X POST -H 'Content-Type: application/json' \
  -d "{\"N\": $PUSH}" http://127.0.0.1:5011/push)
say "datagen: $response"

say "waiting for the pipeline to catch up"
"$BIN/vaultctl" lag --wait "$WAIT_SECONDS" >&2
finished=$(date +%s.%N)
elapsed=$(awk -v a="$started" -v b="$finished" 'BEGIN { printf "%.3f", b - a }')

echo
# The orders of this push and how far they came, the counter check (the recount `vaultctl
# verify` reads), pending dead letters and the top categories.
"$BIN/vaultctl" summary --push "$response" --seconds "$elapsed"
echo
echo "Built with the $PROFILE profile${PROFILE_NOTE}."
cat <<TAIL
The services keep running, on 127.0.0.1 only (health: curl 127.0.0.1:5011/health ... 5014/health;
push more: curl -X POST -d '{"N": 1000}' 127.0.0.1:5011/push). Stop them: scripts/run.sh stop
Dashboard: http://127.0.0.1:5014/#token=$API_TOKEN
Read API:  curl -H "Authorization: Bearer \$API_TOKEN" 127.0.0.1:5014/api/v1/summary
           (API_TOKEN is in .stack/api-token; eval "\$(scripts/stack.sh env)" exports it)
TAIL
