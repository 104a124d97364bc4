#!/usr/bin/env bash
# The whole test suite: installs what it needs, runs ruff and mypy (settings in
# pyproject.toml), starts a throwaway Kafka broker (its own port and data
# directory), runs unit and integration tests, stops it.
#
#   bash scripts/test.sh                 # everything
#   bash scripts/test.sh -m "not chaos"  # any pytest arguments
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SESSIONIZER_EXTRAS=test,dev source scripts/env.sh

# Lint and type checks first: they need no broker, and a failure stops the run.
if ! "$VENV/bin/python" -m ruff check service tests bench scripts; then
  echo "test.sh: ruff check failed (lint errors above)" >&2
  exit 1
fi
if ! "$VENV/bin/python" -m mypy; then
  echo "test.sh: mypy failed (type errors above)" >&2
  exit 1
fi

export KAFKA_PORT=${SESSIONIZER_TEST_KAFKA_PORT:-19092}
# A SASL/PLAIN listener too, for the authentication-failure test.
export KAFKA_SASL_PORT=${SESSIONIZER_TEST_KAFKA_SASL_PORT:-$((KAFKA_PORT + 2))}
KAFKA_DATA_DIR=$(mktemp -d "${TMPDIR:-/tmp}/sessionizer-test-kafka.XXXXXX")
export KAFKA_DATA_DIR
cleanup() {
  bash scripts/kafka.sh stop >/dev/null 2>&1 || true
  rm -rf "$KAFKA_DATA_DIR"
}
trap cleanup EXIT
bash scripts/kafka.sh start

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
