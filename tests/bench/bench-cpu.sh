#!/usr/bin/env bash
# make bench-cpu: prompt (pp512) and generation (tg128) tokens/s, side by
# side in ONE run at 1 and 2 threads, for
#   - the GGUF itself (weights in their GGUF types, FP32 activations),
#   - .sqm models converted from it in this run (cached under
#     models/.cache/bench-cpu/, git-ignored): W8A8, W4A8 (int4 g64),
#     W(SQ 8/4 b64 s0.875)A8 and W4A(SQ 8/4 b64 s0.875 static) on the integer
#     kernels, W(SQ 8/4 b64 s0.875)A16 (codes expanded to FP32 rows at load),
#   - llama.cpp on the same GGUF: LLAMA_CPP=/path/to/llama-bench (a local
#     build, never committed), else LLAMA_CPP_PY=/path/to/python with
#     llama-cpp-python (tests/bench/llama_cpp_bench.py); skipped if neither.
# The models are measured round-robin, one repetition each per round
# (BENCH_REPS rounds, default 3), and the median per cell is reported, so
# drift on a shared machine hits every row alike. The table, with ratios
# against llama.cpp, goes into docs/perf.md between the bench-cpu markers
# (the rest of that file is prose and is left alone).
#
# Weights use RTN (no calibration): kernel speed does not depend on how
# the codes were chosen, and RTN converts in seconds; the static activation
# masks calibrate on 1024 self-generated tokens.
set -euo pipefail
BIN=$1 MODEL=$2 OUT=$3
REPS=${BENCH_REPS:-3}
CACHE=${BENCH_CACHE:-models/.cache/bench-cpu}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$CACHE"
raw=$(mktemp)
trap 'rm -f "$raw"' EXIT

# label | sqserve convert flags ("" = the GGUF itself) | what executes
RECIPES=(
  "GGUF $(basename "$MODEL" .gguf | sed 's/.*\.//')||GGUF types as stored: 8-bit block activations on the integer kernels below AVX-512 (bench's acts=q8-block), FP32 activations on AVX-512"
  "W8A8|--weights int8 --acts int8|int8 per-channel x int8 per-token, integer kernel"
  "W4A8|--weights int4:g64 --acts int8|int4 g64 x int8 per-token, integer kernel"
  "W(SQ 8/4 b64 s0.875)A8|--weights sq:8/4:b64:s0.875 --acts int8|SQ codes x int8 per-token, integer kernel"
  "W(SQ 8/4 b64 s0.875)A16|--weights sq:8/4:b64:s0.875|SQ codes expanded to FP32 rows at load"
  "W4A(SQ 8/4 b64 s0.875 static)|--weights int4:g64 --acts sq:8/4:b64:s0.875:static --calib-tokens 1024|int4 g64 x static SQ (int8 high / int4 low channels), integer kernel"
)

