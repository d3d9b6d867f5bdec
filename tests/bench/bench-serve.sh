#!/usr/bin/env bash
# make bench-serve: streamed /v1/completions under 1, 4, 16 and 64 concurrent
# clients (tests/bench/bench_serve.py), against each server in turn, all in
# ONE run on the same cores with the same requests:
#   - sqserve on the W(SQ 8/4 b64 s0.875)A8 .sqm converted from MODEL (RTN,
#     cached under models/.cache/bench-cpu/, shared with make bench-cpu),
#   - sqserve on the GGUF itself,
#   - llama-server on the same GGUF when LLAMA_SERVER=/path/to/llama-server
#     (a local build of llama.cpp, never committed), run as the issue that
#     set the goal ran it: -t 2 -np 16 -cb.
# The tables go into docs/perf.md between the bench-serve markers (appended
# at the end when absent; the rest of the file is left alone) and to stdout.
#
#   tests/bench/bench-serve.sh BIN MODEL OUT [LEVELS]
#
# LEVELS (optional, for quick tries) is bench_serve.py's --levels, e.g. 1x2,4x1.
set -euo pipefail
BIN=$1 MODEL=$2 OUT=$3 LEVELS=${4:-}
HERE=$(cd "$(dirname "$0")" && pwd)
SERVER_FLAGS=(-t 2 --max-seqs 64 --max-queue 256 --kv-cache-mem 512)
LLAMA_FLAGS=(-t 2 -np 16 -cb -c 8192)
SQ_FLAGS=(--weights sq:8/4:b64:s0.875 --acts int8)
CACHE=${BENCH_CACHE:-models/.cache/bench-cpu}

commit=$(git rev-parse --short HEAD)   # what was built, taken before the run
# busy CPU jiffies of the whole machine (user+nice+system+irq+softirq+steal)
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9; exit}' /proc/stat; }
# user+system jiffies of one process
proc_cpu() { awk '{sub(/^.*\) /, ""); print $12+$13}' "/proc/$1/stat"; }
tmp=$(mktemp -d)
pid=""
# shellcheck disable=SC2317  # run by the EXIT trap
stop_server() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  pid=""
}
trap 'stop_server; rm -rf "$tmp"' EXIT

# The SQ .sqm, under the same cache key make bench-cpu uses.
mkdir -p "$CACHE"
key=$(echo "$(basename "$MODEL") ${SQ_FLAGS[*]}" | tr -c 'A-Za-z0-9.\n' '_')
SQM="$CACHE/$key.sqm"
if ! "$BIN" inspect -m "$SQM" >/dev/null 2>&1; then
  echo "converting: ${SQ_FLAGS[*]}" >&2
  "$BIN" convert -m "$MODEL" -o "$SQM" "${SQ_FLAGS[@]}" >&2
fi

wait_health() { # url -> 0 once GET /health answers 200 (llama-server: 503 while loading)
  python3 - "$1" <<'PY'
import sys, time, urllib.request
deadline = time.time() + 120
while True:
    try:
        if urllib.request.urlopen(sys.argv[1] + "/health", timeout=5).status == 200:
            break
    except Exception:
        pass
    if time.time() > deadline:
        sys.exit("bench-serve: /health not ready within 120 s")
    time.sleep(0.1)
PY
}

