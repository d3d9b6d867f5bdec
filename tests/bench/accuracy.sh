#!/usr/bin/env bash
# make accuracy: perplexity / KL / top-1 of quantization recipes (baselines and
# SQ-format) against the FP32 path, on WikiText-2 test, written into the
# accuracy-grid section of docs/accuracy.md (the rest of that file is prose
# and is left alone) and plotted into docs/accuracy.png.
#
#   tests/bench/accuracy.sh BIN MODEL OUT.md
#   ACCURACY_SET=full|headline   which configurations (default full: hours)
#   ACCURACY_TOKENS=16384        tokens of wikitext-2-test per run (ctx 512)
#   ACCURACY_FRESH=1             ignore cached results (models/.cache/accuracy/)
#   ACCURACY_RENDER_ONLY=1       only rewrite the table and plot from the cache
#   ACCURACY_ONLY / ACCURACY_SKIP=REGEX  run only / skip configurations whose
#                                "name weights acts" matches (cached rows still render)
#   ACCURACY_NO_RENDER=1         run, leave docs/ alone (several workers on one cache)
#   ACCURACY_COMMIT=HASH         the commit BIN was built from, when not the work tree's
#   ACCURACY_THREADS=N           sqserve compute threads (default: all cores)
#   ACCURACY_DATA=DIR            where wikitext-2-{test,valid}.txt are
#                                (default ../shared/data from the repo root)
#
# Resumable: each configuration's result is cached as JSON and skipped when
# present, so an interrupted run picks up where it stopped.
set -euo pipefail
if [ $# -ne 3 ]; then
  echo "usage: $0 BIN MODEL OUT.md" >&2
  exit 2
fi
ROOT=$(cd "$(dirname "$0")/../.." && pwd)

# matplotlib (pinned) in the project's .venv; skipped when already installed
# for this requirements file (stamp = its hash).
req="$ROOT/tests/requirements-bench.txt"
stamp="$ROOT/.venv/.requirements-bench.sha256"
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ ! -x "$ROOT/.venv/bin/python" ]; then
  python3 -m venv "$ROOT/.venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "accuracy: installing tests/requirements-bench.txt into .venv"
  "$ROOT/.venv/bin/pip" install -q --disable-pip-version-check -r "$req"
  echo "$want" > "$stamp"
fi

exec "$ROOT/.venv/bin/python" "$ROOT/tests/bench/accuracy.py" "$@"
