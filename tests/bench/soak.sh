#!/usr/bin/env bash
# make soak: tests/bench/soak.py on the GGUF and on the SQ .sqm converted from
# it (models/<name>.sq.sqm, written once: SQ 8/4 weights, INT8 activations),
# each for SOAK_SECONDS (default 300) with SOAK_CLIENTS (64) streaming clients,
# 10 % of them disconnecting mid-stream; the results go into OUT (docs/soak.md).
#
#   tests/bench/soak.sh BIN MODEL OUT
set -euo pipefail
BIN=$1 MODEL=$2 OUT=$3
cd "$(dirname "$0")/../.."
SQM=${MODEL%.gguf}.sq.sqm
if [ ! -f "$SQM" ]; then
  "$BIN" convert -m "$MODEL" -o "$SQM" --weights sq:8/4:b64:s0.875 --acts int8
fi
status=0
for m in "$MODEL" "$SQM"; do
  .venv/bin/python tests/bench/soak.py --bin "$BIN" --model "$m" --out "$OUT" \
    --clients "${SOAK_CLIENTS:-64}" --seconds "${SOAK_SECONDS:-300}" || status=1
done
exit $status