# run_one N KIND MODEL: starts the server, runs the levels, writes
# $tmp/N.md, $tmp/N.json and $tmp/N.other (cores other processes used).
run_one() {
  local n=$1 kind=$2 model=$3 url=""
  if [ "$kind" = sqserve ]; then
    "$BIN" serve -m "$model" --port 0 "${SERVER_FLAGS[@]}" 2>"$tmp/server$n.log" &
    pid=$!
    # The startup line on stderr names the port.
    for _ in $(seq 600); do
      url=$(grep -o -m1 'http://127\.0\.0\.1:[0-9]*' "$tmp/server$n.log" || true)
      [ -n "$url" ] && break
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
  else
    local port
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "$LLAMA_SERVER" -m "$model" --host 127.0.0.1 --port "$port" "${LLAMA_FLAGS[@]}" >"$tmp/server$n.log" 2>&1 &
    pid=$!
    url="http://127.0.0.1:$port"
  fi
  if [ -z "$url" ] || ! kill -0 "$pid" 2>/dev/null || ! wait_health "$url"; then
    echo "bench-serve: $kind did not start:" >&2; tail -20 "$tmp/server$n.log" >&2; exit 1
  fi
  local rc=0 busy0 busy1 t0 t1 srv_cpu cli_cpu hz
  busy0=$(busy); t0=$(date +%s.%N)
  python3 "$HERE/bench_serve.py" --url "$url" ${LEVELS:+--levels "$LEVELS"} \
    --markdown "$tmp/$n.md" --json "$tmp/$n.json" >/dev/null || rc=$?
  busy1=$(busy); t1=$(date +%s.%N); srv_cpu=$(proc_cpu "$pid")
  [ -s "$tmp/$n.md" ] || { echo "bench-serve: load generator failed (rc $rc)" >&2; tail -20 "$tmp/server$n.log" >&2; exit 1; }
  [ "$rc" -eq 0 ] || echo "bench-serve: $kind: some requests failed (rc $rc)" >&2
  stop_server
  # CPU the rest of the machine used meanwhile, in cores (the generator's
  # own time, from its JSON, and the server's are taken out): ~0 when quiet.
  hz=$(getconf CLK_TCK)
  cli_cpu=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["client_cpu_s"])' "$tmp/$n.json")
  python3 -c 'import sys; b0, b1, s, c, hz, t0, t1 = map(float, sys.argv[1:]); print(f"{max(0.0, ((b1 - b0 - s) / hz - c) / (t1 - t0)):.2f}")' \
    "$busy0" "$busy1" "$srv_cpu" "$cli_cpu" "$hz" "$t0" "$t1" >"$tmp/$n.other"
  echo "bench-serve: $kind $(basename "$model"): other processes used $(cat "$tmp/$n.other") cores on average" >&2
}

gguf_type=$(basename "$MODEL" .gguf | sed 's/.*\.//')
labels=("sqserve, W(SQ 8/4 b64 s0.875)A8 .sqm" "sqserve, GGUF $gguf_type")
kinds=(sqserve sqserve)
models=("$SQM" "$MODEL")
if [ -n "${LLAMA_SERVER:-}" ]; then
  labels+=("llama-server, GGUF $gguf_type"); kinds+=(llama); models+=("$MODEL")
fi
for i in "${!kinds[@]}"; do run_one "$i" "${kinds[$i]}" "${models[$i]}"; done

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
flags=$(grep -m1 '^flags' /proc/cpuinfo)
isa="portable"; [[ $flags == *avx2* ]] && isa="AVX2"
[[ $flags == *avx_vnni* ]] && isa="$isa + AVX-VNNI"
[[ $flags == *avx512_vnni* ]] && isa="AVX-512 VNNI"
# llama.cpp's build commit: from --version, or LLAMA_BUILD for a build made
# outside git (which reports "unknown")
llama_build=""
if [ -n "${LLAMA_SERVER:-}" ]; then
  b=${LLAMA_BUILD:-$("$LLAMA_SERVER" --version 2>&1 | sed -n 's/^version: [0-9]* (\([0-9a-f]*\)).*/\1/p')}
  [ -n "$b" ] && [ "$b" != unknown ] && llama_build=" (build $b)"
