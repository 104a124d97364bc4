#!/usr/bin/env bash
# Start, stop and report a single-node Apache Kafka 4.x broker (KRaft mode:
# broker and controller in one JVM), run from the official jars on Maven
# Central. No Docker and no Kafka tarball needed: Java 17+ and Maven.
#
# Usage: scripts/kafka.sh start|stop|kill|status|restart|wipe|jars|logs [-f]
#
#   start    fetch jars if needed, format storage once, launch, wait until the
#            broker answers (no-op if a broker already answers on the port)
#   stop     SIGTERM, wait up to 60 s, then SIGKILL
#   kill     SIGKILL at once (crash tests)
#   status   running or not, pid, bootstrap address; exit 0 only if answering
#   restart  stop, then start on the same data
#   wipe     stop and delete the data dir (the jar cache stays)
#   jars     only fetch the jars (for an install step)
#   logs     last 100 lines of the broker log; `logs -f` follows it
#
# Environment (defaults in brackets):
#   KAFKA_PORT [9092]                 client (PLAINTEXT) port
#   KAFKA_CONTROLLER_PORT [PORT+1]    KRaft controller port
#   KAFKA_SASL_PORT [none]            also listen with SASL_PLAINTEXT (PLAIN) here, with
#                                     user "sessionizer", password "sessionizer-secret"
#                                     (tests of authentication failures)
#   KAFKA_HOST [127.0.0.1]            listen and advertised host
#   KAFKA_CACHE_DIR [<repo>/.cache/kafka]   jars, shared by every port
#   KAFKA_DATA_DIR [$KAFKA_CACHE_DIR/data-$KAFKA_PORT]   one per broker
#   KAFKA_HEAP [1g]                   JVM -Xmx
#   KAFKA_START_TIMEOUT [90]          seconds to wait for the broker to answer
#   KAFKA_PYTHON [python3]            interpreter used for the readiness check
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
POM=$SCRIPT_DIR/kafka/pom.xml
LOG4J_CONFIG=$SCRIPT_DIR/kafka/log4j2.properties
# shellcheck source-path=SCRIPTDIR source=lib/process.sh
source "$SCRIPT_DIR/lib/process.sh"

KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}
KAFKA_SASL_PORT=${KAFKA_SASL_PORT:-}
KAFKA_HOST=${KAFKA_HOST:-127.0.0.1}
KAFKA_CACHE_DIR=${KAFKA_CACHE_DIR:-$REPO_ROOT/.cache/kafka}
KAFKA_DATA_DIR=${KAFKA_DATA_DIR:-$KAFKA_CACHE_DIR/data-$KAFKA_PORT}
KAFKA_HEAP=${KAFKA_HEAP:-1g}
KAFKA_START_TIMEOUT=${KAFKA_START_TIMEOUT:-90}
KAFKA_PYTHON=${KAFKA_PYTHON:-python3}
STOP_TIMEOUT=60

JARS_DIR=$KAFKA_CACHE_DIR/jars
JARS_MARKER=$JARS_DIR/.complete
PROPS=$KAFKA_DATA_DIR/server.properties
LOG_DIRS=$KAFKA_DATA_DIR/logs
LOG_FILE=$KAFKA_DATA_DIR/broker.log
PID_FILE=$KAFKA_DATA_DIR/broker.pid
BOOTSTRAP=$KAFKA_HOST:$KAFKA_PORT

# For scripts/lib/process.sh.
LOG_PREFIX="kafka.sh[$KAFKA_PORT]"
LOG_TAIL_LINES=50
LOG_ERROR_REGEX='^\[[^]]*\] (ERROR|FATAL) '

# ---------------------------------------------------------------- jars

jars_ready() {
  [[ -f $JARS_MARKER ]] && grep -qx "pom-sha256=$(pom_hash)" "$JARS_MARKER"
}

# FILL_FN of fetch_once: copy the broker's jars into $1, mvn output to $2.
copy_jars() {
  mvn -B -q -f "$POM" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$1" </dev/null >"$2" 2>&1
}

