#!/usr/bin/env bash
# The main job, end to end, on a fresh Debian machine: start a registry on 127.0.0.1, push a
# small base image, add a weights directory on top with `lamina affix` (no Docker, no pull of
# the base layers), list the layers, and check the result with skopeo and umoci.
#   SIZE_MIB=256 scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${SIZE_MIB:-256}
STATE=${LAMINA_TEST_STATE:-/tmp/lamina-test}
REG=127.0.0.1:5100
log() { printf '\n[demo] %s\n' "$*"; }

log "installing the registry and peer tools (Debian packages, once)"
tests/harness/install-deps.sh
log "building lamina (release)"
cargo build --release --locked -q -p lamina-cli
LAMINA=$PWD/target/release/lamina

log "starting registries on 127.0.0.1 and pushing a base image"
tests/harness/registry.sh start
tests/harness/fixtures.sh

W=$STATE/demo/weights
rm -rf "$STATE/demo"; mkdir -p "$W/tokenizer"
log "making $SIZE_MIB MiB of weights in $W"
head -c $((SIZE_MIB << 20)) /dev/urandom >"$W/model.safetensors"
printf '{"model_type": "demo", "hidden_size": 1024}\n' >"$W/config.json"
printf '{"vocab": {"a": 0, "b": 1}}\n' >"$W/tokenizer/tokenizer.json"

log "lamina layers $REG/fixtures/base:latest"
"$LAMINA" layers "$REG/fixtures/base:latest"

log "lamina affix --base $REG/fixtures/base:latest --dest $REG/demo/model:v1 $W"
"$LAMINA" affix --base "$REG/fixtures/base:latest" --dest "$REG/demo/model:v1" "$W"

log "lamina layers $REG/demo/model:v1"
"$LAMINA" layers "$REG/demo/model:v1"

log "checking with skopeo and umoci"
rm -rf "$STATE/demo/check"; mkdir -p "$STATE/demo/check"
skopeo copy -q --src-tls-verify=false "docker://$REG/demo/model:v1" "oci:$STATE/demo/check/layout:v1"
umoci unpack --rootless --image "$STATE/demo/check/layout:v1" "$STATE/demo/check/bundle" >/dev/null
cmp "$W/model.safetensors" "$STATE/demo/check/bundle/rootfs/src/weights/model.safetensors"
cmp "$W/tokenizer/tokenizer.json" "$STATE/demo/check/bundle/rootfs/src/weights/tokenizer/tokenizer.json"
log "ok: the image holds the weights byte for byte, on top of the unchanged base"
