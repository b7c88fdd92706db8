#!/usr/bin/env bash
# Benchmarks (not tests) for issue 3:
#   lamina zstd   vs  skopeo copy --dest-compress-format zstd (cold blob cache), on a multi-layer
#                     image with a 200 MiB layer; time and total size
#   lamina extract of a 1 GiB weights layer  vs  curl download + tar -x
#   RUNS=3 scripts/bench-r8im.sh
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=${LAMINA_TEST_STATE:-/tmp/lamina-test}
B=$STATE/bench
REG=127.0.0.1:5100
RUNS=${RUNS:-3}
RUNID=$(date +%s)
log() { printf '[bench-r8im] %s\n' "$*" >&2; }
tests/harness/install-deps.sh >/dev/null
# LAMINA_BIN=PATH: that lamina instead of one built here (in CARGO_TARGET_DIR, target/ by default)
LAMINA=${LAMINA_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/lamina}
[[ -n ${LAMINA_BIN:-} ]] || cargo build --release --locked -q -p lamina-cli
tests/harness/registry.sh start >/dev/null
tests/harness/fixtures.sh >/dev/null
mkdir -p "$B"

t() { # NAME cmd... -> NAME wall maxrss
  local name=$1; shift
  local tf; tf=$(mktemp)
  /usr/bin/time -f '%e %M' -o "$tf" "$@" >/dev/null 2>"$B/$name.err" || { log "FAILED $name"; tail -5 "$B/$name.err" >&2; exit 1; }
  read -r wall rss <"$tf"; rm -f "$tf"
  printf '%s\t%s\t%.1f\n' "$name" "$wall" "$(echo "$rss / 1024" | bc -l)"
}
size_of() { skopeo inspect --raw --tls-verify=false "docker://$1" | jq '[.layers[].size] | add'; }

# a multi-layer image with a 200 MiB layer of text-like (compressible) data, gzip, built by skopeo
if ! skopeo inspect --raw --tls-verify=false "docker://$REG/bench/textimg:latest" >/dev/null 2>&1; then
  log "building bench/textimg (fixtures/base + a 200 MiB text layer)"
  W=$B/textimg; rm -rf "$W"; mkdir -p "$W/data"
  python3 - "$W/data/corpus.txt" <<'PY'
import sys, random
random.seed(7)
words = [''.join(random.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(random.randint(2, 9))) for _ in range(5000)]
with open(sys.argv[1], 'w') as f:
    n = 0
    while n < 200 << 20:
        line = ' '.join(random.choice(words) for _ in range(12)) + '\n'
        f.write(line); n += len(line)
PY
  "$LAMINA" affix -q --base "$REG/fixtures/big:latest" --dest "$REG/bench/textimg:latest" --compression gzip --path /data "$W/data/corpus.txt"
  rm -rf "$W"
fi
SRC=$REG/bench/textimg:latest
BEFORE=$(size_of "$SRC")

RES=$B/r8im-$RUNID.tsv
printf 'name\twall_s\tmaxrss_MiB\n' >"$RES"
for i in $(seq "$RUNS"); do
  t "lamina-zstd" "$LAMINA" zstd -q "$SRC" "$REG/bench/lz-$RUNID:r$i" >>"$RES"
  t "skopeo-zstd" unshare -m sh -c 'mkdir -p /var/lib/containers/cache && mount -t tmpfs tmpfs /var/lib/containers/cache && exec "$@"' sh \
    skopeo copy -q --src-tls-verify=false --dest-tls-verify=false --dest-compress-format zstd \
    "docker://$SRC" "docker://$REG/bench/sz-$RUNID:r$i" >>"$RES"
done
LZ=$(size_of "$REG/bench/lz-$RUNID:r1"); SZ=$(size_of "$REG/bench/sz-$RUNID:r1")

# extract: a 1 GiB weights layer
F=$B/weights-1024m.bin
[[ -s $F ]] || head -c $((1 << 30)) /dev/urandom >"$F"
"$LAMINA" affix -q --base "$REG/fixtures/base:latest" --dest "$REG/bench/x-$RUNID:v1" "$F" >/dev/null
LAYER=$(skopeo inspect --raw --tls-verify=false "docker://$REG/bench/x-$RUNID:v1" | jq -r '.layers[-1].digest')
for i in $(seq "$RUNS"); do
  rm -rf "$B/ex-l" "$B/ex-c"; mkdir -p "$B/ex-c"
  t "lamina-extract" "$LAMINA" extract -q "$REG/bench/x-$RUNID:v1" -o "$B/ex-l/" >>"$RES"
  t "curl-tar-x" bash -c 'curl -sf "$1" | tar -x -C "$2"' _ "http://$REG/v2/bench/x-$RUNID/blobs/$LAYER" "$B/ex-c" >>"$RES"
done
cmp "$F" "$B/ex-l/weights-1024m.bin"
rm -rf "$B/ex-l" "$B/ex-c"

med() { awk -F'\t' -v n="$1" -v c="$2" '$1==n{print $c}' "$RES" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
cat "$RES" >&2
printf '| contender | wall (s), median of %s | total layer bytes | peak RSS (MiB) |\n|---|---|---|---|\n' "$RUNS"
printf '| source image (gzip) | | %s | |\n' "$BEFORE"
printf '| lamina zstd (level 3) | %s | %s | %s |\n' "$(med lamina-zstd 2)" "$LZ" "$(med lamina-zstd 3)"
printf '| skopeo copy --dest-compress-format zstd | %s | %s | %s |\n' "$(med skopeo-zstd 2)" "$SZ" "$(med skopeo-zstd 3)"
printf '| lamina extract, 1 GiB layer | %s | | %s |\n' "$(med lamina-extract 2)" "$(med lamina-extract 3)"
printf '| curl + tar -x, 1 GiB layer | %s | | |\n' "$(med curl-tar-x 2)"
printf '\nzstd: skopeo / lamina = %.2fx; size lamina / skopeo = %.3f. extract: lamina / (curl+tar) = %.2fx\n' \
  "$(echo "$(med skopeo-zstd 2)/$(med lamina-zstd 2)" | bc -l)" "$(echo "$LZ/$SZ" | bc -l)" \
  "$(echo "$(med lamina-extract 2)/$(med curl-tar-x 2)" | bc -l)"
