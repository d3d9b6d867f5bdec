# deploy/pip.sh - sourced by the scripts that fetch from PyPI
# (models/fetch-model.sh, kernels/cuda/fetch-cutlass.sh), so that `make run`
# needs no test tools: `PIP=$(pick_pip DIR)` is the test venv's pip when
# there is one, else python3's own, else that of a throwaway venv made
# under DIR (python3-venv; seconds, removed with DIR).
# shellcheck shell=bash
pick_pip() {
  local root
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  if [ -x "$root/.venv/bin/pip" ]; then
    echo "$root/.venv/bin/pip"
  elif python3 -m pip --version >/dev/null 2>&1; then
    echo "python3 -m pip"
  else
    python3 -m venv "$1/venv" >&2 || return 1
    echo "$1/venv/bin/pip"
  fi
}
