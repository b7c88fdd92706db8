#!/usr/bin/env bash
# Fuzzes lamina-core's parsers and decoders: every cargo-fuzz target in fuzz/fuzz_targets/ for
# SECONDS each (default 300), on stable Rust (cargo-fuzz with `-s none`: libFuzzer's coverage
# guidance without a sanitizer; core forbids unsafe code, so panics, overflows, timeouts and
# OOMs are what there is to find).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]      e.g. scripts/fuzz.sh 20  (bounded CI run)
#
# Targets run FUZZ_JOBS at a time (default: the number of cores). Each starts from its committed
# seeds (fuzz/seeds/<target>/), with its dictionary of tokens (fuzz/dicts/<target>.dict) if it
# has one, and its local corpus (fuzz/corpus/<target>/, kept between runs,
# not committed). Prints per-target executions and writes the summary table to stdout and to
# fuzz/last-run.txt. Exits non-zero on any crash, timeout or OOM, naming the input libFuzzer
# saved (fuzz/artifacts/<target>/) and the command that replays it.
#
# Env: FUZZ_JOBS (parallel targets), FUZZ_TIMEOUT (seconds one input may take, default 10),
#      FUZZ_RSS_MB (memory limit, default 2048), FUZZ_ARGS (more libFuzzer flags).
# (the body is one block, so bash reads all of it before running: editing the script while it
# runs cannot derail a run)
{
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
secs=${1:-300}
shift || true
jobs=${FUZZ_JOBS:-$(nproc)}
timeout=${FUZZ_TIMEOUT:-10}
rss=${FUZZ_RSS_MB:-2048}
log() { printf '[fuzz] %s\n' "$*"; }

if ! [[ $secs =~ ^[0-9]+$ ]] || ((secs < 1)); then
  echo "usage: scripts/fuzz.sh [SECONDS-PER-TARGET] [TARGET...]" >&2
  exit 2
fi

if ! cargo fuzz --version 2>/dev/null | grep -q " $CARGO_FUZZ_VERSION\$"; then
  log "cargo install cargo-fuzz $CARGO_FUZZ_VERSION (about a minute, once)"
  cargo install -q cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

if (($# > 0)); then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi

# -s none needs no nightly flag; -a keeps debug assertions and overflow checks on in the
# optimised build, so an arithmetic overflow is a crash, not a silent wrap.
log "cargo fuzz build -s none -a (${#targets[@]} targets)"
t0=$SECONDS
cargo fuzz build --fuzz-dir fuzz -s none -a
log "built in $((SECONDS - t0))s"
# cargo puts the binaries under CARGO_TARGET_DIR when it is set, else under fuzz/target
bin_dir=${CARGO_TARGET_DIR:-fuzz/target}/$(rustc -vV | sed -n 's/^host: //p')/release

logs=fuzz/target/fuzz-logs
mkdir -p "$logs"
for t in "${targets[@]}"; do rm -f "$logs/$t".*; done

run_one() {
  local t=$1
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  local seeds=()
  [[ -d fuzz/seeds/$t ]] && seeds=("fuzz/seeds/$t")
  local dict=()
  [[ -f fuzz/dicts/$t.dict ]] && dict=("-dict=fuzz/dicts/$t.dict")
  local rc=0 t0=$SECONDS
  # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
  "$bin_dir/$t" -max_total_time="$secs" -print_final_stats=1 -timeout="$timeout" \
    -rss_limit_mb="$rss" -artifact_prefix="fuzz/artifacts/$t/" "${dict[@]}" ${FUZZ_ARGS:-} \
    "fuzz/corpus/$t" "${seeds[@]}" >"$logs/$t.log" 2>&1 || rc=$?
  echo "$rc" >"$logs/$t.rc"
  echo "$((SECONDS - t0))" >"$logs/$t.secs"
}

log "running ${#targets[@]} targets for ${secs}s each, $jobs at a time"
running=0
for t in "${targets[@]}"; do
  if [[ ! -x $bin_dir/$t ]]; then
    echo "[fuzz] no such target: $t" >&2
    exit 2
  fi
  run_one "$t" &
  running=$((running + 1))
  if ((running >= jobs)); then
    wait -n || true
    running=$((running - 1))
  fi
done
wait

failed=0
table=$(printf '%-10s %8s %12s %10s %8s\n' target seconds executions exec/s crashes)
for t in "${targets[@]}"; do
  l=$logs/$t.log
  rc=$(cat "$logs/$t.rc")
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$l" | tail -1)
  [[ -n $execs ]] || execs=$(grep -oE '^#[0-9]+' "$l" | tail -1 | tr -d '#')
  [[ -n $execs ]] || execs=0
  took=$(cat "$logs/$t.secs")
  crashes=$(grep -c 'Test unit written to' "$l" || true)
  if [[ $rc != 0 ]] && ((crashes == 0)); then crashes=1; fi
  ((crashes == 0)) || failed=1
  table+=$'\n'$(printf '%-10s %8s %12s %10s %8s' "$t" "$took" "$execs" "$((execs / (took > 0 ? took : 1)))" "$crashes")
done
echo "$table"
{
  echo "# scripts/fuzz.sh $secs ($(date -u +%Y-%m-%dT%H:%M:%SZ), cargo-fuzz $CARGO_FUZZ_VERSION -s none -a, $(rustc --version))"
  echo "$table"
} >fuzz/last-run.txt

if ((failed)); then
  for t in "${targets[@]}"; do
    l=$logs/$t.log
    if [[ $(cat "$logs/$t.rc") != 0 ]] || grep -q 'Test unit written to' "$l"; then
      echo >&2
      echo "[fuzz] $t FAILED (log: $l):" >&2
      grep -E 'ERROR: libFuzzer|^SUMMARY' "$l" | head -3 >&2 || true
      grep -A3 'panicked at' "$l" | head -8 >&2 || true
      for a in $(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$l"); do
        echo "[fuzz]   input: $a" >&2
        echo "[fuzz]   replay: $bin_dir/$t $a   (or: cargo fuzz run --fuzz-dir fuzz -s none -a $t $a)" >&2
      done
    fi
  done
  exit 1
fi
log "no crashes (summary in fuzz/last-run.txt)"
exit 0
}
