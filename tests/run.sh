#!/usr/bin/env bash
# The one command that runs every test (README "Tests"; .ci/run calls it too):
#   formatting, clippy, core's dependency rule, unit tests (native and wasm32 in Node),
#   the end-to-end tests against real registries on 127.0.0.1 (and through a fault-injecting
#   proxy), a bounded fuzzing run of core's parsers and decoders, the browser uploader in headless
#   Chromium and Firefox, and the edge Worker in workerd.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '\n[tests] %s\n' "$*"; }

tests/setup.sh

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "core is sans-IO: no HTTP client, async runtime or file-system crate in its dependency tree"
forbidden='^(reqwest|hyper|http|h2|tokio|async-std|smol|mio|futures|filetime|walkdir|tempfile|libc|ureq|curl|socket2) v'
if cargo tree -p lamina-core -e normal --prefix none --locked | grep -E "$forbidden"; then
  echo "lamina-core depends on the crates above; it must stay sans-IO" >&2
  exit 1
fi

log "registries and fixtures"
tests/harness/registry.sh start
tests/harness/fixtures.sh

log "cargo test (unit and end-to-end)"
# a failed test keeps its temporary directory for a look; the next run starts without them
rm -rf "${LAMINA_TEST_STATE:-/tmp/lamina-test}/tmp"
cargo test --workspace --locked

log "fuzzing: every cargo-fuzz target for 20 s (scripts/fuzz.sh 300 runs them longer)"
scripts/fuzz.sh 20

log "core's tests on wasm32-unknown-unknown"
cargo test -p lamina-core --target wasm32-unknown-unknown --locked

log "the browser uploader and the edge Worker: build web/dist and edge/build, drive the page in"
log "headless Chromium and Firefox, run the Worker in workerd (wrangler dev --local)"
cargo clippy -p lamina-web -p lamina-edge -p lamina-wasm --target wasm32-unknown-unknown --locked -- -D warnings
web/build.sh
edge/build.sh
(cd tests/web && npm test)

log "all tests passed"
