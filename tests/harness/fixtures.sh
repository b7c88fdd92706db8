#!/usr/bin/env bash
# Reproducible fixture images for lamina's end-to-end tests, built offline and pushed into the
# registries of registry.sh.
#
#   tests/harness/fixtures.sh          build the OCI layout if its inputs changed, push, summarise
#   tests/harness/fixtures.sh build    only build   $STATE/fixtures/oci
#   tests/harness/fixtures.sh push     only push (+ summary); the layout must exist
#   FORCE=1 tests/harness/fixtures.sh  rebuild the layout and push everything again
#
# Layers are GNU tar archives (sorted names, uid/gid 0, mtime 2000-01-01, --format=gnu) added
# byte for byte with `umoci raw add-layer` (umoci gzips them), so every run gives the same
# digests. Layout tags:
#   base        linux/amd64, 2 layers: busybox rootfs ("ADD rootfs") | /src/predict.py +
#               /src/cog.yaml ("COPY . /src")
#   base-arm64  linux/arm64, 2 layers: placeholder rootfs (no binary) | the same /src layer
#   big         base + one 32 MiB pseudo-random layer (AES-256-CTR keystream, /data/big.bin)
#   multi       OCI image index: base (linux/amd64) + base-arm64 (linux/arm64/v8)
# Pushed (skopeo, with a cold private blob-info cache):
#   plain  fixtures/base:latest (OCI)  fixtures/base:v2s2  fixtures/multi:latest (OCI index)
#          fixtures/multi:v2s2 (Docker manifest list)  fixtures/big:latest (OCI)
#   basic  fixtures/base:latest        token  fixtures/base:latest  public/base:latest
#   tls    fixtures/base:latest        (HTTPS, verified against the test CA etc/tls/ca.crt)
# A copy is skipped when the tag already resolves to the digest recorded by the last push of
# the same layout. Environment: LAMINA_TEST_STATE, LAMINA_TEST_PORT_BASE (as registry.sh).
set -euo pipefail
umask 022
export LC_ALL=C

STATE=${LAMINA_TEST_STATE:-/tmp/lamina-test}
BASE=${LAMINA_TEST_PORT_BASE:-5100}
FIX=$STATE/fixtures
LAYOUT=$FIX/oci
WORK=$FIX/work
PUSHED=$FIX/pushed
REG_PLAIN=127.0.0.1:$BASE
REG_BASIC=127.0.0.1:$((BASE + 1))
REG_TOKEN=127.0.0.1:$((BASE + 3))
REG_TLS=127.0.0.1:$((BASE + 5))
TLS_CA=$STATE/etc/tls/ca.crt   # written by registry.sh; its directory is a skopeo --cert-dir
TEST_USER=testuser
TEST_PASS=testpass
BIG_MIB=32
EPOCH=946684800              # 2000-01-01T00:00:00Z
CREATED=2000-01-01T00:00:00Z
RECIPE_VERSION=1             # bump when the recipe changes in a way the stamp cannot see
ACCEPT='application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json'

log() { printf '[fixtures] %s\n' "$*"; }
die() { printf '[fixtures] ERROR: %s\n' "$*" >&2; exit 1; }

for c in umoci skopeo tar openssl jq curl sha256sum; do
  command -v "$c" >/dev/null || die "'$c' not found: run tests/harness/install-deps.sh"
done
BUSYBOX=$(command -v busybox || true)
[[ -n $BUSYBOX ]] || die "busybox not found: run tests/harness/install-deps.sh (busybox-static)"
tar --version 2>/dev/null | grep -q 'GNU tar' || die "GNU tar is required"

TAR=(tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$EPOCH" --format=gnu
     --no-acls --no-xattrs --no-selinux)

# ---------------------------------------------------------------------------------------------
# build
# ---------------------------------------------------------------------------------------------

# deterministic pseudo-random bytes: AES-256-CTR keystream, key and IV derived from a seed
prng() { # seed bytes
  local key iv
  key=$(printf '%s/key' "$1" | sha256sum | cut -c1-64)
  iv=$(printf '%s/iv' "$1" | sha256sum | cut -c1-32)
  { openssl enc -aes-256-ctr -K "$key" -iv "$iv" -in /dev/zero 2>/dev/null || true; } | head -c "$2"
}

mklayer() { # stagedir out.tar  (archive the top-level entries of stagedir, no "./" prefix)
  local dir=$1 out=$2 entries
  find "$dir" -exec touch -h -d "@$EPOCH" {} +
  mapfile -t entries < <(cd "$dir" && find . -mindepth 1 -maxdepth 1 -printf '%P\n' | sort)
  "${TAR[@]}" -C "$dir" -cf "$out" -- "${entries[@]}"
}

