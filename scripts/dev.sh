#!/usr/bin/env bash
# Builds the hub and serves it locally under workerd (wrangler dev), with
# room state persisted in .state/ so it survives a restart.
# PORT and HUB_STATE_DIR override the port and the state folder; further
# arguments go to `wrangler dev` (e.g. `--var RATE_PER_SEC:1`). The tests
# start the hub through this script (scripts/launch/wrangler-dev.mjs).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/toolchain.sh
PORT="${PORT:-8787}"
STATE_DIR="${HUB_STATE_DIR:-.state}"
echo "Starting the hub on http://127.0.0.1:$PORT (state in $STATE_DIR/; Ctrl-C stops it)"
exec node_modules/.bin/wrangler dev --ip 127.0.0.1 --port "$PORT" --persist-to "$STATE_DIR" --inspector-port 0 "$@"
