#!/usr/bin/env bash
# Start, stop and report a local schema registry with the Confluent-compatible
# REST API: Apicurio Registry 3.x, run from its prebuilt server bundle on Maven
# Central. No Docker needed: Maven once, then Java 21 or newer.
#
# Usage: scripts/registry.sh start|stop|kill|status|restart|fetch|java|logs [-f]
#
#   start    fetch the bundle if needed, launch, wait until it is ready, print
#            the client URL (no-op if a registry already answers on the ports)
#   stop     SIGTERM, wait up to 30 s, then SIGKILL
#   kill     SIGKILL at once (failure tests)
#   status   running or not, pid, client URL; exit 0 only if answering
#   restart  stop, then start. Storage is in memory: a restart empties it
#   fetch    only fetch and unpack the bundle (for an install step)
#   java     print the java it would use; exit 3 if there is none
#   logs     last 100 lines of the registry log; `logs -f` follows it
#
# Client URL (for confluent_kafka.schema_registry.SchemaRegistryClient):
#   http://127.0.0.1:$REGISTRY_PORT/apis/ccompat/v7
#
# Exit codes: 0 ok, 1 error, 2 usage, 3 no Java 21 or newer was found (start,
# restart and java only; tests use it to skip with the message as the reason).
#
# Environment (defaults in brackets):
#   REGISTRY_PORT [8081]                   REST API port (on 127.0.0.1)
#   REGISTRY_MANAGEMENT_PORT [PORT+1]      health endpoints (on 127.0.0.1)
#   REGISTRY_JAVA [see below]              java binary, must be 21 or newer
#   REGISTRY_CACHE_DIR [<repo>/.cache/registry]   bundle, shared by every port
#   REGISTRY_RUN_DIR [$REGISTRY_CACHE_DIR/run-$REGISTRY_PORT]   pid file, log
#   REGISTRY_HEAP [192m]                   JVM -Xmx
#   REGISTRY_START_TIMEOUT [60]            seconds to wait for readiness
#
# Java: $REGISTRY_JAVA if set; else `java` on PATH if it is 21 or newer; else
# the newest /usr/lib/jvm/*/bin/java that is 21 or newer.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
POM=$SCRIPT_DIR/registry/pom.xml
# shellcheck source-path=SCRIPTDIR source=lib/process.sh
source "$SCRIPT_DIR/lib/process.sh"

REGISTRY_HOST=127.0.0.1
REGISTRY_PORT=${REGISTRY_PORT:-8081}
REGISTRY_MANAGEMENT_PORT=${REGISTRY_MANAGEMENT_PORT:-$((REGISTRY_PORT + 1))}
REGISTRY_CACHE_DIR=${REGISTRY_CACHE_DIR:-$REPO_ROOT/.cache/registry}
REGISTRY_RUN_DIR=${REGISTRY_RUN_DIR:-$REGISTRY_CACHE_DIR/run-$REGISTRY_PORT}
REGISTRY_HEAP=${REGISTRY_HEAP:-192m}
REGISTRY_START_TIMEOUT=${REGISTRY_START_TIMEOUT:-60}
STOP_TIMEOUT=30
MIN_JAVA=21
EXIT_NO_JAVA=3

APP_DIR=$REGISTRY_CACHE_DIR/app
APP_MARKER=$APP_DIR/.complete
RUN_JAR=$APP_DIR/quarkus-run.jar
LOG_FILE=$REGISTRY_RUN_DIR/registry.log
PID_FILE=$REGISTRY_RUN_DIR/registry.pid
API_URL=http://$REGISTRY_HOST:$REGISTRY_PORT/apis/ccompat/v7
READY_URL=http://$REGISTRY_HOST:$REGISTRY_MANAGEMENT_PORT/health/ready

# For scripts/lib/process.sh.
LOG_PREFIX="registry.sh[$REGISTRY_PORT]"
LOG_TAIL_LINES=40
LOG_ERROR_REGEX=' ERROR '

