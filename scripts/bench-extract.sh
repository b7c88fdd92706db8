#!/usr/bin/env bash
# Benchmark (not a test): `lamina extract -o DIR/` against `curl -s URL | tar -x` (no
# verification: the floor) for one uncompressed weights layer of SIZE_MIB (default 522 MiB) of
# random bytes, on the local plain registry (:5100). lamina verifies digest, size and diff_id;
# curl | tar checks nothing. Output directories are under OUT (default $STATE/bench-extract,
# the same filesystem for every tool; OUT=/dev/shm takes the disk out), removed and synced
# before each run; the blob is in the page cache (warm runs); the order of the tools turns
# each round. BEFORE=PATH adds another lamina binary (e.g. one built from an older commit).
# Reports wall time, CPU time (user + sys, of every process of the command) and peak memory
# (max RSS), medians of RUNS runs, and each tool's wall time over curl | tar's.
#   SIZE_MIB=522 RUNS=5 BEFORE=/path/to/old/lamina scripts/bench-extract.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${SIZE_MIB:-522}
RUNS=${RUNS:-5}
STATE=${LAMINA_TEST_STATE:-/tmp/lamina-test}
B=$STATE/bench-extract
OUT=${OUT:-$B}
REG=127.0.0.1:5100
IMG=$REG/bench/extract-${SIZE_MIB}m:latest
log() { printf '[bench-extract] %s\n' "$*" >&2; }

tests/harness/install-deps.sh >/dev/null
# LAMINA_BIN=PATH: that lamina instead of one built here (in CARGO_TARGET_DIR, target/ by default)
LAMINA=${LAMINA_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/lamina}
[[ -n ${LAMINA_BIN:-} ]] || cargo build --release --locked -q -p lamina-cli
tests/harness/registry.sh start >/dev/null
tests/harness/fixtures.sh >/dev/null
mkdir -p "$B/in/w" "$OUT"

F=$B/in/w/model.bin
if [[ ! -s $F || $(stat -c %s "$F") != $((SIZE_MIB << 20)) ]]; then
  log "making $F"; head -c $((SIZE_MIB << 20)) /dev/urandom >"$F"
fi
# one weights layer (under /src/weights), stored uncompressed: digest == diff_id
layer=$("$LAMINA" -q affix --json --compression none --base "$REG/fixtures/base:latest" --dest "$IMG" "$B/in/w/" | jq -r .layer.digest)
URL=http://$REG/v2/bench/extract-${SIZE_MIB}m/blobs/$layer
log "layer $layer ($SIZE_MIB MiB) of $IMG"
sum=$(sha256sum <"$F" | cut -d' ' -f1)

RES=$B/results-$(date +%s).tsv
printf 'name\twall_s\tmaxrss_MiB\tcpu_s\n' >"$RES"
t() { # name file-it-must-produce command...
  local name=$1 made=$2; shift 2
  rm -rf "$OUT/run" && sync
  local tf; tf=$(mktemp)
  /usr/bin/time -f '%e %M %U %S' -o "$tf" "$@" >/dev/null 2>"$B/$name.err" || { log "FAILED $name"; tail -5 "$B/$name.err" >&2; exit 1; }
  read -r wall rss user sys <"$tf"; rm -f "$tf"
  printf '%s\t%s\t%.1f\t%.2f\n' "$name" "$wall" "$(echo "$rss / 1024" | bc -l)" "$(echo "$user + $sys" | bc -l)" >>"$RES"
  [[ $(sha256sum <"$OUT/run/$made" | cut -d' ' -f1) == "$sum" ]] || { log "$name: $made differs"; exit 1; }
}
tools=(curl lamina)
if [[ -n ${BEFORE:-} ]]; then tools+=(before); fi
run() {
  case $1 in
    curl) t curl src/weights/model.bin bash -c "mkdir '$OUT/run' && curl -sf '$URL' | tar -x -C '$OUT/run'" ;;
    lamina) t lamina model.bin "$LAMINA" -q extract "$IMG" -o "$OUT/run/" ;;
    before) t before model.bin "$BEFORE" -q extract "$IMG" -o "$OUT/run/" ;;
  esac
}
# the order turns each round, so that no tool always runs after the same one
for i in $(seq "$RUNS"); do
  n=${#tools[@]}
  for j in $(seq 0 $((n - 1))); do run "${tools[$(((i + j) % n))]}"; done
done
rm -rf "$OUT/run"

med() { awk -F'\t' -v n="$1" -v c="$2" '$1==n{print $c}' "$RES" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
log "results ($SIZE_MIB MiB, $RUNS runs, medians; $RES):"
C=$(med curl 2)
printf '| tool | wall (s) | MB/s | CPU user+sys (s) | peak RSS (MiB) | wall / curl -s \\| tar -x |\n|---|---|---|---|---|---|\n'
for n in "${tools[@]}"; do
  W=$(med "$n" 2); M=$(med "$n" 3); U=$(med "$n" 4)
  case $n in
    curl) label='curl -s | tar -x (no verification)' ;;
    lamina) label='lamina extract -o DIR/' ;;
    before) label="lamina extract -o DIR/ ($BEFORE)" ;;
  esac
  printf '| %s | %s | %.0f | %s | %s | %.2fx |\n' "$label" "$W" "$(echo "($SIZE_MIB*1048576)/$W/1000000" | bc -l)" "$U" "$M" "$(echo "$W/$C" | bc -l)"
done
