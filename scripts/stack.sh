#!/usr/bin/env bash
# Brings up, stops and reports Vaultline's local stack: Postgres (database dwh), Redis and
# Apache Kafka (KRaft, one node: scripts/kafka.sh), all on 127.0.0.1.
#
#   scripts/stack.sh up       start what is not running, wait until ready, print the settings
#   scripts/stack.sh down     stop what this script started (never services it found running)
#   scripts/stack.sh status   print each component up or down
#   scripts/stack.sh env      print the settings as export lines (with API_TOKEN, the read
#                             API's token, made once into .stack/api-token)
#   scripts/stack.sh up --beside LOG -- COMMAND...
#                             the same, running COMMAND (a build) in the background from the
#                             moment the build tools are installed, its output in LOG; `up`
#                             succeeds once both are done (on a fresh machine the packages'
#                             installation and COMMAND share the cores)
#   scripts/stack.sh restart-kafka [--empty]
#                             stop the broker this script started and start it again; --empty
#                             deletes its topics and groups first (what the benchmark measures
#                             from)
#
# VAULTLINE_DB names the database (default dwh; the benchmark uses its own).
# `up` and `env` print only the export lines on stdout (progress goes to stderr), so
# `eval "$(scripts/stack.sh up)"` configures the current shell.
#
# Whatever already listens on a port is reused. As root on Debian, missing packages (Postgres,
# Redis, a JRE and Maven for Kafka) are installed with apt-get; elsewhere the script says what
# to install. What the script started is recorded under .stack/ in the repository root, where
# the broker's data, pid and log live too; Kafka's jars are cached in ~/.cache/vaultline.
set -euo pipefail

