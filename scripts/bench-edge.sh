#!/usr/bin/env bash
# Benchmark (not a test): the edge Worker's affix hook in workerd against
# `lamina affix` for the same job: one weights file (default 1 GiB) fetched from a local file
# server, built into an uncompressed layer and pushed onto the 3-layer base in the local registry
# (:5100) in 16 MiB chunks. Reports wall time (hook sent -> job done, from the job's own clock)
# and peak memory: workerd's resident set while the layer streams through (the Worker's isolate
# has 128 MB in production) next to the CLI's.
#   SIZE_MIB=1024 RUNS=3 scripts/bench-edge.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${SIZE_MIB:-1024}
RUNS=${RUNS:-3}
PORT=${PORT:-8796}
STATE=${LAMINA_TEST_STATE:-/tmp/lamina-test}
B=$STATE/bench-edge
SECRET=bench-hook-secret-0123456789
log() { printf '[bench-edge] %s\n' "$*" >&2; }
tests/setup.sh >/dev/null
# LAMINA_BIN=PATH: that lamina instead of one built here (in CARGO_TARGET_DIR, target/ by default)
LAMINA=${LAMINA_BIN:-${CARGO_TARGET_DIR:-target}/release/lamina}
[[ -n ${LAMINA_BIN:-} ]] || cargo build --release --locked -q -p lamina-cli
edge/build.sh >/dev/null
tests/harness/registry.sh start >/dev/null
tests/harness/fixtures.sh >/dev/null
mkdir -p "$B/files"
F=$B/files/model.safetensors
[[ -s $F && $(stat -c %s "$F") == $((SIZE_MIB << 20)) ]] || head -c $((SIZE_MIB << 20)) /dev/urandom >"$F"
cat "$F" >/dev/null

python3 -u -m http.server 0 --bind 127.0.0.1 --directory "$B/files" >"$B/http.log" 2>&1 &
HTTP=$!
# workerd itself (the runtime wrangler dev wraps), with the Worker's modules and a Durable Object
# store on disk: wrangler dev's own Node helpers open a loopback connection per streamed body
# chunk, which is theirs to pay, not the Worker's (measured: thousands of sockets for 256 MiB).
rm -rf "$B/do" && mkdir -p "$B/do"
{
  echo 'using Workerd = import "/workerd/workerd.capnp";'
  echo 'const config :Workerd.Config = ('
  echo '  services = [ (name = "main", worker = .worker),'
  echo '    (name = "internet", network = (allow = ["public", "private", "local"])),'
  echo "    (name = \"do\", disk = (path = \"$B/do\", writable = true)) ],"
  echo "  sockets = [ (name = \"http\", address = \"127.0.0.1:$PORT\", http = (), service = \"main\") ] );"
  echo 'const worker :Workerd.Worker = ('
  # (embedded paths are relative to the config, which lives in edge/build)
  echo '  modules = [ (name = "entry.mjs", esModule = embed "../entry.mjs"),'
  (cd edge/build && find . -name '*.js' | sed 's|^\./||' | sort | while read -r m; do
    echo "    (name = \"build/$m\", esModule = embed \"$m\"),"
  done)
  echo '    (name = "build/index_bg.wasm", wasm = embed "index_bg.wasm") ],'
  echo '  compatibilityDate = "2025-09-01",'
  echo "  bindings = [ (name = \"HOOK_SECRET\", text = \"$SECRET\"), (name = \"CHUNK_MIB\", text = \"16\"),"
  echo '    (name = "SYNC_WAIT_MS", text = "0"), (name = "ALLOWED_REGISTRIES", text = "127.0.0.1:5100"),'
  echo '    (name = "ALLOWED_ORIGINS", text = ""), (name = "JOBS", durableObjectNamespace = "LaminaJob") ],'
  echo '  durableObjectNamespaces = [ (className = "LaminaJob", uniqueKey = "lamina-bench", enableSql = true) ],'
  echo '  durableObjectStorage = (localDisk = "do"), globalOutbound = "internet" );'
} >edge/build/workerd.capnp
WD=edge/node_modules/@cloudflare/workerd-linux-64/bin/workerd
[[ -x $WD ]] || (cd edge && npm ci --no-audit --no-fund >/dev/null)
"$WD" serve edge/build/workerd.capnp --experimental >"$B/workerd.log" 2>&1 &
WORKERD=$!
cleanup() { kill "$HTTP" "$WORKERD" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/jobs/x" || [[ $? == 22 ]] && break; sleep 0.1; done
# (until the server has said its port, grep finds nothing: not a failure under pipefail)
for _ in $(seq 50); do HPORT=$(grep -o 'port [0-9]*' "$B/http.log" | awk '{print $2}' | head -1 || true); [[ -n $HPORT ]] && break; sleep 0.1; done
[[ -n ${HPORT:-} ]] || HPORT=$(ss -ltnp | awk -v p="pid=$HTTP," '$0 ~ p {split($4,a,":"); print a[length(a)]}' | head -1)
rss() { awk '/VmRSS/ {print $2}' "/proc/$WORKERD/status"; }

RUNID=$(date +%s)
: >"$B/edge.txt"
for i in $(seq "$RUNS"); do
  body=$(printf '{"base":"127.0.0.1:5100/fixtures/big:latest","dest":"127.0.0.1:5100/bench/edge-%s:e%s","files":[{"name":"model.safetensors","url":"http://127.0.0.1:%s/model.safetensors"}]}' "$RUNID" "$i" "$HPORT")
  ts=$(date +%s)
  sig=$(printf '%s.%s' "$ts" "$body" | openssl dgst -sha256 -hmac "$SECRET" | awk '{print $NF}')
  before=$(rss); peak=$before
  id=$(curl -sf -X POST "http://127.0.0.1:$PORT/hooks/affix" -H "x-lamina-timestamp: $ts" \
    -H "x-lamina-signature: sha256=$sig" --data-binary "$body" | jq -r .id)
  while :; do
    r=$(rss); ((r > peak)) && peak=$r
    st=$(curl -sf "http://127.0.0.1:$PORT/jobs/$id")
    case $(jq -r .status <<<"$st") in done | failed) break ;; esac
    sleep 0.1
  done
  [[ $(jq -r .status <<<"$st") == done ]] || { log "job failed: $st"; exit 1; }
  secs=$(jq -r '(.updated_ms - .created_ms) / 1000' <<<"$st")
  wasm=$(jq -r .wasm_mib <<<"$st")
  echo "$secs $before $peak $wasm" >>"$B/edge.txt"
  log "edge run $i: ${secs}s, workerd RSS ${before} -> peak ${peak} KiB, wasm memory ${wasm} MiB; $(jq -r '.log[] | select(startswith("upload"))' <<<"$st" | tail -1)"