fi
summary=$(python3 - "$tmp" "$(printf '%s\n' "${labels[@]}")" <<'PY'
import json, sys
tmp, labels = sys.argv[1], sys.argv[2].split("\n")
runs = [json.load(open(f"{tmp}/{i}.json")) for i in range(len(labels))]
llama = len(labels) == 3
by = [{L["concurrency"]: L for L in r["levels"]} for r in runs]
head = "| clients | " + " | ".join(f"{l}: output tok/s" for l in labels)
head += " | SQ .sqm / llama-server |" if llama else " |"
rows = [head, "|" + "---|" * (1 + len(labels) + llama)]
for c in sorted(by[0]):
    cells = [f"{b[c]['output_tokens_per_s']:.1f}" if c in b else "-" for b in by]
    row = f"| {c} | " + " | ".join(cells)
    if llama and c in by[2] and by[2][c]["output_tokens_per_s"] > 0:
        row += f" | {by[0][c]['output_tokens_per_s'] / by[2][c]['output_tokens_per_s']:.2f}x |"
    elif llama:
        row += " | - |"
    else:
        row += " |"
    rows.append(row)
out = "\n".join(rows) + "\n\n"
for l, r in zip(labels, runs):
    if r.get("ratio_16_vs_1"):
        out += f"- {l}: 16 clients vs 1 client **{r['ratio_16_vs_1']:.2f}x**\n"
print(out)
PY
)
tables=""
for i in "${!labels[@]}"; do
  tables+="### ${labels[$i]} (other processes: $(cat "$tmp/$i.other") cores)"$'\n\n'"$(cat "$tmp/$i.md")"$'\n\n'
done
levels_line=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["levels_desc"])' "$tmp/0.json")
prompt_mean=$(python3 -c 'import json, sys; print("%.1f" % json.load(open(sys.argv[1]))["prompt_tokens_mean"])' "$tmp/0.json")

block=$(cat <<MD
<!-- bench-serve:begin (generated by make bench-serve; do not edit by hand) -->
## Serving under load (make bench-serve)

Measured $(date -u +%Y-%m-%d) at commit $commit on: $cpu, $(nproc) cores ($isa),
from $(basename "$MODEL"); sqserve as \`sqserve serve ${SERVER_FLAGS[*]}\`$(
[ -n "${LLAMA_SERVER:-}" ] && printf ", llama-server%s as \`llama-server %s\`" "$llama_build" "${LLAMA_FLAGS[*]}"),
one server after the other on the same cores (the load generator,
\`tests/bench/bench_serve.py\`, runs on them too; "other processes" below is what
the rest of the machine used meanwhile).

Each level: N clients, each sending its requests back to back on one keep-alive
connection (clients x requests each: $levels_line), after one unmeasured warm-up request.
Every request is a streamed \`POST /v1/completions\` with \`ignore_eos\`,
\`temperature\` 0.7 and its own \`seed\`; prompts are uniform 16..128 words from a fixed
list of single-token words (= prompt tokens; mean $prompt_mean), outputs uniform 16..96
tokens (\`max_tokens\`), all drawn from \`random.Random(1234)\`: every server gets the
same requests. TTFT: send to the first SSE frame with text; ITL: gaps between SSE
frames with text; output tokens from \`usage.completion_tokens\`; rates over each
level's wall time; p50/p99 interpolated.

$summary
$tables<!-- bench-serve:end -->
MD
)

if [ -f "$OUT" ] && grep -q 'bench-serve:begin' "$OUT"; then
  python3 - "$OUT" "$block" <<'PY'
import re, sys
path, block = sys.argv[1], sys.argv[2]
text = open(path).read()
text = re.sub(r"<!-- bench-serve:begin.*?<!-- bench-serve:end -->", lambda _: block, text, flags=re.S)
open(path, "w").write(text)
PY
elif [ -f "$OUT" ]; then
  python3 - "$OUT" "$block" <<'PY'
import sys
path, block = sys.argv[1], sys.argv[2]
text = open(path).read()
open(path, "w").write(text.rstrip("\n") + "\n\n" + block + "\n")
PY
else
  printf '# Performance\n\n%s\n' "$block" > "$OUT"
fi
echo "$block"
echo "wrote $OUT"
