#!/usr/bin/env bash
# Benchmark (not a test): reading inside an image without downloading it. One uncompressed
# model layer made by GNU tar, in this order: a 10 MiB safetensors, a SHARD_MIB (default 512)
# shard, config.json, a 2 MiB tokenizer.json, on the fixtures' base in the local plain registry
# (:5100). For `lamina ls` and `inspect` (the model layer), `lamina cat .../config.json` and
# `lamina extract --include '*.json'`, the registry's
# access log says how many GETs of the layer were served and how many bytes: against the
# layer's size, which every peer downloads (`curl URL | tar -x models/config.json`, as
# `regctl blob get-file` streams a layer). Medians of RUNS (default 3) wall times.
#   SHARD_MIB=512 RUNS=3 scripts/bench-peek.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SHARD_MIB=${SHARD_MIB:-512}
RUNS=${RUNS:-3}
STATE=${LAMINA_TEST_STATE:-/tmp/lamina-test}
B=$STATE/bench-peek
REG=127.0.0.1:5100
REPO=bench/peek-${SHARD_MIB}m
IMG=$REG/$REPO:latest
LOG=$STATE/run/plain.log
log() { printf '[bench-peek] %s\n' "$*" >&2; }

tests/harness/install-deps.sh >/dev/null
LAMINA=${LAMINA_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/lamina}
[[ -n ${LAMINA_BIN:-} ]] || cargo build --release --locked -q -p lamina-cli
tests/harness/registry.sh start >/dev/null
tests/harness/fixtures.sh >/dev/null
mkdir -p "$B/top/models"
M=$B/top/models
# a real safetensors: its header (one F32 tensor) then 10 MiB of data
if [[ ! -s $M/model.safetensors ]]; then
  python3 - "$M/model.safetensors" <<'PY'
import json, os, struct, sys
n = (10 << 20) // 4
h = json.dumps({"w": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]},
                "__metadata__": {"format": "pt"}}).encode()
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(h))); f.write(h); f.write(os.urandom(4 * n))
PY
fi
if [[ ! -s $M/shard.safetensors || $(stat -c %s "$M/shard.safetensors") != $((SHARD_MIB << 20)) ]]; then
  head -c $((SHARD_MIB << 20)) /dev/urandom >"$M/shard.safetensors"
fi
echo '{"model_type":"llama","hidden_size":4096}' >"$M/config.json"
[[ -s $M/tokenizer.json ]] || head -c $((1536 << 10)) /dev/urandom | base64 -w 100 >"$M/tokenizer.json"
# in the order given (no --sort): the small files after the big ones
tar -C "$B/top" --format=gnu --owner=0 --group=0 --numeric-owner --mtime=@0 -cf "$B/layer.tar" \
  models/model.safetensors models/shard.safetensors models/config.json models/tokenizer.json
layer=sha256:$(sha256sum <"$B/layer.tar" | cut -d' ' -f1)
size=$(stat -c %s "$B/layer.tar")
# push the layer with curl, then the image: the base's layers and config, this layer on top
up=$(curl -sf -X POST -o /dev/null -w '%header{location}' "http://$REG/v2/$REPO/blobs/uploads/")
[[ $up == http* ]] || up=http://$REG$up
curl -sf -X PUT -H 'Content-Type: application/octet-stream' --data-binary "@$B/layer.tar" \
  "$up&digest=${layer/:/%3A}" >/dev/null
"$LAMINA" -q affix --base "$REG/fixtures/base:latest" --dest "$IMG" --compression none "$M/config.json" >/dev/null
# swap the affixed layer for ours: manifest and config edited with jq, pushed with curl
man=$(curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$REG/v2/$REPO/manifests/latest")
cfgd=$(jq -r .config.digest <<<"$man")
cfg=$(curl -sf "http://$REG/v2/$REPO/blobs/$cfgd" | jq -c --arg l "$layer" '.rootfs.diff_ids[-1]=$l')
printf '%s' "$cfg" >"$B/config.json"
cd2=sha256:$(sha256sum <"$B/config.json" | cut -d' ' -f1)
up=$(curl -sf -X POST -o /dev/null -w '%header{location}' "http://$REG/v2/$REPO/blobs/uploads/")
[[ $up == http* ]] || up=http://$REG$up
curl -sf -X PUT -H 'Content-Type: application/octet-stream' --data-binary "@$B/config.json" "$up&digest=${cd2/:/%3A}" >/dev/null
jq -c --arg l "$layer" --argjson s "$size" --arg c "$cd2" --argjson cs "$(stat -c %s "$B/config.json")" \
  '.layers[-1].digest=$l | .layers[-1].size=$s | .layers[-1].mediaType="application/vnd.oci.image.layer.v1.tar" | .config.digest=$c | .config.size=$cs' \
  <<<"$man" >"$B/manifest.json"
curl -sf -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
  --data-binary "@$B/manifest.json" "http://$REG/v2/$REPO/manifests/latest" >/dev/null
nlayers=$(jq '.layers|length' "$B/manifest.json")
top=$((nlayers - 1))
log "layer $layer ($((size >> 20)) MiB) is layer $top of $IMG"

# GETs of the layer and bytes the registry sent for them since log line $1
served() {
  tail -n +"$(( $1 + 1 ))" "$LOG" | grep '^127.0.0.1 - ' | grep "\"GET /v2/$REPO/blobs/$layer" |
    awk '{n++; b+=$10} END {printf "%d %d\n", n, b}'
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
want=$(sha256sum <"$M/config.json" | cut -d' ' -f1)
printf '| what | GETs of the layer | bytes served | of the layer | wall (s, median of %s) |\n|---|---|---|---|---|\n' "$RUNS"
for what in ls cat inspect include curl; do
  times=()
  for _ in $(seq "$RUNS"); do
    mark=$(wc -l <"$LOG")
    t0=$(date +%s.%N)
    case $what in
      ls) "$LAMINA" -q ls "$IMG" --layer "$top" >/dev/null ;;
      cat) got=$("$LAMINA" -q cat "$IMG" models/config.json | sha256sum | cut -d' ' -f1)
           [[ $got == "$want" ]] || { log "cat gave other bytes"; exit 1; } ;;
      inspect) "$LAMINA" -q inspect "$IMG" --layer "$top" >/dev/null ;;
      include) rm -rf "$B/inc"
               "$LAMINA" -q extract "$IMG" --all --include '*.json' -o "$B/inc/"
               [[ $(sha256sum <"$B/inc/models/config.json" | cut -d' ' -f1) == "$want" ]] || { log "include gave other bytes"; exit 1; } ;;
      curl) rm -rf "$B/x" && mkdir "$B/x"
            curl -sf "http://$REG/v2/$REPO/blobs/$layer" | tar -x -C "$B/x" models/config.json ;;
    esac
    t1=$(date +%s.%N)
    times+=("$(echo "$t1 - $t0" | bc -l)")
    sleep 0.3 # the registry writes its log line after the answer
    read -r n bytes < <(served "$mark")
  done
  wall=$(printf '%s\n' "${times[@]}" | median)
  case $what in
    curl) label='curl \| tar -x models/config.json' ;;
    include) label="lamina extract --include '*.json'" ;;
    *) label="lamina $what" ;;
  esac
  printf '| %s | %s | %s | %s | %.2f |\n' "$label" "$n" "$bytes" \
    "$(echo "scale=6; $bytes / $size" | bc -l)" "$wall"
done
