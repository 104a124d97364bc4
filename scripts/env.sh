#!/usr/bin/env bash
# Sourced by the other scripts: a project virtualenv in .venv with the package
# installed, with the extras SESSIONIZER_EXTRAS names (a comma list, as pip takes
# them: SESSIONIZER_EXTRAS=test,dev installs ".[test,dev]").
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$REPO_ROOT/.venv
PYTHON=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
  echo "env.sh: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
extras=${SESSIONIZER_EXTRAS:-}
stamp=$VENV/.installed-$(cat "$REPO_ROOT/pyproject.toml" | sha256sum | cut -c1-16)${extras:+-$extras}
if [ ! -f "$stamp" ]; then
  echo "env.sh: installing sessionizer${extras:+[$extras]} into $VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e "$REPO_ROOT${extras:+[$extras]}"
  touch "$stamp"
fi
export KAFKA_PYTHON=$VENV/bin/python
