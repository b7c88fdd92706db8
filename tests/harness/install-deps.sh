#!/usr/bin/env bash
# Install the Debian packages the end-to-end test bed needs (Debian 12 "bookworm").
#
#   tests/harness/install-deps.sh
#
# Idempotent: asks dpkg first and only runs apt-get update/install when a package is missing.
# Needs root; re-executes itself through sudo when run as another user and sudo exists.
# Installing docker-registry does not start anything on our ports: registry.sh runs its own
# loopback-only processes (the package's own unit, if a service manager starts it, uses :5000).
set -euo pipefail

PKGS=(docker-registry skopeo umoci busybox-static zstd pigz apache2-utils jq curl openssl
      ca-certificates python3 python3-venv python3-jsonschema time chromium firefox-esr podman
      golang-go golang-github-containerd-stargz-snapshotter-dev)

log() { printf '[install-deps] %s\n' "$*"; }
die() { printf '[install-deps] ERROR: %s\n' "$*" >&2; exit 1; }

command -v dpkg-query >/dev/null || die "dpkg-query not found: this script supports Debian/Ubuntu only"

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  log "all ${#PKGS[@]} packages already installed"
  exit 0
fi

if [[ $(id -u) != 0 ]]; then
  if command -v sudo >/dev/null; then
    log "not root: re-running through sudo"
    exec sudo -- "$0" "$@"
  fi
  die "missing packages (${missing[*]}) and not root (no sudo available): run as root"
fi

export DEBIAN_FRONTEND=noninteractive
t0=$SECONDS
log "apt-get update"
apt-get update -q >/dev/null || die "apt-get update failed"
log "apt-get install ${missing[*]}"
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null ||
  die "apt-get install failed for: ${missing[*]}"
log "installed ${#missing[@]} package(s) in $((SECONDS - t0))s"
