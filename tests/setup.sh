#!/usr/bin/env bash
# Installs everything the tests need, idempotently, on Debian 12 (as root, or through sudo):
# Debian packages (registry, skopeo, umoci, ...), the wasm32 target, and wasm-bindgen-cli at the
# exact version of the wasm-bindgen crate in Cargo.lock (its test runner runs core's tests in Node),
# cargo-fuzz, olot (PyPI, in a virtualenv) for the tests that compare `lamina append` with it, and
# playwright-core and puppeteer-core (npm) with Debian's chromium and firefox-esr for the browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[setup] %s\n' "$*"; }

tests/harness/install-deps.sh

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  log "rustup target add wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi

WBG=$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/version = |"/, ""); print; exit}' Cargo.lock)
if [[ -z $WBG ]]; then echo "[setup] wasm-bindgen not found in Cargo.lock" >&2; exit 1; fi
if ! wasm-bindgen-test-runner --version 2>/dev/null | grep -q " $WBG\$"; then
  log "cargo install wasm-bindgen-cli $WBG (2-4 minutes, once)"
  cargo install -q wasm-bindgen-cli --version "$WBG"
fi
# cargo-fuzz builds the fuzz targets (fuzz/) on stable Rust; tests/run.sh runs them briefly
CARGO_FUZZ=$(sed -n 's/^CARGO_FUZZ_VERSION=//p' scripts/fuzz.sh)
if ! cargo fuzz --version 2>/dev/null | grep -q " $CARGO_FUZZ\$"; then
  log "cargo install cargo-fuzz $CARGO_FUZZ (about a minute, once)"
  cargo install -q cargo-fuzz --locked --version "$CARGO_FUZZ"
fi
tests/harness/olot.sh >/dev/null
command -v node >/dev/null || { log "apt-get install nodejs"; apt-get install -y -q nodejs >/dev/null; }
command -v npm >/dev/null || { log "apt-get install npm"; apt-get install -y -q --no-install-recommends npm >/dev/null; }
# playwright-core drives Debian's chromium, puppeteer-core its firefox-esr (WebDriver BiDi), in
# the browser tests (no browser download)
if ! cmp -s tests/web/package-lock.json tests/web/node_modules/.lamina-installed-lock; then
  log "npm ci (tests/web: playwright-core, puppeteer-core)"
  (cd tests/web && npm ci --no-audit --no-fund --loglevel=error && cp package-lock.json node_modules/.lamina-installed-lock)
fi
# wrangler (pinned to 4.86.0, the last release that runs on Node 20) runs the edge Worker in
# workerd for the edge tests
if ! cmp -s edge/package-lock.json edge/node_modules/.lamina-installed-lock; then
  log "npm ci (edge: wrangler)"
  (cd edge && npm ci --no-audit --no-fund --loglevel=error && cp package-lock.json node_modules/.lamina-installed-lock)
fi
log "ready: $(wasm-bindgen-test-runner --version), node $(node --version)"