add_layer() { # tag tarfile created_by
  umoci raw add-layer --image "$LAYOUT:$1" --history.created "$CREATED" \
    --history.created_by "$3" "$2"
}

manifest_of() { # tag -> digest of that tag in the layout
  jq -r --arg t "$1" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t) | .digest' \
    "$LAYOUT/index.json" 2>/dev/null
}

inputs_hash() {
  {
    echo "recipe $RECIPE_VERSION big $BIG_MIB"
    # contents only: the same script called by another path is the same recipe
    sha256sum <"$BUSYBOX"
    sha256sum <"${BASH_SOURCE[0]}"
    umoci --version
    tar --version | head -1
  } | sha256sum | cut -d' ' -f1
}

layout_ok() {
  [[ -f $FIX/stamp && $(<"$FIX/stamp") == "$(inputs_hash)" ]] || return 1
  local t
  for t in base base-arm64 big multi; do [[ -n $(manifest_of "$t") ]] || return 1; done
}

build_layout() {
  local t0=$SECONDS s
  rm -rf "$LAYOUT" "$WORK" "$FIX/stamp"
  mkdir -p "$WORK"
  umoci init --layout "$LAYOUT"

  # layer: busybox rootfs (amd64)
  s=$WORK/rootfs
  mkdir -p "$s"/{bin,etc,tmp,root}
  cp "$BUSYBOX" "$s/bin/busybox"
  chmod 755 "$s/bin/busybox"
  local a
  for a in sh ls cat echo cp mv rm mkdir ln sleep env sha256sum tar gzip head wc; do
    ln -s busybox "$s/bin/$a"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$s/etc/passwd"
  printf 'root:x:0:\n' >"$s/etc/group"
  printf 'lamina test fixture (busybox rootfs)\n' >"$s/etc/motd"
  chmod 1777 "$s/tmp"
  chmod 700 "$s/root"
  mklayer "$s" "$WORK/rootfs.tar"

  # layer: /src (a cog-like app)
  s=$WORK/src
  mkdir -p "$s/src"
  cat >"$s/src/predict.py" <<'EOF'
# Fixture predictor for lamina's end-to-end tests; nothing runs it.
from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def setup(self):
        self.weights = "/src/weights/model.safetensors"

    def predict(self, prompt: str = Input(description="prompt")) -> str:
        return f"echo: {prompt}"
EOF
  printf 'build:\n  python_version: "3.11"\npredict: "predict.py:Predictor"\n' >"$s/src/cog.yaml"
  mklayer "$s" "$WORK/src.tar"

  # layer: placeholder arm64 rootfs (no arm64 binary is available offline)
  s=$WORK/rootfs-arm64
  mkdir -p "$s"/{bin,etc,tmp}
  printf 'placeholder arm64 rootfs: content only, nothing executable\n' >"$s/bin/README"
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$s/etc/passwd"
  printf 'aarch64\n' >"$s/etc/arch"
  chmod 1777 "$s/tmp"
  mklayer "$s" "$WORK/rootfs-arm64.tar"

  # layer: 32 MiB of pseudo-random bytes
  s=$WORK/big
  mkdir -p "$s/data"
  prng lamina-fixtures-big $((BIG_MIB * 1024 * 1024)) >"$s/data/big.bin"
  mklayer "$s" "$WORK/big.tar"

  local cfg=(--created "$CREATED" --author lamina-tests --no-history --config.env PATH=/bin
             --config.workingdir /src --config.label org.opencontainers.image.title=lamina-fixture)

  umoci new --image "$LAYOUT:base"
  add_layer base "$WORK/rootfs.tar" "ADD rootfs"
  add_layer base "$WORK/src.tar" "COPY . /src"
  umoci config --image "$LAYOUT:base" "${cfg[@]}" --os linux --architecture amd64 \
    --config.cmd /bin/sh --config.cmd -c --config.cmd 'cat /src/predict.py'

  umoci new --image "$LAYOUT:base-arm64"
  add_layer base-arm64 "$WORK/rootfs-arm64.tar" "ADD rootfs"
  add_layer base-arm64 "$WORK/src.tar" "COPY . /src"
  umoci config --image "$LAYOUT:base-arm64" "${cfg[@]}" --os linux --architecture arm64 \
    --config.cmd /bin/sh

  umoci tag --image "$LAYOUT:base" big
  add_layer big "$WORK/big.tar" "ADD big.bin /data/"

  # OCI image index, written by hand (umoci 0.4.7 cannot make one; the variant goes here too)
  local ma mb sa sb idx d
  ma=$(manifest_of base)
  mb=$(manifest_of base-arm64)
  sa=$(stat -c %s "$LAYOUT/blobs/sha256/${ma#sha256:}")
  sb=$(stat -c %s "$LAYOUT/blobs/sha256/${mb#sha256:}")
  idx=$(jq -cn --arg ma "$ma" --arg mb "$mb" --argjson sa "$sa" --argjson sb "$sb" '{
    schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json",
    manifests: [
      {mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $ma, size: $sa,
       platform: {architecture: "amd64", os: "linux"}},
      {mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $mb, size: $sb,
       platform: {architecture: "arm64", os: "linux", variant: "v8"}}]}')
  d=$(printf '%s' "$idx" | sha256sum | cut -d' ' -f1)
  printf '%s' "$idx" >"$LAYOUT/blobs/sha256/$d"
  jq -c --arg d "sha256:$d" --argjson s "${#idx}" '.manifests += [{
      mediaType: "application/vnd.oci.image.index.v1+json", digest: $d, size: $s,
      annotations: {"org.opencontainers.image.ref.name": "multi"}}]' \
    "$LAYOUT/index.json" >"$LAYOUT/index.json.tmp"
  mv "$LAYOUT/index.json.tmp" "$LAYOUT/index.json"

  chmod -R a+rX "$LAYOUT"   # umoci writes blobs 0600
  rm -rf "$WORK"
  inputs_hash >"$FIX/stamp"
  log "built $LAYOUT in $((SECONDS - t0))s"
}

