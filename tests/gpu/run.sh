#!/usr/bin/env bash
# tests/gpu/run.sh - the GPU checks and benchmarks in one go (one device call).
#
#   tests/gpu/run.sh [RESULTS_FILE]          (default gpu-results.txt)
#
# 1. build: make CUDA=1 all gpu-bins where the build dependencies are
#    installed; otherwise (a bare GPU box) the binaries already built in
#    $SQSERVE_BIN and $GPU_BIN_DIR are used (tests/gpu/bundle.sh makes them)
# 2. kernel tests: test_kc_ops, test_kc_sq, test_kc_gguf, test_kc_int, then
#    compute-sanitizer memcheck on the four at --quick sizes
# 3. model tests: test_gpu_model (greedy ids vs the reference, SQ GPU vs
#    CPU, batching), perplexity GPU vs CPU (FP32 and SQ 8/4 A8) on
#    WikiText-2, and `serve --device cuda` answering a completion
# 4. benchmarks: bench_gemm (SQ vs cuBLAS BF16/FP8/INT8; --decode: the M <= 16
#    kernels, dp4a against k_sq_dec; --stages / --isdec: the decode kernel
#    from 9 tokens, registers against the ring, INT32 against float), then
#    `bench --synthetic llama3-8b` end to end
# A summary table is printed last; everything goes to RESULTS_FILE too.
#
# Env: MODEL (default models/SmolLM2-135M-Instruct.Q4_1.gguf), DATA (a
# wikitext-2-test.txt), SQSERVE_BIN, GPU_BIN_DIR, SKIP_BENCH=1, BENCH_70B=0,
# SKIP_SANITIZER=1, PPL_TOKENS (default 16384), ONLY=REGEX (run only the
# steps whose names match; the others are listed as skipped).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
RESULTS=${1:-gpu-results.txt}
MODEL=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
DATA=${DATA:-../shared/data/wikitext-2-test.txt}
BIN=${SQSERVE_BIN:-build/sqserve}
GBIN=${GPU_BIN_DIR:-build/gpu}
PPL_TOKENS=${PPL_TOKENS:-16384}
: > "$RESULTS"
summary=()

log() { echo "$@" | tee -a "$RESULTS"; }
# step NAME CMD...: runs CMD with its output into the log; records PASS/FAIL
step() {
  local name=$1
  shift
  if [ -n "${ONLY:-}" ] && ! [[ $name =~ $ONLY ]]; then
    summary+=("| $name | skipped (ONLY=$ONLY) | 0 s |")
    return 0
  fi
  log "===== $name: $*"
  local t0=$SECONDS
  "$@" 2>&1 | tee -a "$RESULTS"
  local rc=${PIPESTATUS[0]}
  local verdict=PASS
  [ "$rc" -ne 0 ] && verdict="FAIL (exit $rc)"
  summary+=("| $name | $verdict | $((SECONDS - t0)) s |")
  return "$rc"
}

# the binaries' own commit when bundle.sh packed them (COMMIT beside bin/)
built=$(cat "$(dirname "$BIN")/../COMMIT" 2>/dev/null || echo "this checkout")
log "gpu run: $(date -u +%FT%TZ) checkout $(git rev-parse --short HEAD 2>/dev/null || echo '?'), binaries from $built"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>&1 | tee -a "$RESULTS"

if pkg-config --exists libmicrohttpd jansson libuv libpcre2-8 libxxhash 2>/dev/null; then
  step build make -j"$(nproc)" CUDA=1 all gpu-bins
else
  log "build dependencies absent here: using the prebuilt $BIN and $GBIN/"
  summary+=("| build | prebuilt (no -dev packages on this machine) | 0 s |")
fi

step test_kc_ops "$GBIN/test_kc_ops"
[ -x "$GBIN/test_kc_sq" ] && step test_kc_sq "$GBIN/test_kc_sq"
[ -x "$GBIN/test_kc_gguf" ] && step test_kc_gguf "$GBIN/test_kc_gguf"
[ -x "$GBIN/test_kc_int" ] && step test_kc_int "$GBIN/test_kc_int"
if [ "${SKIP_SANITIZER:-0}" != 1 ] && command -v compute-sanitizer >/dev/null; then
  step memcheck_kc_ops compute-sanitizer --tool memcheck --error-exitcode 3 "$GBIN/test_kc_ops" --quick
  [ -x "$GBIN/test_kc_sq" ] &&
    step memcheck_kc_sq compute-sanitizer --tool memcheck --error-exitcode 3 "$GBIN/test_kc_sq" --quick
  [ -x "$GBIN/test_kc_gguf" ] &&
    step memcheck_kc_gguf compute-sanitizer --tool memcheck --error-exitcode 3 "$GBIN/test_kc_gguf" --quick
  [ -x "$GBIN/test_kc_int" ] &&
    step memcheck_kc_int compute-sanitizer --tool memcheck --error-exitcode 3 "$GBIN/test_kc_int" --quick
