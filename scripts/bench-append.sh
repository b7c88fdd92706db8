#!/usr/bin/env bash
# Benchmark (not a test): `lamina append` against olot, appending one weights file (default
# 1 GiB) to two multi-layer layouts:
#   small: fixtures/big as skopeo copies it from the local registry (3 layers, one of 32 MiB)
#   big:   the shape of the shared test bed's multi-layer image (5 layers: fixtures/big, a
#          200 MiB pseudo-random layer, a layer of 2,000 small files)
# Each run gets a fresh copy of the layout; the input file is in the page cache for both tools.
# Reports wall time and peak memory (max RSS), medians of RUNS runs.
#   SIZE_MIB=1024 RUNS=5 scripts/bench-append.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${SIZE_MIB:-1024}
RUNS=${RUNS:-3}
STATE=${LAMINA_TEST_STATE:-/tmp/lamina-test}
B=$STATE/bench-append
log() { printf '[bench-append] %s\n' "$*" >&2; }

tests/harness/install-deps.sh >/dev/null
# LAMINA_BIN=PATH: that lamina instead of one built here (in CARGO_TARGET_DIR, target/ by default)
LAMINA=${LAMINA_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/lamina}
[[ -n ${LAMINA_BIN:-} ]] || cargo build --release --locked -q -p lamina-cli
OLOT=$(tests/harness/olot.sh)
tests/harness/registry.sh start >/dev/null
tests/harness/fixtures.sh >/dev/null
mkdir -p "$B"
rm -rf "$B/small" "$B/big" "$B/parts" "$B/base" && mkdir -p "$B/parts/many"
skopeo copy -q --src-tls-verify=false docker://127.0.0.1:5100/fixtures/big:latest "oci:$B/small:latest"
head -c $((200 << 20)) /dev/urandom >"$B/parts/blob.bin"
for i in $(seq 2000); do echo "file $i" >"$B/parts/many/f$i.txt"; done
"$LAMINA" -q affix --base "oci:$B/small:latest" --dest "oci:$B/parts/mid:latest" --path /opt/big "$B/parts/blob.bin" >/dev/null
"$LAMINA" -q affix --base "oci:$B/parts/mid:latest" --dest "oci:$B/big:latest" --path /opt/many "$B/parts/many" >/dev/null
rm -rf "$B/parts"

F=$B/model-${SIZE_MIB}m.safetensors
if [[ ! -s $F || $(stat -c %s "$F") != $((SIZE_MIB << 20)) ]]; then
  log "making $F"; head -c $((SIZE_MIB << 20)) /dev/urandom >"$F"
fi
cat "$F" >/dev/null

RES=$B/results-$(date +%s).tsv
printf 'name\twall_s\tmaxrss_MiB\n' >"$RES"
t() {
  local name=$1 base=$2; shift 2
  rm -rf "$B/run" && cp -a "$B/$base" "$B/run" && sync
  local tf; tf=$(mktemp)
  /usr/bin/time -f '%e %M' -o "$tf" "$@" >/dev/null 2>"$B/$name.err" || { log "FAILED $name"; tail -5 "$B/$name.err" >&2; exit 1; }
  read -r wall rss <"$tf"; rm -f "$tf"
  printf '%s\t%s\t%.1f\n' "$name" "$wall" "$(echo "$rss / 1024" | bc -l)" >>"$RES"
  # both tools must have produced a layout skopeo reads, with the file as the last layer
  local last; last=$(skopeo inspect --raw "oci:$B/run:latest" | jq -r '.layers[-1].annotations["org.opencontainers.image.title"]')
  [[ $last == "$(basename "$F")" ]] || { log "$name: last layer is $last"; exit 1; }
}
for i in $(seq "$RUNS"); do
  for base in small big; do
    t "lamina-$base" "$base" "$LAMINA" append -q "$B/run" "$F"
    t "olot-$base" "$base" "$OLOT" "$B/run" "$F"
  done
done
rm -rf "$B/run"

med() { awk -F'\t' -v n="$1" -v c="$2" '$1==n{print $c}' "$RES" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
log "results ($SIZE_MIB MiB, $RUNS runs, medians; $RES):"
printf '| layout | tool | wall (s) | MB/s | peak RSS (MiB) |\n|---|---|---|---|---|\n'
for base in small big; do
  L=$(med "lamina-$base" 2); O=$(med "olot-$base" 2); LM=$(med "lamina-$base" 3); OM=$(med "olot-$base" 3)
  printf '| %s | lamina append | %s | %.0f | %s |\n' "$base" "$L" "$(echo "($SIZE_MIB*1048576)/$L/1000000" | bc -l)" "$LM"
  printf '| %s | olot 1.2.1 | %s | %.0f | %s |\n' "$base" "$O" "$(echo "($SIZE_MIB*1048576)/$O/1000000" | bc -l)" "$OM"
  printf '| %s | olot / lamina | %.1fx | | %.1fx |\n' "$base" "$(echo "$O/$L" | bc -l)" "$(echo "$OM/$LM" | bc -l)"
done
