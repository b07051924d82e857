#!/usr/bin/env bash
# The benchmark command (not part of the tests): installs and starts every
# system on loopback, runs every scenario side by side, and writes
# bench/results/<stamp>.{jsonl,md} and <stamp>-latency.svg.
#
#   npm run bench              # full sizes (about 15 minutes)
#   npm run bench -- --quick   # a tenth of the sizes, to try it out
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/toolchain.sh

bash scripts/build.sh

if ! command -v nginx >/dev/null || ! dpkg -s libnginx-mod-nchan >/dev/null 2>&1; then
  echo "== installing nginx with Nchan (Debian packages)"
  SUDO=""
  [[ $EUID -ne 0 ]] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx-light libnginx-mod-nchan >/dev/null
fi
(cd bench/socketio && npm ci --no-audit --no-fund >/dev/null)
(cd bench/loadgen && cargo build --release --quiet)

# 10,000 idle WebSockets need that many descriptors on each side.
ulimit -n "$(ulimit -Hn)"
node bench/run.mjs "$@"
