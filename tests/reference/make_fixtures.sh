#!/bin/sh
# Regenerate the golden fixtures under tests/fixtures/ from the Python
# references.  usage: tests/reference/make_fixtures.sh MODEL.gguf [make_fixtures.py options]
#   FIXTURES_VENV=dir     venv to use/create (default: <repo>/.venv-fixtures)
#   FIXTURES_LLAMA_CPP=1  also install llama-cpp-python==0.3.36 (slow build) and
#                         record the llama.cpp cross-check in the fixtures
set -eu
if [ $# -lt 1 ]; then
    echo "usage: $0 MODEL.gguf [--only tokenizer,dequant,generate,ppl] [--no-llama-cpp]" >&2
    exit 2
fi
MODEL=$1
shift
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VENV=${FIXTURES_VENV:-$ROOT/.venv-fixtures}
REQ=$ROOT/tests/requirements-fixtures.txt
PY=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
# (re)install when the pinned requirements changed since the last install
if ! cmp -s "$REQ" "$VENV/.requirements-fixtures.txt" 2>/dev/null; then
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQ"
    cp "$REQ" "$VENV/.requirements-fixtures.txt"
fi
if [ "${FIXTURES_LLAMA_CPP:-0}" = 1 ] && ! "$VENV/bin/python" -c 'import llama_cpp' 2>/dev/null; then
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check llama-cpp-python==0.3.36
fi
exec "$VENV/bin/python" "$ROOT/tests/reference/make_fixtures.py" "$MODEL" "$@"
