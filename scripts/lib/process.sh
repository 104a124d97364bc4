# shellcheck shell=bash
# Shared by scripts/kafka.sh and scripts/registry.sh, which source it: messages,
# a cache filled once from Maven Central, and one background JVM driven
# through a pid file (wait until it answers, stop, kill, status, logs).
#
# The sourcing script sets these before it calls anything here:
#   LOG_PREFIX       start of every message, e.g. "kafka.sh[9092]"
#   POM              the pom.xml that Maven fetches from
#   PID_FILE         pid of the launched process
#   LOG_FILE         its stdout and stderr
#   LOG_TAIL_LINES   how many last lines of LOG_FILE a failed start shows
#   LOG_ERROR_REGEX  (grep -E) the lines of LOG_FILE that name an error
#   STOP_TIMEOUT     seconds stop waits after SIGTERM before it sends SIGKILL
# and defines these functions:
#   service_pid      print the pid of our process if it is alive, else fail
#                    (managed_pid below does the work)
#   service_answers  succeed if the service serves clients

say() { echo "$LOG_PREFIX: $*"; }
die() { echo "$LOG_PREFIX: error: $*" >&2; exit 1; }

need() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH ($2)"
}

# ---------------------------------------------------------------- maven cache

pom_hash() {
  sha256sum "$POM" | cut -d' ' -f1
}

# fetch_once DIR WHAT FETCHING READY_FN FILL_FN SUMMARY_FN
#
# Fill DIR (a folder of the cache dir that holds it) with Maven, unless READY_FN
# says it is already filled from this very pom. WHAT names the content in error
# messages; FETCHING is said before the fetch. FILL_FN TMP LOG runs mvn into
# TMP with its output in LOG, and fails if mvn did. SUMMARY_FN reports once DIR
# is filled.
fetch_once() {
  local dir=$1 what=$2 fetching=$3 ready=$4 fill=$5 summary=$6
  "$ready" && return 0
  need mvn "Maven is needed once, to fetch $what"
  local cache=${dir%/*}
  mkdir -p "$cache"
  # Services on other ports share the cache: take a lock so two first starts
  # at once do not both write it.
  exec 8>"$dir.lock"
  flock 8
  if ! "$ready"; then
    say "$fetching"
    # Fill a fresh folder and swap it in only when mvn succeeded, so a failed
    # or interrupted fetch never leaves a half-filled folder behind.
    local tmp=$dir.tmp.$$
    rm -rf -- "$tmp"
    local mvn_log=$cache/mvn.log
    if ! "$fill" "$tmp" "$mvn_log"; then
      rm -rf -- "$tmp"
      tail -n 50 "$mvn_log" >&2
      die "mvn could not fetch $what (full output in $mvn_log)"
    fi
    echo "pom-sha256=$(pom_hash)" >"$tmp/.complete"
    rm -rf -- "$dir"
    mv -- "$tmp" "$dir"
    "$summary"
  fi
  flock -u 8
  exec 8>&-
}

# ---------------------------------------------------------------- process

# managed_pid TEXT...: the pid in PID_FILE, if that process is alive and its
# command line contains every TEXT. The cmdline check guards against a stale
# pid file whose pid was reused, and treats a zombie (empty cmdline) as dead.
managed_pid() {
  [[ -f $PID_FILE ]] || return 1
  local pid text
  pid=$(<"$PID_FILE")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  for text in "$@"; do
    # 2>/dev/null before the < so a process that vanished in between is quiet.
    tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "$text" || return 1
  done
  echo "$pid"
}

# A dead process not yet reaped by its parent stays a zombie: it holds no
# sockets or files any more, so it counts as gone.
pid_running() {
  local state
  state=$(awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null) || return 1
  [[ -n $state && $state != Z ]]
}

wait_for_exit() {
  local pid=$1 seconds=$2
  local deadline=$((SECONDS + seconds))
  while ((SECONDS < deadline)); do
    pid_running "$pid" || return 0
    sleep 0.2
  done
  return 1
}

show_log_tail() {
  echo "---- last $LOG_TAIL_LINES lines of $LOG_FILE ----" >&2
  tail -n "$LOG_TAIL_LINES" "$LOG_FILE" >&2 2>/dev/null || true
  # The cause is often further up, before a stack trace and the shutdown.
  echo "---- first ERROR lines ----" >&2
  grep -E "$LOG_ERROR_REGEX" "$LOG_FILE" 2>/dev/null | head -n 5 >&2 || true
}

# wait_until_answering PID TIMEOUT POLL EXITED_MESSAGE TIMEOUT_MESSAGE
#
# Wait up to TIMEOUT seconds, polling every POLL, for the service launched as
# PID to answer. If the process exits first, or the time runs out (then stop
# it), show the end of its log and die with the message for that case.
wait_until_answering() {
  local pid=$1 timeout=$2 poll=$3 exited=$4 late=$5
  local deadline=$((SECONDS + timeout))
  while ((SECONDS < deadline)); do
    if service_answers; then
      return 0
    fi
    # By pid, not service_pid: right after launch the child may not have
    # exec'd java yet, so its command line does not show what it will run.
    if ! pid_running "$pid"; then
      show_log_tail
      die "$exited"
    fi
    sleep "$poll"
  done
  show_log_tail
  stop_service
  die "$late"
}

# ---------------------------------------------------------------- commands

# Set RUNNING_PID to our live process; else remove a stale pid file, say that
# nothing runs, and fail.
find_running() {
  RUNNING_PID=$(service_pid) && return 0
  rm -f -- "$PID_FILE"
  say "not running"
  return 1
}

stop_service() {
  find_running || return 0
  local pid=$RUNNING_PID
  say "stopping pid $pid (SIGTERM, up to ${STOP_TIMEOUT}s)"
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_for_exit "$pid" "$STOP_TIMEOUT"; then
    say "still running after ${STOP_TIMEOUT}s; sending SIGKILL"
    kill_and_wait "$pid"
  fi
  rm -f -- "$PID_FILE"
  say "stopped"
}

kill_service() {
  find_running || return 0
  local pid=$RUNNING_PID
  kill_and_wait "$pid"
  rm -f -- "$PID_FILE"
  say "killed pid $pid"
}

kill_and_wait() {
  kill -KILL "$1" 2>/dev/null || true
  wait_for_exit "$1" 10 || die "pid $1 survived SIGKILL"
}

# status_service WHERE NOT_READY [RUNNING_EXTRA]
#
# Report running (exit 0) only if the service answers; WHERE says where it
# listens, NOT_READY what to call a live process that does not answer.
status_service() {
  local where=$1 not_ready=$2 running_extra=${3:-} pid=none
  pid=$(service_pid) || pid=none
  if service_answers; then
    say "running, pid $pid, $where$running_extra"
    return 0
  fi
  if [[ $pid != none ]]; then
    say "$not_ready (pid $pid alive: starting or hung), $where"
  else
    say "not running, $where"
  fi
  return 1
}

# show_logs WHAT [-f]: the last 100 lines of LOG_FILE; -f follows it.
show_logs() {
  [[ -f $LOG_FILE ]] || die "no $1 log at $LOG_FILE"
  if [[ ${2:-} == -f ]]; then
    tail -n 100 -F "$LOG_FILE"
  else
    tail -n 100 "$LOG_FILE"
  fi
}
