#!/usr/bin/env bash
# Brings up, stops and reports Vaultline's local stack: Postgres (database dwh), Redis and a
# Kafka-protocol broker (Nisshi), all on 127.0.0.1.
#
#   scripts/stack.sh up       start what is not running, wait until ready, print the settings
#   scripts/stack.sh down     stop what this script started (never services it found running)
#   scripts/stack.sh status   print each component up or down
#   scripts/stack.sh env      print the settings as export lines
#   scripts/stack.sh up --beside LOG -- COMMAND...
#                             the same, running COMMAND (a build) in the background from the
#                             moment the build tools are installed, its output in LOG; `up`
#                             succeeds once both are done (on a fresh machine: the broker's
#                             build, Postgres and Redis installed, and COMMAND share the cores)
#   scripts/stack.sh restart-kafka
#                             stop the broker this script started and start a fresh one (its
#                             memory storage starts empty: what the benchmark measures from)
#
# VAULTLINE_DB names the database (default dwh; the benchmark uses its own).
# VAULTLINE_BROKER_SQLITE=1: the broker binary (NISSHI_BIN) must have Nisshi's SQLite engine
# too, for the tests' private brokers (scripts/test.sh sets it); the default builds the broker
# with the memory engine only, which is all the stack's own broker uses.
# `up` and `env` print only the export lines on stdout (progress goes to stderr), so
# `eval "$(scripts/stack.sh up)"` configures the current shell.
#
# Whatever already listens on a port is reused. As root on Debian, missing Postgres/Redis are
# installed with apt-get; elsewhere the script says what to install. What the script started
# is recorded under .stack/ in the repository root, where the broker's pid and log live too.
set -euo pipefail

