#!/usr/bin/env bash
# Benchmark (not a test), for issue 15's figures, in one sitting against the local registry:
#   1. `--compression auto` against `--compression none` on a Hugging Face-shaped folder (one big
#      safetensors, config and tokenizer files): auto must store it uncompressed, at the same cost.
#   2. `lamina affix` of a weights file with default flags (streamed PATCH segments) against curl
#      uploading the same bytes as one blob (the registry's ingest rate is the limit), and
#      against one single streamed PATCH (--segment-size larger than the layer).
#   SIZE_MIB=1024 RUNS=3 scripts/bench-trust.sh     (results: $STATE/bench/trust.tsv)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${SIZE_MIB:-1024}
RUNS=${RUNS:-3}
STATE=${LAMINA_TEST_STATE:-/tmp/lamina-test}
B=$STATE/bench
REG=127.0.0.1:5100
log() { printf '[bench] %s\n' "$*" >&2; }

tests/harness/install-deps.sh >/dev/null
# LAMINA_BIN=PATH: that lamina instead of one built here (in CARGO_TARGET_DIR, target/ by default)
LAMINA=${LAMINA_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/lamina}
[[ -n ${LAMINA_BIN:-} ]] || cargo build --release --locked -q -p lamina-cli
tests/harness/registry.sh start >/dev/null
tests/harness/fixtures.sh >/dev/null
mkdir -p "$B"

HF=$B/hf-${SIZE_MIB}m
if [[ ! -s $HF/model.safetensors || $(stat -c %s "$HF/model.safetensors") != $((SIZE_MIB << 20)) ]]; then
  log "making $HF"
  rm -rf "$HF"; mkdir -p "$HF"
  head -c $((SIZE_MIB << 20)) /dev/urandom >"$HF/model.safetensors"
  echo '{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":4096}' >"$HF/config.json"
  python3 -c 'import json,sys; json.dump({"model":{"vocab":{f"tok{i}":i for i in range(120000)}}}, sys.stdout)' >"$HF/tokenizer.json"
  echo '{"model_max_length":4096}' >"$HF/tokenizer_config.json"
fi
cat "$HF"/* >/dev/null   # warm the page cache for every contender
F=$HF/model.safetensors
DIG=sha256:$(sha256sum "$F" | cut -d' ' -f1)

# t NAME cmd... -> "NAME wall_s user+sys_s maxrss_MiB"
t() {
  local name=$1; shift
  local tf; tf=$(mktemp)
  /usr/bin/time -f '%e %U %S %M' -o "$tf" "$@" >/dev/null 2>"$B/$name.err" || { log "FAILED $name"; tail -5 "$B/$name.err" >&2; exit 1; }
  read -r wall u s rss <"$tf"; rm -f "$tf"
  printf '%s\t%s\t%.2f\t%.1f\n' "$name" "$wall" "$(echo "$u + $s" | bc -l)" "$(echo "$rss / 1024" | bc -l)"
}

curl_upload() {
  local loc
  loc=$(curl -sf -D - -o /dev/null -X POST "http://$REG/v2/bench/curl/blobs/uploads/" | awk -F': ' 'tolower($1)=="location"{print $2}' | tr -d '\r')
  [[ $loc == http* ]] || loc=http://$REG$loc
  curl -sf -o /dev/null -T "$F" -H 'Content-Type: application/octet-stream' "$loc&digest=$DIG"
}

export REG F DIG
export -f curl_upload
affix=("$LAMINA" -q affix --base "$REG/fixtures/base:latest")

OUT=$B/trust.tsv
: >"$OUT"
for i in $(seq "$RUNS"); do
  log "run $i/$RUNS"
  t auto "${affix[@]}" --dest "$REG/bench/trust:auto$i" "$HF" --compression auto >>"$OUT"
  t none "${affix[@]}" --dest "$REG/bench/trust:none$i" "$HF" --compression none >>"$OUT"
  t curl bash -c curl_upload >>"$OUT"
  t segments "${affix[@]}" --dest "$REG/bench/trust:seg$i" "$F" >>"$OUT"
  t one-stream "${affix[@]}" --dest "$REG/bench/trust:one$i" "$F" --segment-size 1048576 >>"$OUT"
done
"$LAMINA" affix --base "$REG/fixtures/base:latest" --dest "$REG/bench/trust:note" "$HF" 2>&1 >/dev/null | grep 'compression auto' >&2 || true
python3 - "$OUT" "$SIZE_MIB" <<'PY'
import sys, statistics as st
rows = [l.split('\t') for l in open(sys.argv[1]) if l.strip()]
by = {}
for name, wall, cpu, rss in rows:
    by.setdefault(name, []).append((float(wall), float(cpu), float(rss)))
med = {k: (st.median(w for w, _, _ in v), st.median(c for _, c, _ in v), max(r for _, _, r in v)) for k, v in by.items()}
mib = float(sys.argv[2])
print(f"{'what':<12}{'wall s':>8}{'cpu s':>8}{'MiB/s':>8}{'max RSS':>9}  (median of {len(by['auto'])})")
for k in ['auto', 'none', 'curl', 'segments', 'one-stream']:
    w, c, r = med[k]
    print(f"{k:<12}{w:>8.2f}{c:>8.2f}{mib / w:>8.0f}{r:>8.1f}M")
print(f"auto / none wall: {med['auto'][0] / med['none'][0]:.2f}x (goal <= 1.1x)")
print(f"curl / segments wall: {med['curl'][0] / med['segments'][0]:.2f}x (>= 1 means lamina is no slower than curl)")
print(f"one-stream / segments wall: {med['one-stream'][0] / med['segments'][0]:.2f}x")
PY
