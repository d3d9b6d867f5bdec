#!/usr/bin/env bash
# Installs what sqserve needs, only when it is missing. Quick and silent when
# everything is there.
#
#   deploy/install-deps.sh run    to build and serve (`make run`, the images):
#                                 the compiler and the -dev packages, plus
#                                 python3-venv and unzip for models/fetch-model.sh
#   deploy/install-deps.sh test   (the default; `make deps`) also what the test
#                                 suites use: cmocka, unicode-data, prometheus
#                                 (promtool), shellcheck and the pinned Python
#                                 tools of tests/requirements.txt in .venv
#
# Debian packages come through apt-get (sudo when not root).
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${1:-test}
DEBS=(build-essential pkg-config libmicrohttpd-dev libjansson-dev libuv1-dev
      libpcre2-dev libxxhash-dev libopenblas-dev liblapacke-dev python3-venv unzip)
case "$MODE" in
  run) ;;
  test) DEBS+=(libcmocka-dev unicode-data prometheus shellcheck) ;;
  *) echo "usage: $0 [run|test]" >&2; exit 2 ;;
esac

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

[ "$MODE" = test ] || exit 0

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
