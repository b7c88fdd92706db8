#!/usr/bin/env bash
# Benchmark (not a test): `lamina affix` of a weights file onto a multi-layer base in the local
# registry, against
#   (a) curl uploading the same bytes as one blob (the registry's ingest rate is the limit), and
#   (b) the olot workflow: skopeo pull to an OCI layout, olot append, skopeo push.
# Also lamina's peak memory (max RSS) at two file sizes.
#   SIZE_MIB=1024 scripts/bench.sh         results in $STATE/bench/results.tsv
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${SIZE_MIB:-1024}
STATE=${LAMINA_TEST_STATE:-/tmp/lamina-test}
B=$STATE/bench
REG=127.0.0.1:5100
RUNS=${RUNS:-3}
RUNID=$(date +%s)
log() { printf '[bench] %s\n' "$*" >&2; }

tests/harness/install-deps.sh >/dev/null
# LAMINA_BIN=PATH: that lamina instead of one built here (in CARGO_TARGET_DIR, target/ by default)
LAMINA=${LAMINA_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/lamina}
[[ -n ${LAMINA_BIN:-} ]] || cargo build --release --locked -q -p lamina-cli
tests/harness/registry.sh start >/dev/null
tests/harness/fixtures.sh >/dev/null
mkdir -p "$B"
if [[ ! -x $B/venv/bin/olot ]]; then
  log "installing olot into $B/venv (PyPI)"
  python3 -m venv "$B/venv" && "$B/venv/bin/pip" install -q olot==1.2.1
fi

F=$B/weights-${SIZE_MIB}m.bin
if [[ ! -s $F || $(stat -c %s "$F") != $((SIZE_MIB << 20)) ]]; then
  log "making $F"; head -c $((SIZE_MIB << 20)) /dev/urandom >"$F"
fi
cat "$F" >/dev/null   # warm the page cache for every contender
BYTES=$(stat -c %s "$F")
DIG=sha256:$(sha256sum "$F" | cut -d' ' -f1)

# t NAME cmd... -> prints "NAME wall_s maxrss_MiB"
t() {
  local name=$1; shift
  local tf; tf=$(mktemp)
  /usr/bin/time -f '%e %M' -o "$tf" "$@" >/dev/null 2>"$B/$name.err" || { log "FAILED $name"; tail -5 "$B/$name.err" >&2; exit 1; }
  read -r wall rss <"$tf"; rm -f "$tf"
  printf '%s\t%s\t%.1f\n' "$name" "$wall" "$(echo "$rss / 1024" | bc -l)"
}

curl_upload() {
  local repo=$1 loc
  loc=$(curl -sf -D - -o /dev/null -X POST "http://$REG/v2/$repo/blobs/uploads/" | awk -F': ' 'tolower($1)=="location"{print $2}' | tr -d '\r')
  [[ $loc == http* ]] || loc=http://$REG$loc
  curl -sf -o /dev/null -T "$F" -H 'Content-Type: application/octet-stream' "$loc&digest=$DIG"
}

# the olot workflow as its own script (it runs inside a private mount namespace, see cold)
cat >"$B/olot-wf.sh" <<WF
#!/usr/bin/env bash
set -euo pipefail
dir=\$1 tag=\$2
rm -rf "\$dir"; mkdir -p "\$dir"
skopeo copy -q --src-tls-verify=false "docker://$REG/fixtures/big:latest" "oci:\$dir/layout:latest"
"$B/venv/bin/olot" "\$dir/layout" "$F"
skopeo copy -q --dest-tls-verify=false "oci:\$dir/layout:latest" "docker://$REG/bench/olot-$RUNID:\$tag"
WF
chmod +x "$B/olot-wf.sh"
# skopeo keeps a blob-info cache that turns repeat copies into mounts; each olot run gets a cold
# one (a tmpfs over the cache directory in a private mount namespace)
export -f curl_upload; export REG F DIG

RES=$B/results-$RUNID.tsv
printf 'name\twall_s\tmaxrss_MiB\n' >"$RES"
for i in $(seq "$RUNS"); do
  t "curl-put-blob" bash -c 'curl_upload "$1"' _ "bench/curl-$RUNID-$i" >>"$RES"
  t "lamina-affix" "$LAMINA" affix -q --base "$REG/fixtures/big:latest" --dest "$REG/bench/lamina-$RUNID:r$i" "$F" >>"$RES"
  t "olot-workflow" unshare -m sh -c 'mkdir -p /var/lib/containers/cache && mount -t tmpfs tmpfs /var/lib/containers/cache && exec "$@"' sh "$B/olot-wf.sh" "$B/olot-wf" "r$i" >>"$RES"
done
# memory does not grow with the file: a file 4x smaller for comparison
head -c $((BYTES / 4)) "$F" >"$B/quarter.bin"
t "lamina-affix-quarter" "$LAMINA" affix -q --base "$REG/fixtures/big:latest" --dest "$REG/bench/lamina-$RUNID:quarter" "$B/quarter.bin" >>"$RES"
rm -rf "$B/olot-wf" "$B/quarter.bin"

log "results ($SIZE_MIB MiB, $RUNS runs, medians):"
med() { awk -F'\t' -v n="$1" -v c="$2" '$1==n{print $c}' "$RES" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
C=$(med curl-put-blob 2); L=$(med lamina-affix 2); O=$(med olot-workflow 2)
LR=$(med lamina-affix 3); LQ=$(med lamina-affix-quarter 3); OR=$(med olot-workflow 3)
printf '| contender | wall (s) | MB/s | peak RSS (MiB) |\n|---|---|---|---|\n'
printf '| curl PUT of the blob (registry limit) | %s | %.0f | %s |\n' "$C" "$(echo "$BYTES/$C/1000000" | bc -l)" "$(med curl-put-blob 3)"
printf '| lamina affix | %s | %.0f | %s (%s at 1/4 size) |\n' "$L" "$(echo "$BYTES/$L/1000000" | bc -l)" "$LR" "$LQ"
printf '| olot workflow (skopeo pull, olot, skopeo push) | %s | %.0f | %s (olot step) |\n' "$O" "$(echo "$BYTES/$O/1000000" | bc -l)" "$OR"
printf '\nlamina / curl = %.2fx; olot workflow / lamina = %.1fx\n' "$(echo "$L/$C" | bc -l)" "$(echo "$O/$L" | bc -l)"
