#!/usr/bin/env bash
# Benchmark (not a test): lamina's benchmark scripts for two builds in one sitting, so a change
# is judged against the same machine at the same load (its speed drifts by up to 30% over a
# day). The older build is REV, checked out in a worktree beside this checkout (its CLI built in
# its own target directory, its page and Worker built there by its own build scripts); the newer
# one is this checkout. Each script runs for the older build, then the newer, then the older
# again when ABBA=1 (the first pair tells the change, the repeat tells the drift). The scripts
# are this checkout's (copied into the worktree), so both builds are measured the same way.
#   scripts/bench-before-after.sh REV [SCRIPT...]      (default: every benchmark below)
# Each run's output goes to $STATE/before-after-TIME/NAME-{before,after}.txt; the tables are
# printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
REV=${1:?usage: scripts/bench-before-after.sh REV [SCRIPT...]}
shift
SCRIPTS=("$@")
[[ ${#SCRIPTS[@]} -gt 0 ]] || SCRIPTS=(bench.sh bench-append.sh bench-extract.sh bench-r8im.sh bench-web.sh bench-edge.sh)
STATE=${LAMINA_TEST_STATE:-/tmp/lamina-test}
OUT=$STATE/before-after-$(date +%s)
WT=${BEFORE_TREE:-$PWD/../lamina-before-$(git rev-parse --short "$REV")}
log() { printf '[before-after] %s\n' "$*" >&2; }

mkdir -p "$OUT"
if [[ ! -d $WT ]]; then
  git worktree add --detach "$WT" "$REV" >/dev/null
fi
[[ $(git -C "$WT" rev-parse HEAD) == $(git rev-parse "$REV^{commit}") ]] || {
  log "$WT is not at $REV"; exit 1
}
log "building $REV in $WT and this checkout ($(git rev-parse --short HEAD))"
(cd "$WT" && cargo build --release --locked -q -p lamina-cli)
cargo build --release --locked -q -p lamina-cli
OLD=$WT/target/release/lamina
NEW=${CARGO_TARGET_DIR:-$PWD/target}/release/lamina

run() { # which script
  local which=$1 s=$2
  if [[ $which == before ]]; then
    cp "scripts/$s" "$WT/scripts/$s"
    (cd "$WT" && env -u CARGO_TARGET_DIR LAMINA_BIN="$OLD" "scripts/$s")
  else
    LAMINA_BIN="$NEW" "scripts/$s"
  fi
}

for s in "${SCRIPTS[@]}"; do
  n=${s%.sh}
  for which in before after ${ABBA:+before}; do
    f=$OUT/$n-$which.txt
    [[ $which == before && -s $f ]] && f=$OUT/$n-before-again.txt
    log "$s, $which"
    run "$which" "$s" >"$f" 2>"$f.log" || { log "$s ($which) failed: see $f.log"; tail -5 "$f.log" >&2; }
  done
done
(cd "$WT" && git checkout -q -- scripts)

for f in "$OUT"/*.txt; do
  printf '\n## %s\n\n' "$(basename "$f" .txt)"
  cat "$f"
done
log "outputs in $OUT"
