#!/usr/bin/env bash
# Installs olot (the peer tool `lamina append` is compared with) into a virtualenv under the
# harness state, idempotently, and prints the path of its `olot` command.
#   tests/harness/olot.sh          -> /tmp/lamina-test/olot-venv/bin/olot
set -euo pipefail
OLOT_VERSION=1.2.1
STATE=${LAMINA_TEST_STATE:-/tmp/lamina-test}
VENV=$STATE/olot-venv
have=$("$VENV/bin/pip" show olot 2>/dev/null || true)   # (not piped into grep -q: SIGPIPE)
if [[ ! -x $VENV/bin/olot ]] || ! grep -qx "Version: $OLOT_VERSION" <<<"$have"; then
  printf '[olot] installing olot %s into %s (PyPI)\n' "$OLOT_VERSION" "$VENV" >&2
  rm -rf "$VENV"
  mkdir -p "$STATE"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "olot==$OLOT_VERSION" >&2
fi
echo "$VENV/bin/olot"