# ---------------------------------------------------------------------------------------------
# push
# ---------------------------------------------------------------------------------------------

# skopeo keeps a blob-info cache that turns later copies into cross-repository mounts and can
# reuse gzip blobs where zstd was asked for. Every copy here gets a cold, private one:
#   root:     a tmpfs over /var/lib/containers/cache in a private mount namespace (unshare -m)
#   non-root: XDG_DATA_HOME pointing at an empty temporary directory
# and plain skopeo (shared cache) when neither works.
COLD=none
if [[ $(id -u) == 0 ]]; then
  if mkdir -p /var/lib/containers/cache 2>/dev/null &&
     unshare -m sh -c 'mount -t tmpfs tmpfs /var/lib/containers/cache' 2>/dev/null; then
    COLD=unshare
  fi
else
  COLD=xdg
fi

skopeo_cold() {
  case $COLD in
    unshare)
      unshare -m sh -c 'mount -t tmpfs tmpfs /var/lib/containers/cache && exec skopeo "$@"' sh "$@" ;;
    xdg)
      local tmp rc=0
      tmp=$(mktemp -d)
      XDG_DATA_HOME=$tmp skopeo "$@" || rc=$?
      rm -rf "$tmp"
      return $rc ;;
    *) skopeo "$@" ;;
  esac
}

# Bearer token for one repository of the token registry (empty when the server refuses)
bearer() { # repo
  local realm service
  realm=http://127.0.0.1:$((BASE + 4))/token
  service=lamina-test-registry
  curl -sf -u "$TEST_USER:$TEST_PASS" "$realm?service=$service&scope=repository:$1:pull" | jq -r '.token // empty'
}

curl_auth() { # registry repo -> curl auth (and CA) arguments in the array AUTH
  AUTH=()
  case $1 in
    "$REG_BASIC") AUTH=(-u "$TEST_USER:$TEST_PASS") ;;
    "$REG_TLS") AUTH=(-u "$TEST_USER:$TEST_PASS" --cacert "$TLS_CA") ;;
    "$REG_TOKEN") AUTH=(-H "Authorization: Bearer $(bearer "$2")") ;;
  esac
}

base_url() { # registry -> scheme://registry
  if [[ $1 == "$REG_TLS" ]]; then echo "https://$1"; else echo "http://$1"; fi
}

# "<digest> <media type>" of registry/repo:tag, or nothing when it does not resolve
remote_manifest() { # registry repo tag
  local AUTH hdrs digest mt
  curl_auth "$1" "$2"
  hdrs=$(curl -sfI "${AUTH[@]}" -H "Accept: $ACCEPT" "$(base_url "$1")/v2/$2/manifests/$3" 2>/dev/null) || return 0
  digest=$(printf '%s' "$hdrs" | tr -d '\r' | awk -F': ' 'tolower($1)=="docker-content-digest"{print $2}')
  mt=$(printf '%s' "$hdrs" | tr -d '\r' | awk -F': ' 'tolower($1)=="content-type"{print $2}')
  if [[ -n $digest ]]; then echo "$digest $mt"; fi
}

