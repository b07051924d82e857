#!/usr/bin/env bash
# Sourced by the other scripts: installs, once, everything the build and
# the tests need on a machine that has only rustup/cargo and node/npm.
# Every step checks first, so running it again costs a few seconds.
set -euo pipefail

WASM_BINDGEN_VERSION=0.2.130   # must equal the wasm-bindgen crate in Cargo.lock

export PATH="$HOME/.cargo/bin:$PATH"
export WRANGLER_SEND_METRICS=false WRANGLER_SEND_ERROR_REPORTS=false CLOUDFLARE_CF_FETCH_ENABLED=false

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  rustup target add wasm32-unknown-unknown
fi
if [[ "$(wasm-bindgen --version 2>/dev/null || true)" != *"$WASM_BINDGEN_VERSION"* ]]; then
  # Not --locked: its lockfile does not resolve on current registries.
  cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION"
fi
if [[ ! -x node_modules/.bin/wrangler || package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-audit --no-fund
fi
