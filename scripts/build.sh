#!/usr/bin/env bash
# Builds the Worker bundle into build/ (index.js + index_bg.wasm).
# wrangler runs this itself ([build] in wrangler.toml); so do the tests.
#
# The steps worker-build would take, with our own entry module
# (src/worker.js; why, in its header) in place of its generated one:
#   1. cargo builds the crate for wasm32;
#   2. wasm-bindgen writes the JavaScript glue, with the state-reset
#      function and abort handler that let src/worker.js recover from a panic;
#   3. wasm-opt optimizes the module (keeping its function names, so
#      profiles stay readable);
#   4. esbuild bundles src/worker.js with the glue into build/index.js; the
#      .wasm stays a separate module. Names are kept (whitespace and syntax
#      minified only), so a profile names the glue's functions too.
# Every tool is a pinned local copy (scripts/toolchain.sh): nothing is
# downloaded at build time.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/toolchain.sh

cargo build --lib --release --target wasm32-unknown-unknown

stage=build/.stage
rm -rf "$stage"
mkdir -p "$stage"
wasm-bindgen target/wasm32-unknown-unknown/release/edge_hub.wasm \
  --out-dir "$stage" --out-name index --target module --no-typescript \
  --experimental-reset-state-function --force-enable-abort-handler
# The feature set workerd accepts (as worker-build passes it), no newer.
node_modules/.bin/wasm-opt "$stage/index_bg.wasm" -O --debuginfo \
  --enable-mutable-globals --enable-sign-ext --enable-nontrapping-float-to-int \
  --enable-bulk-memory --enable-multivalue --enable-reference-types \
  --enable-exception-handling -o "$stage/index_bg.opt.wasm"
mv "$stage/index_bg.opt.wasm" "$stage/index_bg.wasm"
cp src/worker.js src/memo.js "$stage/"
# wasm-bindgen lists a snippet module used twice under one key twice (the
# same module both times): silenced, not a bug of ours.
node_modules/.bin/esbuild "$stage/worker.js" --bundle --format=esm --minify-syntax --minify-whitespace \
  --external:./index_bg.wasm '--external:cloudflare:*' \
  --outfile="$stage/bundle.js" --log-level=warning --log-override:duplicate-object-key=silent
# wasm-bindgen imports the module's source phase; the runtime and wrangler
# take the module itself.
sed -i 's/import source /import /' "$stage/bundle.js"

mv "$stage/bundle.js" build/index.js
mv "$stage/index_bg.wasm" build/index_bg.wasm
rm -rf "$stage" build/worker build/package.json
echo "built build/index.js and build/index_bg.wasm"