COPIED=0
SKIPPED=0
push() { # layout-tag registry repo:tag [skopeo copy options...]
  local src=$1 reg=$2 ref=$3 key want have digest
  shift 3
  key=$PUSHED/${reg//[:\/]/_}_${ref//[:\/]/_}
  want=$(<"$FIX/stamp")
  have=$(remote_manifest "$reg" "${ref%:*}" "${ref##*:}")
  if [[ -n $have && -f $key && $(<"$key") == "$want ${have%% *}" ]]; then
    SKIPPED=$((SKIPPED + 1))
    return 0
  fi
  local creds=() tls=(--dest-tls-verify=false)
  [[ $reg == "$REG_PLAIN" ]] || creds=(--dest-creds "$TEST_USER:$TEST_PASS")
  [[ $reg != "$REG_TLS" ]] || tls=(--dest-cert-dir "$(dirname "$TLS_CA")")
  log "copy oci:$src -> $reg/$ref $*"
  skopeo_cold copy -q "${tls[@]}" "${creds[@]}" "$@" "oci:$LAYOUT:$src" "docker://$reg/$ref" ||
    die "skopeo copy to $reg/$ref failed"
  have=$(remote_manifest "$reg" "${ref%:*}" "${ref##*:}")
  [[ -n $have ]] || die "$reg/$ref does not resolve after the push"
  digest=${have%% *}
  mkdir -p "$PUSHED"
  echo "$want $digest" >"$key"
  COPIED=$((COPIED + 1))
}

check_registries() {
  local r code ca=()
  [[ -s $TLS_CA ]] || die "no test CA $TLS_CA: run tests/harness/registry.sh start"
  for r in "$REG_PLAIN" "$REG_BASIC" "$REG_TOKEN" "$REG_TLS"; do
    [[ $r != "$REG_TLS" ]] || ca=(--cacert "$TLS_CA")
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "${ca[@]}" "$(base_url "$r")/v2/" || true)
    [[ $code == 200 || $code == 401 ]] ||
      die "no registry answers on $r (HTTP $code): run tests/harness/registry.sh start"
  done
}

push_all() {
  local t0=$SECONDS
  check_registries
  layout_ok || die "layout $LAYOUT missing or stale: run '$0 build' first"
  [[ $COLD != none ]] || log "warning: skopeo runs with its shared blob-info cache (unshare failed)"
  push base "$REG_PLAIN" fixtures/base:latest
  push base "$REG_PLAIN" fixtures/base:v2s2 --format v2s2
  push multi "$REG_PLAIN" fixtures/multi:latest --all --preserve-digests
  push multi "$REG_PLAIN" fixtures/multi:v2s2 --all --format v2s2
  push big "$REG_PLAIN" fixtures/big:latest
  push base "$REG_BASIC" fixtures/base:latest
  push base "$REG_TOKEN" fixtures/base:latest
  push base "$REG_TOKEN" public/base:latest
  push base "$REG_TLS" fixtures/base:latest
  log "pushed $COPIED, already up to date $SKIPPED, in $((SECONDS - t0))s (skopeo cache: $COLD)"
  # the OCI copies must keep the layout's digests byte for byte
  local t ref
  for t in base:fixtures/base:latest multi:fixtures/multi:latest big:fixtures/big:latest; do
    ref=${t#*:}
    [[ $(remote_manifest "$REG_PLAIN" "${ref%:*}" "${ref##*:}") == "$(manifest_of "${t%%:*}") "* ]] ||
      die "$REG_PLAIN/$ref does not have the layout's digest $(manifest_of "${t%%:*}")"
  done
}

summary() {
  local line reg ref have
  log "summary:"
  for line in "$REG_PLAIN fixtures/base:latest" "$REG_PLAIN fixtures/base:v2s2" \
              "$REG_PLAIN fixtures/multi:latest" "$REG_PLAIN fixtures/multi:v2s2" \
              "$REG_PLAIN fixtures/big:latest" "$REG_BASIC fixtures/base:latest" \
              "$REG_TOKEN fixtures/base:latest" "$REG_TOKEN public/base:latest" \
              "$REG_TLS fixtures/base:latest"; do
    reg=${line%% *}
    ref=${line#* }
    have=$(remote_manifest "$reg" "${ref%:*}" "${ref##*:}")
    printf '  %-15s %-22s %-58s %s\n' "$reg" "$ref" "${have#* }" "${have%% *}"
  done
}

case ${1:-all} in
  all)
    if [[ ${FORCE:-0} == 1 ]] || ! layout_ok; then build_layout; else log "layout $LAYOUT up to date"; fi
    if [[ ${FORCE:-0} == 1 ]]; then rm -rf "$PUSHED"; fi
    push_all
    summary ;;
  build)
    if [[ ${FORCE:-0} == 1 ]] || ! layout_ok; then build_layout; else log "layout $LAYOUT up to date"; fi ;;
  push)
    if [[ ${FORCE:-0} == 1 ]]; then rm -rf "$PUSHED"; fi
    push_all
    summary ;;
  *) echo "usage: $0 [all|build|push]   (FORCE=1 rebuilds and pushes again)" >&2; exit 2 ;;
esac