readonly HOST=127.0.0.1
readonly KAFKA_PORT=9092
readonly KAFKA_CONTROLLER_PORT=9093
readonly PG_PORT=5432
readonly REDIS_PORT=6379
readonly DB_NAME=${VAULTLINE_DB:-dwh}
[[ $DB_NAME =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || {
  printf '[stack] VAULTLINE_DB: "%s" is not a plain lower-case database name\n' "$DB_NAME" >&2
  exit 2
}
# How long each component may take to become ready.
readonly READY_TIMEOUT_S=${VAULTLINE_READY_TIMEOUT:-60}
readonly PG_START_TIMEOUT_S=${VAULTLINE_PG_START_TIMEOUT:-900}

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO_ROOT
readonly STATE_DIR="$REPO_ROOT/.stack"
readonly KAFKA_DIR="$STATE_DIR/kafka"

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

# shellcheck source=scripts/lib/apt.sh
source "$REPO_ROOT/scripts/lib/apt.sh"

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

# Postgres, Redis and Kafka's JRE and Maven, when missing: one apt-get run for all (each of
# them is a step of its own otherwise, and dpkg runs one at a time).
packages_up() {
  local missing=() wanted
  port_open "$PG_PORT" || command -v pg_ctlcluster >/dev/null || missing+=(postgresql)
  command -v psql >/dev/null || missing+=(postgresql-client)
  port_open "$REDIS_PORT" || command -v redis-server >/dev/null || missing+=(redis-server)
  if ! port_open "$KAFKA_PORT"; then
    wanted=$("$REPO_ROOT/scripts/kafka.sh" packages)
    # shellcheck disable=SC2206 # one word per package
    missing+=($wanted)
  fi
  ((${#missing[@]} == 0)) && return
  apt_install "${missing[@]}"
  [[ " ${missing[*]} " != *" postgresql "* ]] || touch "$STATE_DIR/postgres.installed"
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

# The warehouse's settings (docker/postgres/warehouse.conf: fewer checkpoints and more shared
# buffers; durability untouched), on a cluster this script installed (or in CI) only.
# Returns 0 when it wrote them (a running cluster then needs a restart).
pg_configure() {
  local version=$1 conf
  conf="/etc/postgresql/$version/main/conf.d/vaultline.conf"
  [[ -f $STATE_DIR/postgres.installed || ${CI:-} == true ]] && is_root || return 1
  [[ -d ${conf%/*} && ! -f $conf ]] || return 1
  log "Postgres: the warehouse's settings in $conf"
  cp "$REPO_ROOT/docker/postgres/warehouse.conf" "$conf"
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
      if pg_configure "$version"; then
        pg_ctlcluster --skip-systemctl-redirect "$version" main restart >&2 8>&-
      fi
    elif ! is_root; then
      die "Postgres is not running: start it (sudo pg_ctlcluster $version main start) and rerun"
    else
      # After an unclean stop (a killed machine or session) Postgres replays its WAL and first
      # syncs its whole data directory: on a data directory of a few GB that alone passes
      # pg_ctl's default 60 s wait, so this start waits up to PG_START_TIMEOUT_S.
      pg_configure "$version" || true
      log "Postgres: starting cluster $version/main (up to ${PG_START_TIMEOUT_S}s: recovery after an unclean stop takes longer)"
      pg_ctlcluster --skip-systemctl-redirect "$version" main start -- -t "$PG_START_TIMEOUT_S" >&2 8>&-
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

# --- Kafka -----------------------------------------------------------------------------------

# True when the broker on the Kafka port answers a Metadata request (v1, no topics) listing at
# least one broker: a Kafka broker that has joined its cluster, not merely an open port.
# Request: size 19, api key 3 (Metadata), version 1, correlation id 1, client id "probe", an
# empty topic array; the answer starts with a size, correlation id 1 and the broker count.
kafka_ready() {
  local answer
  answer=$(timeout 3 bash -c "exec 3<>/dev/tcp/$HOST/$KAFKA_PORT \
    && printf '\x00\x00\x00\x13\x00\x03\x00\x01\x00\x00\x00\x01\x00\x05probe\x00\x00\x00\x00' >&3 \
    && head -c 12 <&3 | od -An -tx1" 2>/dev/null) || return 1
  answer=${answer//[[:space:]]/}
  [[ ${#answer} -eq 24 && ${answer:8:8} == 00000001 && ${answer:16:8} != 00000000 ]]
}

# Apache Kafka's jars (and a JRE and Maven when missing) are fetched in the background while
# Postgres and Redis are installed and started: scripts/kafka.sh install, once per version.
KAFKA_INSTALL_PID=''
kafka_install_start() {
  port_open "$KAFKA_PORT" && return
  "$REPO_ROOT/scripts/kafka.sh" install >/dev/null 8>&- &
  KAFKA_INSTALL_PID=$!
}

kafka_install_wait() {
  [[ -z $KAFKA_INSTALL_PID ]] || wait "$KAFKA_INSTALL_PID" || exit 1
}

kafka_up() {
  if port_open "$KAFKA_PORT"; then
    wait_for "the service on $HOST:$KAFKA_PORT to answer as a Kafka broker" kafka_ready
    if pid_alive "$STATE_DIR/kafka.pid" kafka.Kafka; then
      log "Kafka: already running (pid $(<"$STATE_DIR/kafka.pid"))"
    else
      log "Kafka: a broker already runs on $HOST:$KAFKA_PORT"
    fi
    return
  fi
  log "Kafka: starting Apache Kafka $("$REPO_ROOT/scripts/kafka.sh" version) on $HOST:$KAFKA_PORT (data: $KAFKA_DIR; log: $STATE_DIR/kafka.log)"
  # setsid: the broker outlives this script and is not hit by signals meant for its caller's
  # process group (a CI step ending, ^C in the terminal that ran `up`).
  setsid "$REPO_ROOT/scripts/kafka.sh" node --dir "$KAFKA_DIR" \
    --port "$KAFKA_PORT" --controller-port "$KAFKA_CONTROLLER_PORT" \
    </dev/null >"$STATE_DIR/kafka.log" 2>&1 8>&- &
  printf '%s\n' "$!" >"$STATE_DIR/kafka.pid"
  wait_for "Kafka (see $STATE_DIR/kafka.log)" kafka_started
}

# Ready, or fail at once if the broker has already exited. `kill -0`, not pid_alive: until the
# launcher has exec'd java, the process's command line is still the script's.
kafka_started() {
  kill -0 "$(<"$STATE_DIR/kafka.pid")" 2>/dev/null ||
    die "Kafka exited at start; last lines of $STATE_DIR/kafka.log: $(tail -n 5 "$STATE_DIR/kafka.log")"
  kafka_ready
}

kafka_down() {
  if pid_alive "$STATE_DIR/kafka.pid" kafka.Kafka; then
    local pid
    pid=$(<"$STATE_DIR/kafka.pid")
    log "Kafka: stopping (pid $pid; a controlled shutdown)"
    kill "$pid"
    wait_for "Kafka to stop" kafka_stopped
  elif port_open "$KAFKA_PORT"; then
    log "Kafka: left running (not started by this script)"
  fi
  rm -f "$STATE_DIR/kafka.pid"
}

kafka_stopped() { ! pid_alive "$STATE_DIR/kafka.pid" kafka.Kafka && ! port_open "$KAFKA_PORT"; }

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

# On a machine that has never built the workspace, its crates download while the build tools
# install (neither needs the other), instead of after. Best effort: the build fetches whatever
# this missed.
prefetch_start() {
  [[ -n $BESIDE_LOG && ! -d $REPO_ROOT/target ]] && command -v cargo >/dev/null || return 0
  mkdir -p "$STATE_DIR/logs"
  log "downloading the workspace's crates (log: $STATE_DIR/logs/fetch.log)"
  local host
  host=$(rustc -vV | sed -n 's/^host: //p')
  cargo fetch --locked --target "$host" --manifest-path "$REPO_ROOT/Cargo.toml" \
    >"$STATE_DIR/logs/fetch.log" 2>&1 8>&- &
}

# Starts the command in the background; if `up` fails before it is done, it is stopped. It
# runs at the lowest priority, so that the packages' installation and the servers' start, which
# are short, are not slowed by it.
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

# The read API's bearer token of the local stack (docs/read-api.md, "Access"): made once,
# random, in .stack/api-token (readable by its owner only), and the same on every later call.
api_token() {
  local file=$STATE_DIR/api-token
  if [[ ! -s $file ]]; then
    (umask 077 && od -An -tx1 -N24 /dev/urandom | tr -d ' \n' >"$file.new" && mv "$file.new" "$file")
  fi
  cat "$file"
}

print_env() {
  printf 'export KAFKA_BOOTSTRAP_SERVERS=%s:%s\n' "$HOST" "$KAFKA_PORT"
  printf 'export DATABASE_URL=postgres://postgres@%s:%s/%s\n' "$HOST" "$PG_PORT" "$DB_NAME"
  printf 'export REDIS_URL=redis://%s:%s\n' "$HOST" "$REDIS_PORT"
  printf 'export API_TOKEN=%s\n' "$(api_token)"
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
      beside_start
      packages_up
      kafka_install_start
      postgres_up
      redis_up
      kafka_install_wait
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
      [[ ${2:-} == "" || ${2:-} == --empty ]] || die "usage: $0 restart-kafka [--empty]"
      kafka_down
      if [[ ${2:-} == --empty ]]; then
        log "Kafka: deleting $KAFKA_DIR (every topic, message and group)"
        rm -rf "$KAFKA_DIR"
      fi
      kafka_up
      ;;
    status) cmd_status ;;
    env) print_env ;;
    *)
      printf 'usage: %s up [--beside LOG -- COMMAND...]|down|status|env|restart-kafka [--empty]\n' "$0" >&2
      exit 2
      ;;
  esac
}

main "$@"
