#!/usr/bin/env bash
# Builds the static site into web/dist: the lamina-web crate for wasm32 (SHA-256 with +simd128,
# see .cargo/config.toml), its JS bindings with wasm-bindgen --target web (no wasm-pack), and the
# page's files. Serve web/dist with any static server (the edge worker serves it in production).
# The crate is built where CARGO_TARGET_DIR says (target/ by default).
#   web/build.sh            release build
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release --locked --target wasm32-unknown-unknown -p lamina-web
rm -rf web/dist && mkdir -p web/dist/pkg
wasm-bindgen --target web --out-dir web/dist/pkg "${CARGO_TARGET_DIR:-target}/wasm32-unknown-unknown/release/lamina_web.wasm"
cp web/static/* web/dist/
echo "web/dist: $(du -sh web/dist | cut -f1) ($(stat -c %s web/dist/pkg/lamina_web_bg.wasm) bytes of wasm)"
