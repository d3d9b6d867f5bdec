#!/usr/bin/env bash
# Installs what sqserve needs to build and test, only when it is missing:
# Debian -dev packages (apt-get, through sudo when not root) and the pinned
# Python test tools in .venv. Quick and silent when everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS=(build-essential pkg-config libmicrohttpd-dev libjansson-dev libuv1-dev
      libpcre2-dev libcmocka-dev libxxhash-dev libopenblas-dev liblapacke-dev
      unicode-data python3-venv unzip prometheus shellcheck)

missing=()
for p in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The venv is rebuilt when tests/requirements.txt changes (stamp = its hash).
stamp=.venv/.requirements.sha256
want=$(sha256sum tests/requirements.txt | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "deps: creating .venv from tests/requirements.txt"
  PYTHON=$(command -v python3)
  "$PYTHON" -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt
  echo "$want" > "$stamp"
fi
