#!/usr/bin/env bash
# Benchmark (not a test): the browser uploader in headless Chromium against the CLI, for one
# weights file (default 1 GiB) onto the 3-layer base in the local registry (CORS-enabled, :5100):
#   - layer building + hashing in the browser (goal in issue 6: at least 300 MB/s)
#   - the whole affix in the browser against `lamina affix` for the same file (goal: within 1.5x)
#   - the floor: the same file PATCHed in 64 MiB slices by plain JS, no lamina (what Chromium's
#     uploads alone take here)
# Medians of RUNS runs.      SIZE_MIB=1024 RUNS=3 scripts/bench-web.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${SIZE_MIB:-1024}
RUNS=${RUNS:-3}
STATE=${LAMINA_TEST_STATE:-/tmp/lamina-test}
B=$STATE/bench-web
log() { printf '[bench-web] %s\n' "$*" >&2; }
tests/setup.sh >/dev/null
# LAMINA_BIN=PATH: that lamina instead of one built here (in CARGO_TARGET_DIR, target/ by default)
LAMINA=${LAMINA_BIN:-${CARGO_TARGET_DIR:-target}/release/lamina}
[[ -n ${LAMINA_BIN:-} ]] || cargo build --release --locked -q -p lamina-cli
web/build.sh >/dev/null
tests/harness/registry.sh start >/dev/null
tests/harness/fixtures.sh >/dev/null
mkdir -p "$B"
F=$B/model-${SIZE_MIB}m.safetensors
[[ -s $F && $(stat -c %s "$F") == $((SIZE_MIB << 20)) ]] || head -c $((SIZE_MIB << 20)) /dev/urandom >"$F"
cat "$F" >/dev/null
RUNID=$(date +%s)
node tests/web/bench-web.mjs "$F" "127.0.0.1:5100/bench/web-$RUNID" "$RUNS" >"$B/web.jsonl" 2>"$B/web.err" || { cat "$B/web.err" >&2; exit 1; }
: >"$B/cli.txt"
for i in $(seq "$RUNS"); do
  /usr/bin/time -f '%e' -a -o "$B/cli.txt" "$LAMINA" -q affix --chunked --chunk-size 64 \
    --base 127.0.0.1:5100/fixtures/big:latest --dest "127.0.0.1:5100/bench/cli-$RUNID:c$i" "$F" >/dev/null
done
: >"$B/cli-stream.txt"
for i in $(seq "$RUNS"); do
  /usr/bin/time -f '%e' -a -o "$B/cli-stream.txt" "$LAMINA" -q affix \
    --base 127.0.0.1:5100/fixtures/big:latest --dest "127.0.0.1:5100/bench/cli-$RUNID:s$i" "$F" >/dev/null
done
med() { sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
BUILD=$(jq -r 'select(.kind=="build") | .bytes / .ms / 1000' "$B/web.jsonl" | med)
WEB=$(jq -r 'select(.kind=="affix") | .ms / 1000' "$B/web.jsonl" | med)
FLOOR=$(jq -r 'select(.kind=="floor") | .ms / 1000' "$B/web.jsonl" | med)
CLI=$(med <"$B/cli.txt"); CLIS=$(med <"$B/cli-stream.txt")
log "results ($SIZE_MIB MiB, $RUNS runs, medians):"
printf '| | value |\n|---|---|\n'
printf '| browser: layer building + hashing | %.0f MB/s |\n' "$BUILD"
printf '| browser: affix (64 MiB PATCH chunks) | %.2f s |\n' "$WEB"
printf '| browser: plain-JS upload of the file, no lamina (floor) | %.2f s |\n' "$FLOOR"
printf '| CLI: affix --chunked --chunk-size 64 | %.2f s |\n' "$CLI"
printf '| CLI: affix (one streamed PATCH) | %.2f s |\n' "$CLIS"
printf '\nbrowser / CLI chunked = %.2fx; browser / CLI streamed = %.2fx; browser / floor = %.2fx; floor / CLI streamed = %.2fx\n' \
  "$(echo "$WEB/$CLI" | bc -l)" "$(echo "$WEB/$CLIS" | bc -l)" "$(echo "$WEB/$FLOOR" | bc -l)" "$(echo "$FLOOR/$CLIS" | bc -l)"
