#!/usr/bin/env bash
# Builds the Worker bundle into build/ (index.js + index_bg.wasm).
# wrangler runs this itself ([build] in wrangler.toml); so do the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/toolchain.sh
# worker-build would download wasm-bindgen and wasm-opt from GitHub; point
# it at the pinned local copies instead (see the README, "Run it").
export WASM_BINDGEN_BIN="$(command -v wasm-bindgen)"
export WASM_OPT_BIN="$PWD/node_modules/.bin/wasm-opt"
export ESBUILD_BIN="$PWD/node_modules/.bin/esbuild"
worker-build --release
