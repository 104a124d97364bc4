#!/usr/bin/env bash
# The whole test suite: installs what it needs, runs ruff and mypy (settings in
# pyproject.toml), starts a throwaway Kafka broker (its own data directory) and
# a schema registry (scripts/registry.sh), runs unit and integration tests,
# stops them. Without a JDK of 21 or newer the registry cannot run: its tests
# are then reported as skipped, with the reason; in CI (CI=true, as CI runs
# .ci/run) the run fails instead, at once.
#
# Ports: the broker listens on KAFKA_PORT, +1 (controller) and +2 (SASL), the
# registry on its port and +1 (management). They are free ports picked at
# random (scripts/free_ports.py) and printed, so two runs on one machine do not
# collide, unless the caller sets SESSIONIZER_TEST_KAFKA_PORT,
# SESSIONIZER_TEST_KAFKA_SASL_PORT or SESSIONIZER_TEST_REGISTRY_PORT.
#
#   bash scripts/test.sh                 # everything
#   bash scripts/test.sh -m "not chaos"  # any pytest arguments
#   SESSIONIZER_TEST_KAFKA_PORT=19092 bash scripts/test.sh   # a fixed broker port
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# CI=true (as CI sets it); empty, 0, false or no is not CI. The same rule as
# in_ci in tests/integration/expected.py.
in_ci() {
  case $(printf '%s' "${CI:-}" | tr '[:upper:]' '[:lower:]') in
    "" | 0 | false | no) return 1 ;;
    *) return 0 ;;
  esac
}

# The schema registry, for tests/integration/test_registry.py. `registry.sh java`
# exits 3 when no JDK >= 21 is found: those tests then skip with its reason. In
# CI a skip would hide them from a green run, so the run fails here, before
# anything is installed or started (tests/integration/conftest.py fails them in
# CI too, should the registry be missing when they run).
registry_skip=
set +e
java_reason=$(bash scripts/registry.sh java 2>&1 >/dev/null)
java_status=$?
set -e
if [ "$java_status" -eq 3 ]; then
  registry_skip=${java_reason#*: }
  if in_ci; then
    echo "test.sh: no schema registry: $registry_skip" >&2
    echo "test.sh: in CI (CI=$CI) the schema registry tests must run, not be skipped: give this machine a JDK of 21 or newer (on PATH, under /usr/lib/jvm, or named by REGISTRY_JAVA)" >&2
    exit 1
  fi
  echo "test.sh: no schema registry: $registry_skip (its tests will be skipped; in CI they fail the run)" >&2
elif [ "$java_status" -ne 0 ]; then
  echo "test.sh: registry.sh java failed: $java_reason" >&2
  exit 1
fi

SESSIONIZER_EXTRAS=test,dev,registry source scripts/env.sh

# Lint and type checks first: they need no broker, and a failure stops the run.
if ! "$VENV/bin/python" -m ruff check service tests bench scripts; then
  echo "test.sh: ruff check failed (lint errors above)" >&2
  exit 1
fi
if ! "$VENV/bin/python" -m mypy; then
  echo "test.sh: mypy failed (type errors above)" >&2
  exit 1
fi

# Free ports for what the caller did not set, clear of what it did set.
avoid=()
if [ -n "${SESSIONIZER_TEST_KAFKA_PORT:-}" ]; then
  avoid+=("$SESSIONIZER_TEST_KAFKA_PORT" "$((SESSIONIZER_TEST_KAFKA_PORT + 1))" "$((SESSIONIZER_TEST_KAFKA_PORT + 2))")
fi
if [ -n "${SESSIONIZER_TEST_KAFKA_SASL_PORT:-}" ]; then
  avoid+=("$SESSIONIZER_TEST_KAFKA_SASL_PORT")
fi
if [ -n "${SESSIONIZER_TEST_REGISTRY_PORT:-}" ]; then
  avoid+=("$SESSIONIZER_TEST_REGISTRY_PORT" "$((SESSIONIZER_TEST_REGISTRY_PORT + 1))")
fi
free=$("$VENV/bin/python" scripts/free_ports.py 3 2 --avoid ${avoid[@]+"${avoid[@]}"})
read -r free_kafka free_registry <<<"$free"
export KAFKA_PORT=${SESSIONIZER_TEST_KAFKA_PORT:-$free_kafka}
# A SASL/PLAIN listener too, for the authentication-failure test.
export KAFKA_SASL_PORT=${SESSIONIZER_TEST_KAFKA_SASL_PORT:-$((KAFKA_PORT + 2))}
KAFKA_DATA_DIR=$(mktemp -d "${TMPDIR:-/tmp}/sessionizer-test-kafka.XXXXXX")
export KAFKA_DATA_DIR
export SESSIONIZER_TEST_REGISTRY_PORT=${SESSIONIZER_TEST_REGISTRY_PORT:-$free_registry}
echo "test.sh: Kafka on 127.0.0.1:$KAFKA_PORT (controller $((KAFKA_PORT + 1)), SASL $KAFKA_SASL_PORT);" \
  "schema registry on 127.0.0.1:$SESSIONIZER_TEST_REGISTRY_PORT (management $((SESSIONIZER_TEST_REGISTRY_PORT + 1)))"
registry_started=
cleanup() {
  bash scripts/kafka.sh stop >/dev/null 2>&1 || true
  rm -rf "$KAFKA_DATA_DIR"
  if [ -n "$registry_started" ]; then
    REGISTRY_PORT=$SESSIONIZER_TEST_REGISTRY_PORT bash scripts/registry.sh stop >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT
bash scripts/kafka.sh start

# The schema registry (Java was checked above).
if [ -n "$registry_skip" ]; then
  export SESSIONIZER_TEST_REGISTRY_SKIP=$registry_skip
else
  registry_started=1
  REGISTRY_PORT=$SESSIONIZER_TEST_REGISTRY_PORT bash scripts/registry.sh start
fi

export SESSIONIZER_TEST_BOOTSTRAP=127.0.0.1:$KAFKA_PORT
export SESSIONIZER_TEST_SASL_BOOTSTRAP=127.0.0.1:$KAFKA_SASL_PORT
export SESSIONIZER_TEST_KAFKA_SCRIPT=$PWD/scripts/kafka.sh
set +e
"$VENV/bin/python" -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "test.sh: pytest collected no tests; that is a failure here" >&2
  exit 1
fi
exit "$status"