model_for() { # recipe index -> model path (converting on a cache miss)
  local flags=${1#*|}; flags=${flags%%|*}
  [ -z "$flags" ] && { echo "$MODEL"; return; }
  local key; key=$(echo "$(basename "$MODEL") $flags" | tr -c 'A-Za-z0-9.\n' '_')
  local f="$CACHE/$key.sqm"
  if ! "$BIN" inspect -m "$f" >/dev/null 2>&1; then
    echo "converting: $flags" >&2
    # shellcheck disable=SC2086
    "$BIN" convert -m "$MODEL" -o "$f" $flags >&2
  fi
  echo "$f"
}

models=()
for r in "${RECIPES[@]}"; do models+=("$(model_for "$r")"); done

llama_line() { # threads -> "pp tg" of llama.cpp, or nothing
  local t=$1
  if [ -n "${LLAMA_CPP:-}" ]; then
    "$LLAMA_CPP" -m "$MODEL" -p 512 -n 128 -r 1 -t "$t" -o jsonl 2>/dev/null | python3 -c '
import json, sys
pp = tg = 0.0
build = "?"
for line in sys.stdin:
    d = json.loads(line)
    build = d.get("build_commit", build)
    if d.get("n_prompt") and not d.get("n_gen"): pp = d["avg_ts"]
    if d.get("n_gen") and not d.get("n_prompt"): tg = d["avg_ts"]
print(pp, tg, build)'
  elif [ -n "${LLAMA_CPP_PY:-}" ]; then
    "$LLAMA_CPP_PY" "$HERE/llama_cpp_bench.py" "$MODEL" "$t" 512 128 1 |
      sed -n 's/.*pp512=\([0-9.]*\).*tg128=\([0-9.]*\).*/\1 \2/p'
  fi
}
llama_name=""
if [ -n "${LLAMA_CPP:-}" ]; then
  # its build commit: from llama-bench, or LLAMA_BUILD for a build made
  # outside git (which reports "unknown")
  llama_name="llama.cpp llama-bench, build ${LLAMA_BUILD:-$(llama_line 1 | awk '{print $3}')} (one warm-up run)"
elif [ -n "${LLAMA_CPP_PY:-}" ]; then
  llama_name="llama.cpp through llama-cpp-python $("$LLAMA_CPP_PY" -c 'import llama_cpp; print(llama_cpp.__version__)')"
fi

for ((round = 1; round <= REPS; round++)); do
  for t in 1 2; do
    for i in "${!RECIPES[@]}"; do
      line=$("$BIN" bench -m "${models[$i]}" --pp 512 --tg 128 -r 1 -t "$t")
      echo "round $round: ${RECIPES[$i]%%|*} $line" >&2
      pp=$(sed -n 's/.*pp512=\([0-9.]*\).*/\1/p' <<<"$line")
      tg=$(sed -n 's/.*tg128=\([0-9.]*\).*/\1/p' <<<"$line")
      printf '%s\t%s\t%s\t%s\n' "$i" "$t" "$pp" "$tg" >>"$raw"
    done
    if [ -n "$llama_name" ]; then
      pp="" tg=""
      read -r pp tg _ < <(llama_line "$t") || true
      echo "round $round: llama.cpp t=$t pp512=${pp:-?} tg128=${tg:-?}" >&2
      [ -n "${pp:-}" ] && printf 'L\t%s\t%s\t%s\n' "$t" "$pp" "$tg" >>"$raw"
    fi
  done
done

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
flags=$(grep -m1 '^flags' /proc/cpuinfo)
isa="portable"; [[ $flags == *avx2* ]] && isa="AVX2, no AVX-VNNI"; [[ $flags == *avx_vnni* ]] && isa="AVX2 + AVX-VNNI"
[[ $flags == *avx512_vnni* ]] && isa="AVX-512 VNNI"
# what the kernels ran, as sqserve bench names it (isa=...)
ran=$("$BIN" bench -m "$MODEL" --pp 0 --tg 1 -r 1 -t 1 | sed -n 's/.*isa=\([^ ]*\).*/\1/p')
fam=$(awk -F: '/^cpu family/{f=$2} /^model[ \t]*:/{m=$2} END{gsub(/ /,"",f); gsub(/ /,"",m); print "family " f " model " m}' /proc/cpuinfo)
labels=$(printf '%s\n' "${RECIPES[@]}")
block=$(python3 - "$raw" "$labels" "$llama_name" <<'PY'
import statistics, sys
raw, labels, llama = sys.argv[1], sys.argv[2].split("\n"), sys.argv[3]
cells = {}
for line in open(raw):
    i, t, pp, tg = line.split("\t")
    cells.setdefault((i, t), ([], []))
    cells[(i, t)][0].append(float(pp)); cells[(i, t)][1].append(float(tg))
med = {k: (statistics.median(v[0]), statistics.median(v[1])) for k, v in cells.items()}
ref = {t: med.get(("L", t)) for t in "12"}
def ratio(x, t, j):
    return f" ({x / ref[t][j]:.2f}x)" if ref[t] and ref[t][j] > 0 else ""
rows = []
keys = [str(i) for i in range(len(labels))] + (["L"] if ("L", "1") in med else [])
for i in keys:
    if i == "L":
        name, what = "llama.cpp, same GGUF", llama
    else:
        name, _, what = labels[int(i)].split("|")
    c = []
    for t in "12":
        pp, tg = med.get((i, t), (0, 0))
        c += [f"{pp:.1f}" + ("" if i == "L" else ratio(pp, t, 0)), f"{tg:.1f}" + ("" if i == "L" else ratio(tg, t, 1))]
    rows.append(f"| {name} | {what} | " + " | ".join(c) + " |")
print("\n".join(rows))
PY
)
ratio_note="ratios in parentheses are against llama.cpp on the same GGUF at the same thread count"
[ -z "$llama_name" ] && ratio_note="llama.cpp not measured in this run (set LLAMA_CPP=/path/to/llama-bench)"
block=$(cat <<MD
<!-- bench-cpu:begin (generated by make bench-cpu; do not edit by hand) -->
Measured $(date -u +%Y-%m-%d) at commit $(git rev-parse --short HEAD) on: $cpu,
$(nproc) cores, cpuid $fam ($isa; sqserve's kernels: $ran), from $(basename "$MODEL"): \`sqserve bench --pp 512 --tg 128\`, all rows
side by side in one run, round-robin, median of $REPS rounds; tokens/s; $ratio_note.
.sqm weights converted with RTN (speed does not depend on the quantizer); static masks from 1024 self-generated tokens.

| model | executes as | 1 thread pp512 | 1 thread tg128 | 2 threads pp512 | 2 threads tg128 |
|---|---|---|---|---|---|
$block
<!-- bench-cpu:end -->
MD
)
if [ -f "$OUT" ] && grep -q 'bench-cpu:begin' "$OUT"; then
  python3 - "$OUT" "$block" <<'PY'
import re, sys
path, block = sys.argv[1], sys.argv[2]
text = open(path).read()
text = re.sub(r"<!-- bench-cpu:begin.*?<!-- bench-cpu:end -->", lambda _: block, text, flags=re.S)
open(path, "w").write(text)
PY
else
  printf '# Performance\n\n%s\n' "$block" > "$OUT"
fi
echo "wrote $OUT"