[[ $REGISTRY_PORT =~ ^[0-9]+$ ]] || die "REGISTRY_PORT must be a number, not '$REGISTRY_PORT'"
[[ $REGISTRY_MANAGEMENT_PORT =~ ^[0-9]+$ ]] \
  || die "REGISTRY_MANAGEMENT_PORT must be a number, not '$REGISTRY_MANAGEMENT_PORT'"
[[ $REGISTRY_PORT != "$REGISTRY_MANAGEMENT_PORT" ]] \
  || die "REGISTRY_PORT and REGISTRY_MANAGEMENT_PORT must differ"

# ---------------------------------------------------------------- java

# Major version of a java binary (17, 21, 25...), or nothing if it does not run.
java_major() {
  "$1" -XshowSettings:properties -version 2>&1 \
    | sed -n 's/^ *java\.specification\.version = \(1\.\)\{0,1\}\([0-9]*\).*/\2/p' \
    | head -n 1
}

java_ok() {
  local major
  [[ -x $1 ]] || return 1
  major=$(java_major "$1")
  [[ -n $major ]] && ((major >= MIN_JAVA))
}

# Sets JAVA_BIN, or exits with EXIT_NO_JAVA and a one-line reason.
find_java() {
  local candidate major best="" best_major=0
  if [[ -n ${REGISTRY_JAVA:-} ]]; then
    candidate=$(command -v -- "$REGISTRY_JAVA" 2>/dev/null) || candidate=$REGISTRY_JAVA
    if ! java_ok "$candidate"; then
      major=$( [[ -x $candidate ]] && java_major "$candidate" ) || major=""
      [[ -n $major ]] \
        && no_java "REGISTRY_JAVA=$REGISTRY_JAVA is Java $major; the registry needs Java $MIN_JAVA or newer"
      no_java "REGISTRY_JAVA=$REGISTRY_JAVA is not a runnable java (the registry needs Java $MIN_JAVA or newer)"
    fi
    JAVA_BIN=$candidate
    return 0
  fi
  if candidate=$(command -v java 2>/dev/null) && java_ok "$candidate"; then
    JAVA_BIN=$candidate
    return 0
  fi
  for candidate in /usr/lib/jvm/*/bin/java; do
    [[ -x $candidate ]] || continue
    major=$(java_major "$candidate")
    [[ -n $major ]] || continue
    if ((major >= MIN_JAVA && major > best_major)); then
      best=$candidate
      best_major=$major
    fi
  done
  [[ -n $best ]] || no_java "no Java $MIN_JAVA or newer found (not on PATH, not under /usr/lib/jvm; set REGISTRY_JAVA)"
  JAVA_BIN=$best
}

no_java() {
  echo "$LOG_PREFIX: $1" >&2
  exit "$EXIT_NO_JAVA"
}

# ---------------------------------------------------------------- bundle

bundle_ready() {
  [[ -f $APP_MARKER && -f $RUN_JAR ]] && grep -qx "pom-sha256=$(pom_hash)" "$APP_MARKER"
}

# FILL_FN of fetch_once: unpack the bundle into $1, mvn output to $2. The
# plugin's markers go to a fresh folder too, or it would skip the unpack as
# already done.
unpack_bundle() {
  local markers=$REGISTRY_CACHE_DIR/markers.tmp.$$ status=0
  rm -rf -- "$markers"
  mvn -B -q -f "$POM" dependency:unpack \
    -Dregistry.unpack.dir="$1" -Dregistry.markers.dir="$markers" \
    </dev/null >"$2" 2>&1 || status=$?
  rm -rf -- "$markers"
  ((status == 0)) || return "$status"
  [[ -f $1/quarkus-run.jar ]] || { rm -rf -- "$1"; die "the bundle has no quarkus-run.jar"; }
}

bundle_summary() {
  say "bundle ready ($(du -sh "$APP_DIR" | cut -f1))"
}

# Unpack the server bundle from Maven Central into $APP_DIR, unless the marker
# says it was already unpacked from this very pom.
ensure_bundle() {
  fetch_once "$APP_DIR" "the registry bundle" \
    "fetching the registry bundle with Maven into $APP_DIR (about 160 MB, once)" \
    bundle_ready unpack_bundle bundle_summary
}

# ---------------------------------------------------------------- process

# Body of a GET, or failure; short timeouts, as this is polled.
http_get() {
  curl -fsS --max-time 2 "$1" 2>/dev/null
}

# Ready means: the health check says UP and the Confluent-compatible API
# answers on the client port (so a stranger on one of the ports is no match).
service_answers() {
  http_get "$READY_URL" | grep -q '"status" *: *"UP"' || return 1
  http_get "$API_URL/config" >/dev/null
}

# Pid of our registry, if it is alive.
service_pid() {
  managed_pid "-Dquarkus.http.port=$REGISTRY_PORT " "-jar $RUN_JAR"
}

launch() {
  mkdir -p "$REGISTRY_RUN_DIR"
  # Keep the previous run's log for post-mortems.
  [[ -f $LOG_FILE ]] && mv -f -- "$LOG_FILE" "$LOG_FILE.1"
  # setsid + nohup: the registry gets its own session, so it outlives this
  # shell and any terminal or CI step that started it. The run dir is its
  # working directory, so nothing it writes lands in the caller's. It must not
  # inherit the start lock (fd 9), or it would hold it for its whole life.
  (
    cd "$REGISTRY_RUN_DIR"
    exec setsid nohup "$JAVA_BIN" "-Xmx$REGISTRY_HEAP" -XX:+UseSerialGC \
      -Dquarkus.http.host=$REGISTRY_HOST -Dquarkus.http.port="$REGISTRY_PORT" \
      -Dquarkus.management.host=$REGISTRY_HOST \
      -Dquarkus.management.port="$REGISTRY_MANAGEMENT_PORT" \
      -Dquarkus.console.color=false \
      -Dapicurio.rules.global.compatibility=BACKWARD \
      -jar "$RUN_JAR" >"$LOG_FILE" 2>&1 </dev/null 9>&-
  ) &
  echo $! >"$PID_FILE"
}

# ---------------------------------------------------------------- commands

start_registry() {
  local t0=$SECONDS pid
  if service_answers; then
    say "already running; nothing to do"
    say "ready at $API_URL"
    return 0
  fi
  # Two starts on the same port at once: the second waits here for the first,
  # then finds the registry answering, instead of launching a second JVM.
  mkdir -p "$REGISTRY_RUN_DIR"
  exec 9>"$REGISTRY_RUN_DIR/start.lock"
  flock -w $((REGISTRY_START_TIMEOUT + 600)) 9 || die "another start holds $REGISTRY_RUN_DIR/start.lock"
  if service_answers; then
    say "already running; nothing to do"
    say "ready at $API_URL"
    return 0
  fi
  if pid=$(service_pid); then
    # Launched earlier (by a start that gave up or was interrupted): wait for it.
    say "registry process $pid exists but is not ready yet; waiting"
  else
    # Java first: without it, the 160 MB fetch would be for nothing.
    find_java
    need curl "the readiness check uses curl"
    ensure_bundle
    launch
    pid=$(<"$PID_FILE")
    say "launched pid $pid with $JAVA_BIN, log $LOG_FILE"
  fi
  wait_until_answering "$pid" "$REGISTRY_START_TIMEOUT" 0.3 \
    "registry process exited during startup (ports $REGISTRY_PORT and $REGISTRY_MANAGEMENT_PORT free?)" \
    "registry not ready at $READY_URL within ${REGISTRY_START_TIMEOUT}s (stopped it)"
  flock -u 9
  exec 9>&-
  say "ready at $API_URL after $((SECONDS - t0))s"
}

status_registry() {
  status_service "url $API_URL" "not ready"
}

usage() {
  echo "usage: $0 start|stop|kill|status|restart|fetch|java|logs [-f]" >&2
  exit 2
}

main() {
  [[ $# -ge 1 ]] || usage
  case $1 in
    start) start_registry ;;
    stop) stop_service ;;
    kill) kill_service ;;
    status) status_registry ;;
    restart) stop_service && start_registry ;;
    fetch) ensure_bundle ;;
    java) find_java && echo "$JAVA_BIN" ;;
    logs) show_logs registry "${2:-}" ;;
    *) usage ;;
  esac
}

main "$@"
