#!/usr/bin/env bash
# The whole test suite: native unit tests of the pure core, then the built
# Worker under workerd (Miniflare) driven by Node's test runner over real
# HTTP, WebSocket and SSE connections on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/toolchain.sh

if [[ -z "${CHROMIUM_PATH:-}" && ! -x /usr/bin/chromium ]]; then
  echo "== installing Debian's Chromium for the browser tests"
  SUDO=""
  [[ $EUID -ne 0 ]] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

echo "== cargo test (pure core, native)"
cargo test --quiet

echo "== build the Worker (wasm32)"
bash scripts/build.sh

echo "== integration tests (workerd via Miniflare)"
# Files run one at a time: each starts its own workerd, and these machines
# have two cores. Every test carries its own timeout as well.
node --test --test-concurrency=1 --test-timeout=120000 tests/
