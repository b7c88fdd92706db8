#!/usr/bin/env bash
# Benchmark (not a test): `lamina pack -j 1` against `-j 4` over a WAN-like link: four files of
# SIZE_MIB (default 48) of random bytes, pushed through a proxy that reads each upload's body at
# RATE bytes a second (default 24 MB/s, one TCP stream over a long path), into the local plain
# registry. Reports wall time and peak memory (max RSS), medians of RUNS runs, and the speed-up.
#   RATE=24000000 SIZE_MIB=48 RUNS=3 scripts/bench-pack.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${SIZE_MIB:-48}
RATE=${RATE:-24000000}
RUNS=${RUNS:-3}
STATE=${LAMINA_TEST_STATE:-/tmp/lamina-test}
B=$STATE/bench-pack
REG=127.0.0.1:5100
log() { printf '[bench-pack] %s\n' "$*" >&2; }

tests/harness/install-deps.sh >/dev/null
# LAMINA_BIN=PATH: that lamina instead of one built here (in CARGO_TARGET_DIR, target/ by default)
LAMINA=${LAMINA_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/lamina}
[[ -n ${LAMINA_BIN:-} ]] || cargo build --release --locked -q -p lamina-cli
cargo build --release --locked -q -p lamina-tests --example throttle-proxy
PROXY_BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/examples/throttle-proxy
tests/harness/registry.sh start >/dev/null
mkdir -p "$B/model"
for i in 1 2 3 4; do
  f=$B/model/model-0000$i-of-00004.safetensors
  [[ -s $f && $(stat -c %s "$f") == $((SIZE_MIB << 20)) ]] || head -c $((SIZE_MIB << 20)) /dev/urandom >"$f"
done

coproc PROXY { exec "$PROXY_BIN" "$REG" "$RATE"; }
read -r ADDR <&"${PROXY[0]}"
log "proxy $ADDR -> $REG at $RATE B/s per upload"
RES=$B/results-$(date +%s).tsv
printf 'jobs\twall_s\tmaxrss_MiB\n' >"$RES"
for r in $(seq "$RUNS"); do
  for j in 1 4; do
    cache=$(mktemp -d)
    /usr/bin/time -f '%e %M' -o "$B/t" env LAMINA_CACHE_DIR="$cache" \
      "$LAMINA" -q pack "$B/model" --dest "$ADDR/bench/pack-$(date +%s%N)-j$j:r$r" -j "$j" >/dev/null
    read -r wall kb <"$B/t"
    printf '%s\t%s\t%s\n' "$j" "$wall" "$((kb / 1024))" >>"$RES"
    rm -rf "$cache"
  done
done
exec {PROXY[1]}>&-
med() { awk -F'\t' -v j="$1" -v c="$2" '$1==j{print $c}' "$RES" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
J1=$(med 1 2); J4=$(med 4 2)
printf '| jobs | wall (s) | MB/s | peak RSS (MiB) |\n|---|---|---|---|\n'
for j in 1 4; do
  w=$(med $j 2)
  printf '| -j %s | %s | %.0f | %s |\n' "$j" "$w" "$(echo "4*$SIZE_MIB*1048576/$w/1000000" | bc -l)" "$(med $j 3)"
done
printf '\n-j 4 is %.2fx faster than -j 1 (4 files of %s MiB, each upload read at %s B/s)\n' "$(echo "$J1/$J4" | bc -l)" "$SIZE_MIB" "$RATE"
