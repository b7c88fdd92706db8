#!/usr/bin/env bash
# Benchmark (not a test): `lamina slice` against a full export for a 5-layer image where only the
# top layer changed. The base (4 layers: fixtures/big + a 64 MiB layer) is on both the "online"
# registry (plain, :5100) and the "offline" one (Basic auth, :5101); the image adds one new
# SIZE_MIB layer online. Compared:
#   lamina: slice save (online) -> archive -> slice load (offline, base mounted with --from)
#   full:   skopeo copy docker://online oci-archive:full.tar -> skopeo copy it to offline
# Reports archive sizes and save+load times (medians of RUNS runs).
#   SIZE_MIB=256 RUNS=3 scripts/bench-slice.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${SIZE_MIB:-256}
RUNS=${RUNS:-3}
STATE=${LAMINA_TEST_STATE:-/tmp/lamina-test}
B=$STATE/bench-slice
ON=127.0.0.1:5100
OFF=127.0.0.1:5101
CREDS=testuser:testpass
RUNID=$(date +%s)
log() { printf '[bench-slice] %s\n' "$*" >&2; }

tests/harness/install-deps.sh >/dev/null
# LAMINA_BIN=PATH: that lamina instead of one built here (in CARGO_TARGET_DIR, target/ by default)
LAMINA=${LAMINA_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/lamina}
[[ -n ${LAMINA_BIN:-} ]] || cargo build --release --locked -q -p lamina-cli
tests/harness/registry.sh start >/dev/null
tests/harness/fixtures.sh >/dev/null
rm -rf "$B" && mkdir -p "$B"

head -c $((64 << 20)) /dev/urandom >"$B/base-layer.bin"
head -c $((SIZE_MIB << 20)) /dev/urandom >"$B/top-layer.bin"
export SOURCE_DATE_EPOCH=0
"$LAMINA" -q affix --base "$ON/fixtures/big:latest" --dest "$ON/bench/base:$RUNID" "$B/base-layer.bin" >/dev/null
"$LAMINA" -q affix --base "$ON/bench/base:$RUNID" --dest "$ON/bench/model:$RUNID" "$B/top-layer.bin" >/dev/null
# the offline site has the base, blob for blob (skopeo would gzip the uncompressed layer
# otherwise, and the offline base would not be the same image)
skopeo copy -q --preserve-digests --src-tls-verify=false --dest-tls-verify=false --dest-creds "$CREDS" \
  "docker://$ON/bench/base:$RUNID" "docker://$OFF/bench/base:$RUNID"
layers=$(skopeo inspect --raw --tls-verify=false "docker://$ON/bench/model:$RUNID" | jq '.layers | length')
log "image: $layers layers, the top one new ($SIZE_MIB MiB)"

RES=$B/results.tsv
printf 'name\twall_s\tbytes\n' >"$RES"
t() { # name bytes-file cmd...
  local name=$1 out=$2; shift 2
  local s e; s=$(date +%s.%N)
  "$@" >/dev/null 2>"$B/$name.err" || { log "FAILED $name"; tail -5 "$B/$name.err" >&2; exit 1; }
  e=$(date +%s.%N)
  printf '%s\t%.2f\t%s\n' "$name" "$(echo "$e - $s" | bc -l)" "$(stat -c %s "$out" 2>/dev/null || echo 0)" >>"$RES"
}
# skopeo keeps a blob-info cache that turns repeat copies into cross-repository mounts (here: of
# the layer lamina just loaded); each skopeo run gets a cold one, a tmpfs over the cache directory
# in a private mount namespace
cold() { unshare -m sh -c 'mkdir -p /var/lib/containers/cache && mount -t tmpfs tmpfs /var/lib/containers/cache && exec "$@"' sh "$@"; }
for i in $(seq "$RUNS"); do
  rm -f "$B/slice.tar" "$B/full.tar"
  t lamina-save "$B/slice.tar" "$LAMINA" -q slice save "$ON/bench/model:$RUNID" --base "$ON/bench/base:$RUNID" -o "$B/slice.tar"
  t lamina-load /dev/null env LAMINA_USERNAME=testuser LAMINA_PASSWORD=testpass \
    "$LAMINA" -q slice load "$B/slice.tar" --dest "$OFF/bench/lamina-$i:$RUNID" --from bench/base
  t full-save "$B/full.tar" cold skopeo copy -q --preserve-digests --src-tls-verify=false "docker://$ON/bench/model:$RUNID" "oci-archive:$B/full.tar"
  t full-load /dev/null cold skopeo copy -q --preserve-digests --dest-tls-verify=false --dest-creds "$CREDS" \
    "oci-archive:$B/full.tar" "docker://$OFF/bench/full-$i:$RUNID"
done
want=$(skopeo inspect --raw --tls-verify=false "docker://$ON/bench/model:$RUNID" | sha256sum | cut -d' ' -f1)
got=$(skopeo inspect --raw --tls-verify=false --creds "$CREDS" "docker://$OFF/bench/lamina-1:$RUNID" | sha256sum | cut -d' ' -f1)
[[ $want == "$got" ]] || { log "digest differs offline: $got vs $want"; exit 1; }

med() { awk -F'\t' -v n="$1" -v c="$2" '$1==n{print $c}' "$RES" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
LS=$(med lamina-save 2); LL=$(med lamina-load 2); FS=$(med full-save 2); FL=$(med full-load 2)
LB=$(med lamina-save 3); FB=$(med full-save 3)
log "results ($SIZE_MIB MiB top layer, $RUNS runs, medians):"
printf '| | archive (bytes) | save (s) | load (s) | save+load (s) |\n|---|---|---|---|---|\n'
printf '| lamina slice | %s | %s | %s | %.2f |\n' "$LB" "$LS" "$LL" "$(echo "$LS + $LL" | bc -l)"
printf '| full export (skopeo oci-archive) | %s | %s | %s | %.2f |\n' "$FB" "$FS" "$FL" "$(echo "$FS + $FL" | bc -l)"
printf '\nsize: slice / full = %.3f; time: full / slice = %.1fx\n' "$(echo "$LB / $FB" | bc -l)" "$(echo "($FS + $FL) / ($LS + $LL)" | bc -l)"
