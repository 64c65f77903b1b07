#!/usr/bin/env bash
# Apache Kafka on this machine, without Docker: the broker's own jars from Maven Central, run in
# KRaft mode (controller and broker in one process) on loopback. The local stack
# (scripts/stack.sh) and the tests' private brokers and clusters (tests/src/servers.rs) start
# their nodes through this script, so a node's settings are written here once.
#
#   scripts/kafka.sh install     JRE and Maven when missing (Debian packages, as root), then the
#                                jars of the version docker/compose.yaml pins (tools/kafka/pom.xml)
#                                into the cache; prints the jar directory
#   scripts/kafka.sh version     the pinned version
#   scripts/kafka.sh packages    the Debian packages it would install (none when all are there)
#   scripts/kafka.sh node --dir DIR --port PORT --controller-port PORT [options]
#                                formats DIR on its first start, then becomes the node (exec: its
#                                pid is the JVM's, so a kill -9 of it is a broker crash). Options:
#        --node-id N             default 1
#        --voters LIST           the controller quorum, e.g. 1@127.0.0.1:9093,2@127.0.0.1:9095
#                                (default: this node alone)
#        --cluster-id ID         the same for every node of one cluster (default: a fixed one)
#        --set KEY=VALUE         one more broker property (later ones win); repeatable
#        --scram MECH=[name=U,password=P]
#                                a SCRAM user stored at format time; repeatable
#   scripts/kafka.sh run CLASS ARGS...
#                                a Kafka tool by its class, e.g. the consumer groups tool:
#                                org.apache.kafka.tools.consumer.group.ConsumerGroupCommand
#
# Sized for a 2-core, 24 GB machine shared with Postgres, Redis and the services: a 512 MB heap
# (VAULTLINE_KAFKA_HEAP overrides the -Xms/-Xmx pair), 2 network and 4 I/O threads, 64 MB log
# segments, 1 GB and 24 hours kept per partition.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO_ROOT
readonly CACHE_DIR="${VAULTLINE_CACHE:-$HOME/.cache/vaultline}"
# The compose file's `x-kafka-image` is the one place the version is written.
KAFKA_VERSION=$(sed -n 's|^x-kafka-image: &kafka-image apache/kafka:\([0-9][0-9.]*\)$|\1|p' "$REPO_ROOT/docker/compose.yaml")
readonly KAFKA_VERSION
[[ $KAFKA_VERSION =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || {
  printf '[kafka] docker/compose.yaml must pin the version once, as x-kafka-image: &kafka-image apache/kafka:X.Y.Z; found: %s\n' "${KAFKA_VERSION:-none}" >&2
  exit 2
}
readonly LIBS_DIR="$CACHE_DIR/kafka-$KAFKA_VERSION/libs"
readonly HEAP=${VAULTLINE_KAFKA_HEAP:--Xms512m -Xmx512m}
# What `kafka-storage.sh random-uuid` prints (16 bytes, base64url); compose uses its own.
readonly DEFAULT_CLUSTER_ID=VmF1bHRsaW5lTG9jYWwwMQ

log() { printf '[kafka] %s\n' "$*" >&2; }
die() {
  printf '[kafka] error: %s\n' "$*" >&2
  exit 1
}

# shellcheck source=scripts/lib/apt.sh
source "$REPO_ROOT/scripts/lib/apt.sh"

# The Debian packages this script needs and the machine lacks (printed, one line; `packages`).
missing_packages() {
  local missing=()
  command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null || missing+=(maven)
  printf '%s\n' "${missing[*]}"
}

# The jars, once per version, under a lock (concurrent starts wait for one download). Maven's
# own repository (~/.m2) keeps what it downloaded, so a cleared cache costs no network.
install() {
  [[ -f $LIBS_DIR/.complete ]] && return
  local missing
  missing=$(missing_packages)
  # shellcheck disable=SC2086 # one word per package
  [[ -z $missing ]] || apt_install $missing
  local maven_log="$CACHE_DIR/kafka-$KAFKA_VERSION/maven.log"
  mkdir -p "$(dirname "$LIBS_DIR")"
  (
    flock 9
    [[ -f $LIBS_DIR/.complete ]] && exit 0
    log "resolving Apache Kafka $KAFKA_VERSION's jars from Maven Central into $LIBS_DIR"
    rm -rf "$LIBS_DIR"
    mvn -B -q -f "$REPO_ROOT/tools/kafka/pom.xml" "-Dkafka.version=$KAFKA_VERSION" \
      dependency:copy-dependencies -DincludeScope=runtime "-DoutputDirectory=$LIBS_DIR" \
      >"$maven_log" 2>&1 ||
      die "Maven could not resolve org.apache.kafka:kafka_2.13:$KAFKA_VERSION; the end of $maven_log: $(tail -n 5 "$maven_log")"
    touch "$LIBS_DIR/.complete"
  ) 9>"$CACHE_DIR/kafka.lock" || exit 1
}

# Only the JVM's quick compiler (C1, `TieredStopAtLevel=1`): on cores shared with Postgres and
# the services, the optimising one (C2) spent 7–8 CPU-seconds in a broker's first minutes —
# 2.2–2.4 of the 4.4–5.2 the broker took for a 100,000-order drain, even after a warm-up —
# while the broker's own threads cost the same compiled by C1 (1.5–1.9 CPU-s per drain either
# way): docs/performance.md, "The broker's compiler".
java_run() {
  # shellcheck disable=SC2086 # HEAP is a list of JVM options
  exec java $HEAP -XX:TieredStopAtLevel=1 -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true -cp "$LIBS_DIR/*" "$@"
}

node() {
  local dir='' port='' controller_port='' node_id=1 voters='' cluster_id=$DEFAULT_CLUSTER_ID
  local extra=() scram=()
  while (($#)); do
    case $1 in
      --dir) dir=$2 ;;
      --port) port=$2 ;;
      --controller-port) controller_port=$2 ;;
      --node-id) node_id=$2 ;;
      --voters) voters=$2 ;;
      --cluster-id) cluster_id=$2 ;;
      --set) extra+=("$2") ;;
      --scram) scram+=(--add-scram "$2") ;;
      *) die "node: unknown option $1 (see the header of $0)" ;;
    esac
    shift 2 || die "node: $1 needs a value"
  done
  [[ -n $dir && $port =~ ^[0-9]+$ && $controller_port =~ ^[0-9]+$ ]] ||
    die "node: --dir, --port and --controller-port are required"
  voters=${voters:-$node_id@127.0.0.1:$controller_port}
  # One replica per node, at most three: the internal topics are as durable as the cluster.
  local nodes replicas
  nodes=$(tr ',' '\n' <<<"$voters" | wc -l)
  replicas=$((nodes < 3 ? nodes : 3))
  install
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  cat >"$dir/server.properties" <<PROPERTIES
# Written by scripts/kafka.sh at each start: edit that script, not this file.
process.roles=broker,controller
node.id=$node_id
controller.quorum.voters=$voters
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT
log.dirs=$dir/data
# As compose: topics are created on purpose, with their partition count.
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=$replicas
offsets.topic.replication.factor=$replicas
# Kafka's 50 partitions for committed offsets are for clusters with many groups; here they only
# make a new broker's first group wait seconds for their creation.
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=$replicas
transaction.state.log.min.isr=$(((replicas + 1) / 2))
# A consumer group's first assignment without Kafka's 3 s wait for more members: every service
# start and every test would pay it (compose sets 0 too).
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
log.segment.bytes=67108864
log.retention.bytes=1073741824
log.retention.hours=24
PROPERTIES
  local setting
  for setting in "${extra[@]}"; do
    printf '%s\n' "$setting" >>"$dir/server.properties"
  done
  cat >"$dir/log4j.properties" <<'LOG4J'
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.request.logger=WARN
log4j.logger.org.apache.kafka.storage.internals.log=WARN
log4j.logger.kafka.log.LogCleaner=WARN
LOG4J
  if [[ ! -f $dir/data/meta.properties ]]; then
    log "formatting $dir/data (cluster $cluster_id, node $node_id)"
    (java_run -Dlog4j.configuration="file:$dir/log4j.properties" kafka.tools.StorageTool format \
      --cluster-id "$cluster_id" --config "$dir/server.properties" --ignore-formatted "${scram[@]}") >&2
  fi
  log "starting node $node_id on 127.0.0.1:$port (controller 127.0.0.1:$controller_port)"
  java_run -Dlog4j.configuration="file:$dir/log4j.properties" kafka.Kafka "$dir/server.properties"
}

case "${1:-}" in
  install)
    install
    printf '%s\n' "$LIBS_DIR"
    ;;
  version) printf '%s\n' "$KAFKA_VERSION" ;;
  packages) missing_packages ;;
  node)
    shift
    node "$@"
    ;;
  run)
    shift
    (($#)) || die "run: which class?"
    install
    java_run "$@"
    ;;
  *)
    printf 'usage: %s install|version|packages|node OPTIONS|run CLASS ARGS... (see its header)\n' "$0" >&2
    exit 2
    ;;
esac