jars_summary() {
  say "jars ready ($(find "$JARS_DIR" -name '*.jar' | wc -l) files)"
}

# Copy the broker's jars from Maven Central into $JARS_DIR, unless the marker
# says they were already copied from this very pom.
ensure_jars() {
  fetch_once "$JARS_DIR" "the Kafka jars" "fetching Kafka jars with Maven into $JARS_DIR" \
    jars_ready copy_jars jars_summary
}

kafka_java() {
  java -cp "$JARS_DIR/*" -Dlog4j2.configurationFile="file:$LOG4J_CONFIG" "$@"
}

# ---------------------------------------------------------------- config

# SASL/PLAIN on a listener of its own, when KAFKA_SASL_PORT is set: a local
# stand-in for a secured cluster (the credentials are test fixtures).
sasl_properties() {
  [[ -n $KAFKA_SASL_PORT ]] || return 0
  echo 'sasl.enabled.mechanisms=PLAIN'
  echo 'listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="admin-secret" user_admin="admin-secret" user_sessionizer="sessionizer-secret";'
}

write_server_properties() {
  mkdir -p "$KAFKA_DATA_DIR"
  cat >"$PROPS" <<EOF
# Written by scripts/kafka.sh on every start; edits here are overwritten.
process.roles=broker,controller
node.id=1
# Dynamic quorum of one (storage is formatted with --standalone).
controller.quorum.bootstrap.servers=$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$KAFKA_CONTROLLER_PORT${KAFKA_SASL_PORT:+,SASL_PLAINTEXT://$KAFKA_HOST:$KAFKA_SASL_PORT}
advertised.listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT${KAFKA_SASL_PORT:+,SASL_PLAINTEXT://$KAFKA_HOST:$KAFKA_SASL_PORT}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT
$(sasl_properties)
log.dirs=$LOG_DIRS

num.partitions=1
auto.create.topics.enable=false
delete.topic.enable=true

# One broker: internal topics must not ask for more replicas than that, or
# consumer groups and transactions hang. Fewer partitions start faster.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1

# Tests: no wait before the first rebalance, and short session timeouts allowed.
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000

# After a crash (kill), the restarted broker cannot register until the
# controller fences its previous incarnation, which takes a full broker session
# (default 9 s). A shorter session makes crash tests recover sooner.
broker.session.timeout.ms=4000
broker.heartbeat.interval.ms=1000

# Retention goes by record timestamp, and test events may carry old dates:
# keep everything, or replays of old data would find it deleted.
log.retention.ms=-1
EOF
}

is_formatted() {
  [[ -f $LOG_DIRS/meta.properties ]]
}

# KRaft storage must be formatted with a cluster id once before the first start.
format_storage_once() {
  is_formatted && return 0
  local cluster_id
  cluster_id=$(kafka_java kafka.tools.StorageTool random-uuid 2>>"$KAFKA_DATA_DIR/format.log")
  # A cluster id is 22 base64url characters; anything else means the tool
  # printed something more (a log line) and the format would store it.
  [[ $cluster_id =~ ^[A-Za-z0-9_-]{22}$ ]] || die "unexpected cluster id: $cluster_id"
  say "formatting $LOG_DIRS (cluster id $cluster_id)"
  kafka_java kafka.tools.StorageTool format --standalone \
    -t "$cluster_id" -c "$PROPS" >>"$KAFKA_DATA_DIR/format.log" 2>&1 \
    || { cat "$KAFKA_DATA_DIR/format.log" >&2; die "storage format failed"; }
}

# ---------------------------------------------------------------- process

# Pid of our broker, if it is alive.
service_pid() {
  managed_pid "kafka.Kafka $PROPS"
}

port_open() {
  (exec 3<>"/dev/tcp/$KAFKA_HOST/$KAFKA_PORT") 2>/dev/null
}

have_python_client() {
  "$KAFKA_PYTHON" -c 'import confluent_kafka' 2>/dev/null
}

# A metadata request that succeeds means the broker really serves clients,
# not just that something listens on the port.
metadata_answers() {
  "$KAFKA_PYTHON" - "$BOOTSTRAP" 2>/dev/null <<'EOF'
import sys
from confluent_kafka.admin import AdminClient
admin = AdminClient({"bootstrap.servers": sys.argv[1], "log_level": 0})
sys.exit(0 if admin.list_topics(timeout=3).brokers else 1)
EOF
}

service_answers() {
  # The port check comes first because it fails at once when nothing
  # listens, where the metadata request would wait for its timeout.
  port_open || return 1
  if [[ $HAVE_PYTHON_CLIENT == yes ]]; then
    metadata_answers
  else
    # Fallback without the client: the broker logged that it finished
    # starting (KafkaRaftServer logs "Kafka Server started").
    grep -q 'started (kafka.server' "$LOG_FILE" 2>/dev/null
  fi
}

launch() {
  need java "Java 17 or newer is needed to run Kafka"
  # Keep the previous run's log for post-mortems of crash tests.
  [[ -f $LOG_FILE ]] && mv -f -- "$LOG_FILE" "$LOG_FILE.1"
  # setsid + nohup: the broker gets its own session, so it outlives this
  # shell and any terminal or CI step that started it.
  setsid nohup java "-Xmx$KAFKA_HEAP" -cp "$JARS_DIR/*" \
    -Dlog4j2.configurationFile="file:$LOG4J_CONFIG" \
    kafka.Kafka "$PROPS" >"$LOG_FILE" 2>&1 </dev/null &
  echo $! >"$PID_FILE"
}

# ---------------------------------------------------------------- commands

start_broker() {
  local t0=$SECONDS pid
  if service_answers; then
    say "already running at $BOOTSTRAP; nothing to do"
    return 0
  fi
  if pid=$(service_pid); then
    # Launched earlier (perhaps by a start that is still waiting): wait for it.
    say "broker process $pid exists but does not answer yet; waiting"
  else
    ensure_jars
    write_server_properties
    format_storage_once
    launch
    pid=$(<"$PID_FILE")
    say "launched pid $pid, log $LOG_FILE"
  fi
  wait_until_answering "$pid" "$KAFKA_START_TIMEOUT" 0.5 \
    "broker process exited during startup" \
    "broker did not answer on $BOOTSTRAP within ${KAFKA_START_TIMEOUT}s (stopped it)"
  say "ready at $BOOTSTRAP after $((SECONDS - t0))s"
}

status_broker() {
  status_service "bootstrap $BOOTSTRAP" "not answering" ", data $KAFKA_DATA_DIR"
}

wipe_broker() {
  # Guard the rm against a bad KAFKA_DATA_DIR: empty, /, the repo, or the
  # cache dir itself (which holds the jars that wipe must keep).
  local dir
  dir=$(realpath -m -- "$KAFKA_DATA_DIR")
  case $dir in
    / | "$(realpath -m -- "$REPO_ROOT")" | "$(realpath -m -- "$KAFKA_CACHE_DIR")")
      die "refusing to delete '$KAFKA_DATA_DIR'" ;;
  esac
  stop_service
  rm -rf -- "$KAFKA_DATA_DIR"
  say "deleted $KAFKA_DATA_DIR"
}

usage() {
  echo "usage: $0 start|stop|kill|status|restart|wipe|jars|logs [-f]" >&2
  exit 2
}

main() {
  [[ $# -ge 1 ]] || usage
  HAVE_PYTHON_CLIENT=no
  have_python_client && HAVE_PYTHON_CLIENT=yes
  case $1 in
    start) start_broker ;;
    stop) stop_service ;;
    kill) kill_service ;;
    status) status_broker ;;
    restart) stop_service && start_broker ;;
    wipe) wipe_broker ;;
    jars) ensure_jars ;;
    logs) show_logs broker "${2:-}" ;;
    *) usage ;;
  esac
}

main "$@"
