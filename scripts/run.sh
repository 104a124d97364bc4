#!/usr/bin/env bash
# Run the service: installs it, starts the local Kafka broker when none answers
# at the configured address, creates the config's source topics (the service
# creates only the topics it writes) and runs with the config.
#
#   bash scripts/run.sh [config/sessionizer.toml]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
CONFIG=${1:-config/sessionizer.toml}

bootstrap=$("$VENV/bin/python" -c '
import sys
from service.config import load_config
print(load_config(sys.argv[1]).bootstrap_servers.split(",")[0])
' "$CONFIG")
host=${bootstrap%:*}
port=${bootstrap##*:}
if ! (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
  case "$host" in
    127.0.0.1|localhost)
      echo "run.sh: no broker at $bootstrap, starting a local one"
      KAFKA_PORT=$port bash scripts/kafka.sh start ;;
    *)
      echo "run.sh: no broker answers at $bootstrap" >&2; exit 1 ;;
  esac
fi
"$VENV/bin/python" scripts/create_topics.py "$CONFIG"
exec "$VENV/bin/sessionizer" run --config "$CONFIG"
