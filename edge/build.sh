#!/usr/bin/env bash
# Builds the edge Worker into edge/build: lamina-edge for wasm32 and its bindings with
# wasm-bindgen --target web (entry.mjs instantiates them; no worker-build, no downloads).
# The page it serves is web/dist (web/build.sh). The crate is built where CARGO_TARGET_DIR says
# (target/ by default).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release --locked --target wasm32-unknown-unknown -p lamina-edge
rm -rf edge/build && mkdir -p edge/build
wasm-bindgen --target web --out-name index --out-dir edge/build "${CARGO_TARGET_DIR:-target}/wasm32-unknown-unknown/release/lamina_edge.wasm"
echo "edge/build: $(stat -c %s edge/build/index_bg.wasm) bytes of wasm"
