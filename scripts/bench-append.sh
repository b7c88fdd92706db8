#!/usr/bin/env bash
# Benchmark (not a test): `lamina append` against olot, appending one weights file (default
# 1 GiB) to the multi-layer layout (fixtures/big: 3 layers, one of 32 MiB, copied from the local
# registry with skopeo). Each run gets a fresh copy of the layout; the input file is in the page
# cache for both. Reports wall time and peak memory (max RSS), medians of RUNS runs.
#   SIZE_MIB=1024 RUNS=3 scripts/bench-append.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${SIZE_MIB:-1024}
RUNS=${RUNS:-3}
STATE=${LAMINA_TEST_STATE:-/tmp/lamina-test}
B=$STATE/bench-append
log() { printf '[bench-append] %s\n' "$*" >&2; }

tests/harness/install-deps.sh >/dev/null
cargo build --release --locked -q -p lamina-cli
LAMINA=$PWD/target/release/lamina
OLOT=$(tests/harness/olot.sh)
tests/harness/registry.sh start >/dev/null
tests/harness/fixtures.sh >/dev/null
mkdir -p "$B"
rm -rf "$B/base" && skopeo copy -q --src-tls-verify=false docker://127.0.0.1:5100/fixtures/big:latest "oci:$B/base:latest"

F=$B/model-${SIZE_MIB}m.safetensors
if [[ ! -s $F || $(stat -c %s "$F") != $((SIZE_MIB << 20)) ]]; then
  log "making $F"; head -c $((SIZE_MIB << 20)) /dev/urandom >"$F"
fi
cat "$F" >/dev/null

RES=$B/results-$(date +%s).tsv
printf 'name\twall_s\tmaxrss_MiB\n' >"$RES"
t() {
  local name=$1; shift
  rm -rf "$B/run" && cp -a "$B/base" "$B/run" && sync
  local tf; tf=$(mktemp)
  /usr/bin/time -f '%e %M' -o "$tf" "$@" >/dev/null 2>"$B/$name.err" || { log "FAILED $name"; tail -5 "$B/$name.err" >&2; exit 1; }
  read -r wall rss <"$tf"; rm -f "$tf"
  printf '%s\t%s\t%.1f\n' "$name" "$wall" "$(echo "$rss / 1024" | bc -l)" >>"$RES"
  # both tools must have produced a layout skopeo reads, with the file as the last layer
  local last; last=$(skopeo inspect --raw "oci:$B/run:latest" | jq -r '.layers[-1].annotations["org.opencontainers.image.title"]')
  [[ $last == "$(basename "$F")" ]] || { log "$name: last layer is $last"; exit 1; }
}
for i in $(seq "$RUNS"); do
  t lamina "$LAMINA" append -q "$B/run" "$F"
  t olot "$OLOT" "$B/run" "$F"
done
rm -rf "$B/run"

med() { awk -F'\t' -v n="$1" -v c="$2" '$1==n{print $c}' "$RES" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
L=$(med lamina 2); O=$(med olot 2); LM=$(med lamina 3); OM=$(med olot 3)
log "results ($SIZE_MIB MiB, $RUNS runs, medians; $RES):"
printf '| tool | wall (s) | MB/s | peak RSS (MiB) |\n|---|---|---|---|\n'
printf '| lamina append | %s | %.0f | %s |\n' "$L" "$(echo "($SIZE_MIB*1048576)/$L/1000000" | bc -l)" "$LM"
printf '| olot 1.2.1 | %s | %.0f | %s |\n' "$O" "$(echo "($SIZE_MIB*1048576)/$O/1000000" | bc -l)" "$OM"
printf '\nolot / lamina: %.1fx the time, %.1fx the memory\n' "$(echo "$O/$L" | bc -l)" "$(echo "$OM/$LM" | bc -l)"