fi

step test_gpu_model "$GBIN/test_gpu_model" "$MODEL" tests/fixtures/generate.json

# perplexity: the same recipe on CPU and GPU must agree within PPL_BOUND %
# (0.5, the issue's bound). Recipes that wreck the model (W4 with 4-bit
# activations, ppl 4x FP32) amplify rounding far more: measured here +0.48 %
# at 16384 tokens and +2.0 % at 8192, so they get 3 %.
ppl_of() { sed -n 's/^ppl: *\([0-9.]*\).*/\1/p'; }
ppl_pair() {
  local name=$1 bound=${PPL_BOUND:-0.5}
  shift
  local c g
  local m=${PPL_MODEL:-$MODEL}
  c=$("$BIN" eval -m "$m" --ppl "$DATA" --ctx 512 --max-tokens "$PPL_TOKENS" "$@" --device cpu | ppl_of)
  g=$("$BIN" eval -m "$m" --ppl "$DATA" --ctx 512 --max-tokens "$PPL_TOKENS" "$@" --device cuda | ppl_of)
  python3 - "$name" "$c" "$g" "$bound" <<'PY'
import sys
name, c, g, b = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
d = 100 * (g - c) / c
print(f"{name}: ppl CPU {c:.6f}  GPU {g:.6f}  delta {d:+.4f} % (bound {b} %)")
sys.exit(0 if abs(d) <= b else 1)
PY
}
if [ -f "$DATA" ]; then
  step ppl_fp32 ppl_pair "FP32" --weights fp32 --acts fp32
  step ppl_sq_a8 ppl_pair "W(SQ 8/4 b64 s0.875)A8" --weights sq:8/4:b64:s0.875 --acts int8
  step ppl_sq_iscale ppl_pair "W(SQ 8/4 b64 s0.875, integer bank scales)A8 (prompt chunks on the INT8 path)" \
    --weights sq:8/4:b64:s0.875:iscale --acts int8
  step ppl_w8a8 ppl_pair "W8A8 (kc_int.cu: INT8 GEMV, cuBLAS INT8)" --weights int8 --acts int8
  step ppl_w4a8 ppl_pair "W4A8 (kc_int.cu: int4 g64 GEMV, FP16 two-step)" --weights int4:g64 --acts int8
  PPL_BOUND=3 step ppl_w4a_sq_static ppl_pair "W4A(SQ 8/4 static), self-calibrated" --weights int4:g64 \
    --acts sq:8/4:b64:s0.875:static --calib self --calib-tokens 256
  # a .sqm with static SQ activations (integer-kernel views with an activation mask)
  sqm_static() {
    local out=${TMPDIR:-/tmp}/gpu-check-static.sqm
    "$BIN" convert -m "$MODEL" -o "$out" --weights int4:g64 --acts sq:8/4:b64:s0.875:static \
      --calib self --calib-tokens 256 && PPL_MODEL=$out PPL_BOUND=3 ppl_pair "W4A(SQ 8/4 static) from a .sqm"
  }
  step ppl_sqm_static sqm_static
else
  log "no $DATA: perplexity comparison skipped"
  summary+=("| ppl | SKIPPED (no data) | 0 s |")
fi

serve_check() {
  local port=18089 pid ok=1
  "$BIN" serve -m "$MODEL" --model-name gpu-check --device cuda --port $port --startup-eval 0 &
  pid=$!
  for _ in $(seq 1 120); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
    sleep 0.5
  done
  out=$(curl -sf "http://127.0.0.1:$port/v1/completions" -H 'Content-Type: application/json' \
    -d '{"model": "gpu-check", "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0}') || ok=0
  echo "completion: $out"
  echo "$out" | grep -q '"text"' || ok=0
  curl -sf "http://127.0.0.1:$port/metrics" | grep -E '^sqserve_(generation_tokens_total|requests_total)' | head -5
  kill -TERM "$pid"
  wait "$pid" || ok=0
  [ "$ok" = 1 ]
}
step serve_cuda serve_check