readonly NISSHI_VERSION=0.8.1
readonly HOST=127.0.0.1
readonly KAFKA_PORT=9092
readonly PG_PORT=5432
readonly REDIS_PORT=6379
readonly DB_NAME=${VAULTLINE_DB:-dwh}
[[ $DB_NAME =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || {
  printf '[stack] VAULTLINE_DB: "%s" is not a plain lower-case database name\n' "$DB_NAME" >&2
  exit 2
}
# Kafka waits 3 s by default before the first rebalance of an empty group, for more members to
# join; every test and every service start would pay it. Dev compose files set it to 0 too.
readonly GROUP_REBALANCE_DELAY=${VAULTLINE_GROUP_REBALANCE_DELAY:-0s}
# How long each component may take to become ready.
readonly READY_TIMEOUT_S=${VAULTLINE_READY_TIMEOUT:-60}
# 1: the broker binary must have the SQLite engine too (the tests' private brokers use it;
# scripts/test.sh sets it). The shared broker itself keeps everything in memory.
readonly BROKER_SQLITE=${VAULTLINE_BROKER_SQLITE:-0}
[[ $BROKER_SQLITE == [01] ]] || {
  printf '[stack] VAULTLINE_BROKER_SQLITE: "%s" is not 0 or 1\n' "$BROKER_SQLITE" >&2
  exit 2
}

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO_ROOT
readonly STATE_DIR="$REPO_ROOT/.stack"
readonly CACHE_DIR="${VAULTLINE_CACHE:-$HOME/.cache/vaultline}"

log() { printf '[stack] %s\n' "$*" >&2; }
die() {
  printf '[stack] error: %s\n' "$*" >&2
  exit 1
}

is_root() { [[ $(id -u) -eq 0 ]]; }

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
  timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null
}

# Polls "$@" every 0.2 s until it succeeds; fails after READY_TIMEOUT_S seconds.
wait_for() {
  local what=$1
  shift
  local deadline=$((SECONDS + READY_TIMEOUT_S))
  until "$@"; do
    if ((SECONDS >= deadline)); then
      die "$what was not ready after ${READY_TIMEOUT_S}s"
    fi
    sleep 0.2
  done
}

# True when the process in pid file $1 is alive and its command line contains $2 (a recycled
# pid must not be mistaken for ours).
pid_alive() {
  local pid_file=$1 name=$2 pid
  [[ -f $pid_file ]] || return 1
  pid=$(<"$pid_file")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$name"
}

# --- packages ---------------------------------------------------------------------------------

APT_UPDATED=0
# Installs the Debian packages given, as root only; otherwise says what to install and fails.
apt_install() {
  if ! is_root || ! command -v apt-get >/dev/null; then
    die "missing $*: install it (Debian/Ubuntu: sudo apt-get install -y $*; macOS: brew install $*) or run it on 127.0.0.1, then rerun"
  fi
  # dpkg's progress goes to a log: the terminal gets one line per step, or the log's end.
  mkdir -p "$STATE_DIR/logs"
  local apt_log="$STATE_DIR/logs/apt.log"
  # Package lists fetched in the last hour (by an earlier step: `tools`, then `up`) will do.
  if ((APT_UPDATED == 0)) && find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -60 2>/dev/null | grep -q .; then
    APT_UPDATED=1
  fi
  if ((APT_UPDATED == 0)); then
    log "apt-get update (log: $apt_log)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >>"$apt_log" 2>&1 ||
      die "apt-get update failed; the end of $apt_log: $(tail -n 5 "$apt_log")"
    APT_UPDATED=1
  fi
  log "apt-get install $* (log: $apt_log)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" \
    </dev/null >>"$apt_log" 2>&1 ||
    die "apt-get install $* failed; the end of $apt_log: $(tail -n 5 "$apt_log")"
}

# --- build tools ------------------------------------------------------------------------------

# What building Vaultline and the broker needs (librdkafka is compiled with OpenSSL and zlib),
# and curl for scripts/run.sh: installed when missing, as root on Debian.
build_tools_up() {
  local missing=()
  command -v cc >/dev/null && command -v make >/dev/null || missing+=(build-essential)
  command -v pkg-config >/dev/null || missing+=(pkg-config)
  [[ -e /usr/include/openssl/ssl.h ]] || missing+=(libssl-dev)
  [[ -e /usr/include/zlib.h ]] || missing+=(zlib1g-dev)
  command -v curl >/dev/null || missing+=(curl)
  ((${#missing[@]} == 0)) || apt_install "${missing[@]}"
}

# --- Postgres ---------------------------------------------------------------------------------

pg_ready() {
  pg_isready -q -h "$HOST" -p "$PG_PORT" -t 1
}

pg_cluster_version() {
  find /etc/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null | sort -V | tail -n 1
}

# psql as the postgres role over TCP, which is what the services and tests use.
pg_sql() {
  psql "postgres://postgres@$HOST:$PG_PORT/postgres" -X -q -t -A -v ON_ERROR_STOP=1 -c "$1"
}

# Debian's default pg_hba.conf asks for a password over TCP. Only on a machine where this
# script installed Postgres (or in CI) does it trust loopback connections instead; anywhere
# else it says what to change.
pg_trust_loopback() {
  local version=$1 hba
  hba="/etc/postgresql/$version/main/pg_hba.conf"
  if [[ ! -f $STATE_DIR/postgres.installed && ${CI:-} != true ]] || ! is_root || [[ ! -f $hba ]]; then
    die "Postgres at $HOST:$PG_PORT refuses user postgres without a password; allow it (pg_hba.conf: host all postgres 127.0.0.1/32 trust) or export DATABASE_URL with a password"
  fi
  log "trusting loopback connections in $hba"
  {
    printf '# Added by vaultline scripts/stack.sh: loopback only.\n'
    printf 'host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n'
    cat "$hba"
  } >"$hba.vaultline"
  cat "$hba.vaultline" >"$hba"
  rm -f "$hba.vaultline"
  pg_ctlcluster --skip-systemctl-redirect "$version" main reload >&2
}

postgres_up() {
  if pg_ready 2>/dev/null || port_open "$PG_PORT"; then
    log "Postgres: already running on $HOST:$PG_PORT"
  else
    if ! command -v pg_ctlcluster >/dev/null; then
      apt_install postgresql postgresql-client
      touch "$STATE_DIR/postgres.installed"
    fi
    local version
    version=$(pg_cluster_version)
    [[ -n $version ]] || die "Postgres is installed but has no cluster under /etc/postgresql"
    if pg_ready 2>/dev/null; then
      # The package's install script may have started the new cluster itself.
      log "Postgres: cluster $version/main is running"
    elif ! is_root; then
      die "Postgres is not running: start it (sudo pg_ctlcluster $version main start) and rerun"
    else
      log "Postgres: starting cluster $version/main"
      pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 8>&-
      printf '%s\n' "$version" >"$STATE_DIR/postgres.started"
    fi
  fi
  command -v psql >/dev/null || apt_install postgresql-client
  wait_for "Postgres" pg_ready

  if ! pg_sql 'SELECT 1' >/dev/null 2>&1; then
    pg_trust_loopback "$(pg_cluster_version)"
    pg_sql 'SELECT 1' >/dev/null || die "cannot connect to Postgres as postgres@$HOST:$PG_PORT"
  fi
  if [[ $(pg_sql "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'") != 1 ]]; then
    log "Postgres: creating database $DB_NAME"
    pg_sql "CREATE DATABASE $DB_NAME" >/dev/null
  fi
}

postgres_down() {
  if [[ -f $STATE_DIR/postgres.started ]]; then
    local version
    version=$(<"$STATE_DIR/postgres.started")
    log "Postgres: stopping cluster $version/main (started by this script)"
    pg_ctlcluster --skip-systemctl-redirect "$version" main stop >&2 || true
    rm -f "$STATE_DIR/postgres.started"
  elif pg_ready 2>/dev/null; then
    log "Postgres: left running (not started by this script)"
  fi
}

# --- Redis ------------------------------------------------------------------------------------

redis_ready() {
  local answer
  answer=$(timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$REDIS_PORT && printf 'PING\r\n' >&3 && head -c 5 <&3" 2>/dev/null) || return 1
  [[ $answer == "+PONG" ]]
}

redis_up() {
  if port_open "$REDIS_PORT"; then
    log "Redis: already running on $HOST:$REDIS_PORT"
  else
    command -v redis-server >/dev/null || apt_install redis-server
    local dir=/var/lib/redis logfile=/var/log/redis/ci.log
    if ! is_root; then
      dir="$STATE_DIR/redis"
      logfile="$STATE_DIR/redis.log"
    fi
    mkdir -p "$dir" "$(dirname "$logfile")"
    log "Redis: starting on $HOST:$REDIS_PORT"
    redis-server --daemonize yes --bind "$HOST" --port "$REDIS_PORT" --save "" --appendonly no \
      --dir "$dir" --logfile "$logfile" --pidfile "$STATE_DIR/redis.pid" >&2 8>&-
    touch "$STATE_DIR/redis.started"
  fi
  wait_for "Redis" redis_ready
}

redis_down() {
  if [[ -f $STATE_DIR/redis.started ]]; then
    log "Redis: stopping (started by this script)"
    if pid_alive "$STATE_DIR/redis.pid" redis-server; then
      kill "$(<"$STATE_DIR/redis.pid")"
      wait_for "Redis to stop" redis_stopped
    fi
    rm -f "$STATE_DIR/redis.started" "$STATE_DIR/redis.pid"
  elif port_open "$REDIS_PORT"; then
    log "Redis: left running (not started by this script)"
  fi
}

redis_stopped() { ! port_open "$REDIS_PORT"; }

# --- Kafka (Nisshi) ---------------------------------------------------------------------------

# True when something on the Kafka port answers an ApiVersions request: a Kafka-protocol
# broker, not merely an open port. Request: size 15, api key 18 (ApiVersions), version 0,
# correlation id 1, client id "probe"; a broker answers with a size and correlation id 1.
kafka_ready() {
  local answer
  answer=$(timeout 3 bash -c "exec 3<>/dev/tcp/$HOST/$KAFKA_PORT \
    && printf '\x00\x00\x00\x0f\x00\x12\x00\x00\x00\x00\x00\x01\x00\x05probe' >&3 \
    && head -c 8 <&3 | od -An -tx1" 2>/dev/null) || return 1
  answer=${answer//[[:space:]]/}
  [[ ${#answer} -eq 16 && ${answer:8:8} == 00000001 ]]
}

# The broker the stack builds: tools/broker (Nisshi's broker crate, pinned, behind a launcher
# that takes `nisshi broker`'s options), cached under a name that changes with its sources, so
# an edit there builds it again (one to a comment of its Cargo.toml does not) and nothing else
# ever does. Two variants: `memory` (the shared broker's engine) and `sqlite` (memory and
# SQLite, for the tests' private brokers; two CPU-minutes more to build). $1: the variant.
broker_build_dir() {
  local key dir=$REPO_ROOT/tools/broker
  key=$({ grep -v '^[[:space:]]*#' "$dir/Cargo.toml"; cat "$dir/Cargo.lock" "$dir/src/main.rs"; } |
    sha256sum | cut -c1-12)
  printf '%s\n' "$CACHE_DIR/broker-$NISSHI_VERSION-$key-$1"
}

# Prints the broker binary to use: `nisshi` on PATH (an installed Nisshi), else the stack's own
# build in the cache — the sqlite variant when there is one (it does all the other does), the
# memory one when that will do. Fails (still printing the path) when that binary is not built.
broker_binary() {
  if command -v nisshi >/dev/null; then
    command -v nisshi
    return
  fi
  local sqlite memory
  sqlite="$(broker_build_dir sqlite)/nisshi"
  memory="$(broker_build_dir memory)/nisshi"
  if [[ -x $sqlite ]] || ((BROKER_SQLITE)); then
    printf '%s\n' "$sqlite"
    [[ -x $sqlite ]]
  else
    printf '%s\n' "$memory"
    [[ -x $memory ]]
  fi
}

# Builds the broker binary broker_binary names (once, under a lock, so concurrent `up`s wait for
# one build).
broker_build() {
  local bin variant=memory features=()
  bin=$(broker_binary) && return
  command -v cargo >/dev/null || die "nisshi is not installed and there is no cargo to build it (https://rustup.rs)"
  if ((BROKER_SQLITE)); then
    variant=sqlite
    features=(--features sqlite)
  fi
  mkdir -p "$CACHE_DIR"
  (
    flock 9
    # Another `up` may have finished the build while this one waited for the lock.
    [[ -x $bin ]] && exit 0
    log "Kafka: building Nisshi $NISSHI_VERSION's broker (tools/broker, $variant) into $(dirname "$bin") (once; log: $(dirname "$bin").log)"
    # --ignore-rust-version: Nisshi declares a newer Rust than this toolchain; it builds.
    CARGO_TARGET_DIR="$CACHE_DIR/broker-target" \
      cargo build --release --locked --ignore-rust-version "${features[@]}" \
      --manifest-path "$REPO_ROOT/tools/broker/Cargo.toml" >"$(dirname "$bin").log" 2>&1 ||
      die "building the broker failed; see $(dirname "$bin").log"
    mkdir -p "$(dirname "$bin")"
    cp "$CACHE_DIR/broker-target/release/nisshi" "$bin.tmp"
    mv "$bin.tmp" "$bin"
    log "Kafka: broker built"
  ) 9>"$CACHE_DIR/broker.lock" || exit 1
}

# `up` builds the broker, when it must, in the background while Postgres and Redis are
# installed and started: on a fresh machine it is the longest step. It must when nothing
# answers on the Kafka port, or when the tests' private brokers need the sqlite variant. If
# `up` fails meanwhile, the build goes on and a later `up` waits for it (the lock) and uses it.
BROKER_BUILD_PID=''
broker_build_start() {
  broker_binary >/dev/null && return
  port_open "$KAFKA_PORT" && ((!BROKER_SQLITE)) && return
  broker_build 8>&- &
  BROKER_BUILD_PID=$!
}

# When the broker must be built (a fresh machine, or tools/broker changed), its crates and the
# workspace's are downloaded while the build tools are installed, instead of after: neither
# needs a compiler. Best effort: the builds download whatever this missed.
prefetch_start() {
  broker_binary >/dev/null && return
  command -v cargo >/dev/null || return 0
  log "downloading the broker's and the workspace's crates (log: $STATE_DIR/logs/fetch.log)"
  mkdir -p "$STATE_DIR/logs"
  local host
  host=$(rustc -vV | sed -n 's/^host: //p')
  {
    cargo fetch --locked --target "$host" --manifest-path "$REPO_ROOT/tools/broker/Cargo.toml"
    cargo fetch --locked --target "$host" --manifest-path "$REPO_ROOT/Cargo.toml"
  } >"$STATE_DIR/logs/fetch.log" 2>&1 8>&- &
}

broker_build_wait() {
  [[ -z $BROKER_BUILD_PID ]] || wait "$BROKER_BUILD_PID" || exit 1
}

kafka_up() {
  if port_open "$KAFKA_PORT"; then
    wait_for "the service on $HOST:$KAFKA_PORT to answer the Kafka protocol" kafka_ready
    if pid_alive "$STATE_DIR/nisshi.pid" nisshi; then
      log "Kafka: nisshi already running (pid $(<"$STATE_DIR/nisshi.pid"))"
    else
      log "Kafka: a broker already runs on $HOST:$KAFKA_PORT"
    fi
    return
  fi
  local bin
  broker_build
  bin=$(broker_binary)
  log "Kafka: starting $bin on $HOST:$KAFKA_PORT (log: $STATE_DIR/nisshi.log)"
  # setsid: the broker outlives this script and is not hit by signals meant for its caller's
  # process group (a CI step ending, ^C in the terminal that ran `up`).
  setsid "$bin" broker \
    --listener-url "tcp://$HOST:$KAFKA_PORT" \
    --advertised-listener-url "tcp://$HOST:$KAFKA_PORT" \
    --storage-engine memory://nisshi/ \
    --group-initial-rebalance-delay "$GROUP_REBALANCE_DELAY" \
    </dev/null >"$STATE_DIR/nisshi.log" 2>&1 8>&- &
  printf '%s\n' "$!" >"$STATE_DIR/nisshi.pid"
  wait_for "nisshi (see $STATE_DIR/nisshi.log)" nisshi_started
}

# Ready, or fail at once if the broker has already exited. `kill -0`, not pid_alive: until
# setsid has exec'd, the child's command line is still this script's.
nisshi_started() {
  kill -0 "$(<"$STATE_DIR/nisshi.pid")" 2>/dev/null ||
    die "nisshi exited at start; last lines of $STATE_DIR/nisshi.log: $(tail -n 5 "$STATE_DIR/nisshi.log")"
  kafka_ready
}

kafka_down() {
  if pid_alive "$STATE_DIR/nisshi.pid" nisshi; then
    local pid
    pid=$(<"$STATE_DIR/nisshi.pid")
    log "Kafka: stopping nisshi (pid $pid)"
    kill "$pid"
    wait_for "nisshi to stop" kafka_stopped
  elif port_open "$KAFKA_PORT"; then
    log "Kafka: left running (not started by this script)"
  fi
  rm -f "$STATE_DIR/nisshi.pid"
}

kafka_stopped() { ! pid_alive "$STATE_DIR/nisshi.pid" nisshi && ! port_open "$KAFKA_PORT"; }

# --- a build beside `up` ---------------------------------------------------------------------

BESIDE_LOG=''
BESIDE_PID=''
BESIDE_COMMAND=()
beside_parse() {
  (($# == 0)) && return
  [[ $# -ge 4 && $1 == --beside && $3 == -- ]] ||
    die "usage: $0 up [--beside LOG -- COMMAND...]"
  BESIDE_LOG=$2
  shift 3
  BESIDE_COMMAND=("$@")
}

# Starts the command in the background; if `up` fails before it is done, it is stopped. It
# runs at the lowest priority: when the broker is being built, that build is the longer one
# (ending in a chain of large crates: nisshi-sans-io, nisshi-storage, nisshi-storage-dynostore,
# nisshi-broker), so it goes first and COMMAND takes what it leaves. On a clean root that
# brought the main job's first result from 11.4 to 10.7 minutes (README "A fresh machine,
# measured"); without a broker to build it changes nothing.
beside_start() {
  [[ -n $BESIDE_LOG ]] || return 0
  mkdir -p "$(dirname "$BESIDE_LOG")"
  log "running beside the stack's start: ${BESIDE_COMMAND[*]} (log: $BESIDE_LOG)"
  nice -n 19 "${BESIDE_COMMAND[@]}" >"$BESIDE_LOG" 2>&1 8>&- &
  BESIDE_PID=$!
  trap beside_stop EXIT
}

beside_stop() {
  [[ -z $BESIDE_PID ]] || kill_tree "$BESIDE_PID"
}

# SIGTERM to a process and all its descendants (cargo's rustc jobs, a `bash -c`'s commands).
kill_tree() {
  local child children
  children=$(cat /proc/"$1"/task/*/children 2>/dev/null || true)
  kill "$1" 2>/dev/null || true
  for child in $children; do
    kill_tree "$child"
  done
}

beside_wait() {
  [[ -n $BESIDE_PID ]] || return 0
  local pid=$BESIDE_PID
  if ! wait "$pid"; then
    BESIDE_PID=
    die "${BESIDE_COMMAND[*]} failed; the end of $BESIDE_LOG:
$(tail -n 40 "$BESIDE_LOG")"
  fi
  BESIDE_PID=
  log "done: ${BESIDE_COMMAND[*]}"
}

# --- commands ---------------------------------------------------------------------------------

print_env() {
  printf 'export KAFKA_BOOTSTRAP_SERVERS=%s:%s\n' "$HOST" "$KAFKA_PORT"
  printf 'export DATABASE_URL=postgres://postgres@%s:%s/%s\n' "$HOST" "$PG_PORT" "$DB_NAME"
  printf 'export REDIS_URL=redis://%s:%s\n' "$HOST" "$REDIS_PORT"
  # The broker binary, for the tests' private brokers (tests/src/servers.rs).
  printf 'export NISSHI_BIN=%s\n' "$(broker_binary || true)"
}

status_line() {
  local name=$1 address=$2
  shift 2
  if "$@" 2>/dev/null; then
    printf '%-9s up    %s\n' "$name" "$address"
  else
    printf '%-9s down  %s\n' "$name" "$address"
    return 1
  fi
}

cmd_status() {
  local rc=0
  status_line postgres "$HOST:$PG_PORT" pg_ready || rc=1
  status_line redis "$HOST:$REDIS_PORT" redis_ready || rc=1
  status_line kafka "$HOST:$KAFKA_PORT" kafka_ready || rc=1
  return "$rc"
}

main() {
  mkdir -p "$STATE_DIR"
  if [[ ${1:-} == up || ${1:-} == down || ${1:-} == restart-kafka ]]; then
    # One `up` or `down` at a time: two concurrent `up`s would both start a broker. Every
    # daemon started below gets `8>&-`, or it would hold the lock for its whole life.
    exec 8>"$STATE_DIR/stack.lock"
    flock 8
  fi
  case "${1:-}" in
    up)
      shift
      beside_parse "$@"
      prefetch_start
      build_tools_up
      broker_build_start
      beside_start
      postgres_up
      redis_up
      broker_build_wait
      kafka_up
      beside_wait
      log "stack is up"
      print_env
      ;;
    down)
      kafka_down
      redis_down
      postgres_down
      ;;
    restart-kafka)
      kafka_down
      kafka_up
      ;;
    status) cmd_status ;;
    env) print_env ;;
    *)
      printf 'usage: %s up [--beside LOG -- COMMAND...]|down|status|env|restart-kafka\n' "$0" >&2
      exit 2
      ;;
  esac
}

main "$@"
