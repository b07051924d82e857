#!/usr/bin/env bash
# Builds the hub and serves it locally under workerd (wrangler dev), with
# room state persisted in .state/ so it survives a restart.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/toolchain.sh
PORT="${PORT:-8787}"
echo "Starting the hub on http://127.0.0.1:$PORT (state in .state/; Ctrl-C stops it)"
exec node_modules/.bin/wrangler dev --ip 127.0.0.1 --port "$PORT" --persist-to .state --inspector-port 0