if [ "${SKIP_BENCH:-0}" != 1 ]; then
  [ -x "$GBIN/bench_gemm" ] && step bench_gemm "$GBIN/bench_gemm"
  [ -x "$GBIN/bench_gemm" ] && step bench_gemm_decode "$GBIN/bench_gemm" --decode
  # the two SQ layouts of kc_sq.cuh side by side: compact (5.5 bits per
  # weight) and explicit slots (6.5)
  [ -x "$GBIN/bench_gemm" ] && step bench_gemm_decode_compact env KC_SQ_COMPACT=1 "$GBIN/bench_gemm" --decode
  [ -x "$GBIN/bench_gemm" ] && step bench_gemm_decode_explicit env KC_SQ_COMPACT=0 "$GBIN/bench_gemm" --decode
  # the dp4a kernel with its weights in registers instead of staged in shared memory
  [ -x "$GBIN/bench_gemm" ] && step bench_gemm_decode_compact_regs env KC_SQ_COMPACT=1 KC_SQ_GEMV_STAGE=0 \
    "$GBIN/bench_gemm" --decode
  [ -x "$GBIN/bench_gemm" ] && step bench_gemm_decode_explicit_regs env KC_SQ_COMPACT=0 KC_SQ_GEMV_STAGE=0 \
    "$GBIN/bench_gemm" --decode
  # the stream-k decode kernel from 9 tokens: loads into registers against
  # rings of 2..4 stages in shared memory (k_sq_dec_st), and integer bank
  # scales' INT32 kernel against the float combination
  [ -x "$GBIN/bench_gemm" ] && step bench_gemm_stages "$GBIN/bench_gemm" --stages
  [ -x "$GBIN/bench_gemm" ] && step bench_gemm_wg "$GBIN/bench_gemm" --wg
  [ -x "$GBIN/bench_gemm" ] && step bench_gemm_isdec "$GBIN/bench_gemm" --isdec
  [ -x "$GBIN/test_kc_gguf" ] && step bench_gguf "$GBIN/test_kc_gguf" --bench
  step bench_synthetic "$BIN" bench --synthetic llama3-8b --device cuda --pp 2048 --batch 1024 --tg 32 -r 3 \
    --decode-batches 1,8,32,128
  step bench_synthetic_no_graphs env SQSERVE_CUDA_GRAPHS=0 "$BIN" bench --synthetic llama3-8b --device cuda \
    --pp 0 --tg 32 -r 3 --decode-batches 1,8
  step bench_synthetic_no_fuse env SQSERVE_CUDA_FUSE=0 "$BIN" bench --synthetic llama3-8b --device cuda \
    --pp 0 --tg 32 -r 3 --decode-batches 1,8
  # batch 1 without the dp4a decode kernel (kc_sq_gemv.cu): k_sq_dec instead
  step bench_synthetic_no_gemv env KC_SQ_GEMV=0 "$BIN" bench --synthetic llama3-8b --device cuda \
    --pp 0 --tg 32 -r 3 --decode-batches 1
  step bench_synthetic_compact env KC_SQ_COMPACT=1 "$BIN" bench --synthetic llama3-8b --device cuda \
    --pp 0 --tg 32 -r 3 --decode-batches 1,8
  step bench_synthetic_explicit env KC_SQ_COMPACT=0 "$BIN" bench --synthetic llama3-8b --device cuda \
    --pp 0 --tg 32 -r 3 --decode-batches 1,8
  step bench_synthetic_compact_regs env KC_SQ_COMPACT=1 KC_SQ_GEMV_STAGE=0 "$BIN" bench --synthetic llama3-8b \
    --device cuda --pp 0 --tg 32 -r 3 --decode-batches 1
  step bench_synthetic_explicit_regs env KC_SQ_COMPACT=0 KC_SQ_GEMV_STAGE=0 "$BIN" bench --synthetic llama3-8b \
    --device cuda --pp 0 --tg 32 -r 3 --decode-batches 1
  # batched decode with the register decode kernel instead of the ring (k_sq_dec_st)
  step bench_synthetic_dec_regs env KC_SQ_DEC_STAGES=0 "$BIN" bench --synthetic llama3-8b --device cuda \
    --pp 0 --tg 32 -r 3 --decode-batches 16,32,64
  # decode at a filled context (each sequence's 2048-token prompt first): attention's share
  step bench_synthetic_depth "$BIN" bench --synthetic llama3-8b --device cuda --pp 0 --depth 2048 --tg 32 -r 2 \
    --decode-batches 1,8
  # where a batch-1 step goes, per operation (graphs off: attribution, not speed)
  step bench_synthetic_profile env SQSERVE_CUDA_PROFILE=1 "$BIN" bench --synthetic llama3-8b --device cuda \
    --pp 0 --tg 16 -r 1 --decode-batches 1
  # without programmatic dependent launch (kc_internal.h: kc_launch_pdl)
  step bench_synthetic_no_pdl env KC_PDL=0 "$BIN" bench --synthetic llama3-8b --device cuda \
    --pp 0 --tg 32 -r 3 --decode-batches 1,8
  [ "${BENCH_70B:-1}" = 1 ] && step bench_synthetic_70b "$BIN" bench --synthetic llama3-70b --device cuda \
    --pp 512 --batch 512 --tg 16 -r 2 --decode-batches 1,8,32
  # integer bank scales, the issue-13 goal's recipe (batch 32: 1,000 tokens/s)
  [ "${BENCH_70B:-1}" = 1 ] && step bench_synthetic_70b_iscale "$BIN" bench --synthetic llama3-70b --device cuda \
    --synthetic-weights sq:8/4:b64:s0.875:iscale --pp 0 --tg 16 -r 2 --decode-batches 16,32,48,64
  [ "${BENCH_70B:-1}" = 1 ] && step bench_synthetic_70b_no_gemv env KC_SQ_GEMV=0 "$BIN" bench --synthetic \
    llama3-70b --device cuda --pp 0 --tg 16 -r 2 --decode-batches 1
  [ "${BENCH_70B:-1}" = 1 ] && step bench_synthetic_70b_compact env KC_SQ_COMPACT=1 "$BIN" bench --synthetic \
    llama3-70b --device cuda --pp 0 --tg 16 -r 2 --decode-batches 1,8
  [ "${BENCH_70B:-1}" = 1 ] && step bench_synthetic_70b_explicit env KC_SQ_COMPACT=0 "$BIN" bench --synthetic \
    llama3-70b --device cuda --pp 0 --tg 16 -r 2 --decode-batches 1,8
  [ "${BENCH_70B:-1}" = 1 ] && step bench_synthetic_70b_explicit_regs env KC_SQ_COMPACT=0 KC_SQ_GEMV_STAGE=0 \
    "$BIN" bench --synthetic llama3-70b --device cuda --pp 0 --tg 16 -r 2 --decode-batches 1
  [ "${BENCH_70B:-1}" = 1 ] && step bench_synthetic_70b_no_pdl env KC_PDL=0 "$BIN" bench --synthetic \
    llama3-70b --device cuda --pp 0 --tg 16 -r 2 --decode-batches 1
  step bench_smollm2 "$BIN" bench -m "$MODEL" --device cuda --pp 512 --tg 128 -r 3
  # the paper's comparison: the same shapes in each format, each on its own kernels
  [ -x "$GBIN/bench_gemm" ] && step bench_gemm_baselines "$GBIN/bench_gemm" --baselines
  for w in sq:8/4:b64:s0.875 int4:g64 int8 f16; do
    step "bench_pareto_8b_${w%%:*}" "$BIN" bench --synthetic llama3-8b --synthetic-weights "$w" --device cuda \
      --pp 2048 --batch 1024 --tg 32 -r 2 --decode-batches 1,8,32
  done
  step bench_pareto_8b_static "$BIN" bench --synthetic llama3-8b --synthetic-weights int4:g64 \
    --synthetic-acts sq:8/4:b64:s0.875:static --device cuda --pp 2048 --batch 1024 --tg 32 -r 2 --decode-batches 1,8,32
  if [ "${BENCH_70B:-1}" = 1 ]; then
    for w in sq:8/4:b64:s0.875 int4:g64 int8; do
      step "bench_pareto_70b_${w%%:*}" "$BIN" bench --synthetic llama3-70b --synthetic-weights "$w" --device cuda \
        --pp 512 --tg 16 -r 2 --decode-batches 1,8,32
    done
    # GQA decode attention at a depth where the split's states passed the old buffer (af66cc5)
    step bench_70b_depth "$BIN" bench --synthetic llama3-70b --device cuda --pp 0 --depth 1024 --tg 16 -r 2 \
      --decode-batches 1,8
  fi
  step bench_smollm2_no_graphs env SQSERVE_CUDA_GRAPHS=0 "$BIN" bench -m "$MODEL" --device cuda --pp 512 --tg 128 -r 3
fi

{
  echo
  echo "| step | result | time |"
  echo "|---|---|---|"
  printf '%s\n' "${summary[@]}"
} | tee -a "$RESULTS"
! printf '%s\n' "${summary[@]}" | grep -q FAIL