done
: >"$B/cli.txt"
for i in $(seq "$RUNS"); do
  /usr/bin/time -f '%e %M' -a -o "$B/cli.txt" "$LAMINA" -q affix --chunked --chunk-size 16 \
    --compression none --base 127.0.0.1:5100/fixtures/big:latest \
    --dest "127.0.0.1:5100/bench/cli-edge-$RUNID:c$i" "$F" >/dev/null
done
med() { sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
EDGE=$(awk '{print $1}' "$B/edge.txt" | med)
BASE=$(head -1 "$B/edge.txt" | awk '{print $2}')
PEAK=$(awk '{print $3}' "$B/edge.txt" | sort -n | tail -1)
WASM=$(awk '{print $4}' "$B/edge.txt" | sort -n | tail -1)
CLI=$(awk '{print $1}' "$B/cli.txt" | med)
CLIM=$(awk '{print $2}' "$B/cli.txt" | sort -n | tail -1)
log "results ($SIZE_MIB MiB, $RUNS runs, medians; memory: highest of the runs):"
printf '| | value |\n|---|---|\n'
printf '| edge: affix hook in workerd (16 MiB chunks) | %.2f s (%.0f MB/s) |\n' "$EDGE" "$(echo "$SIZE_MIB*1.048576/$EDGE" | bc -l)"
printf '| edge: workerd resident set, fresh -> peak of all runs | %d -> %d MiB (+%d MiB) |\n' $((BASE / 1024)) $((PEAK / 1024)) $(((PEAK - BASE) / 1024))
printf '| edge: WebAssembly memory of the isolate (peak) | %d MiB |\n' "$WASM"
printf '| CLI: affix --chunked --chunk-size 16 | %.2f s |\n' "$CLI"
printf '| CLI: peak resident set | %d MiB |\n' $((CLIM / 1024))
printf '\nedge / CLI = %.2fx\n' "$(echo "$EDGE/$CLI" | bc -l)"
