#!/usr/bin/env bash
# tests/gpu/profile.sh - Nsight Compute on what bounds each GPU kernel: the
# kernels of one decode step end to end, and the matmul paths of bench_gemm
# at chosen shapes and token counts (the profiles issues 12 and 13 ask for
# where a goal is missed). One device call; nothing here is timed as a test.
#
#   tests/gpu/profile.sh [OUT_DIR]          (default ncu-out)
#
# 1. Decode step: `sqserve bench --synthetic MODEL --decode-batches B` with
#    SQSERVE_PROFILE_STEP=1 (engine/runtime/bench.c marks the first timed
#    step with cudaProfilerStart/Stop) and CUDA graphs off, under
#    `ncu --profile-from-start off`: every kernel of that one step, each
#    alone (ncu serializes them, so the dependent-launch overlap of a real
#    step is gone: these are the kernels' own limits, not the step's time).
# 2. Matmul paths: `bench_gemm MODE --shape S --m M` for each entry of GEMM,
#    the SQ kernels, CUTLASS and cuBLAS kernels it runs.
# Each run is exported (OUT_DIR/NAME.ncu-rep) and summarised by kernel name
# (OUT_DIR/NAME.md): launches, time, DRAM bytes and GB/s, and the share of
# peak each unit reached (DRAM, L2, SM), issue slots busy, warps resident
# and eligible per scheduler. A kernel near its DRAM peak is bandwidth
# bound; one with DRAM, L2 and SM all low is latency bound (few eligible
# warps), one with issue slots near 100 % is instruction bound.
#
# Env: SQSERVE_BIN (build/sqserve), GPU_BIN_DIR (build/gpu), NCU (found
# under / when unset), MODELS ("llama3-8b llama3-70b"), BATCHES ("1 8"),
# WEIGHTS (a --synthetic-weights spec; default the bench's), CLOCKS (ncu's
# --clock-control: none, the default here, keeps the GPU's own clocks),
# GEMM ("MODE|SHAPE|M;..." entries: a bench_gemm mode, shape and token
# count; "" skips part 2).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
OUT=${1:-ncu-out}
BIN=${SQSERVE_BIN:-build/sqserve}
GBIN=${GPU_BIN_DIR:-build/gpu}
NCU=${NCU:-$(command -v ncu || find / -name ncu -type f -perm -u+x 2>/dev/null | head -1)}
MODELS=${MODELS:-llama3-8b llama3-70b}
BATCHES=${BATCHES:-1 8}
CLOCKS=${CLOCKS:-none}
GEMM=${GEMM-"--decode|8B qkv|1;--decode|8B o|1;--decode|8B down|1;--decode|70B gate_up|1;--wg|70B gate_up|16;--wg|70B gate_up|128;--wg|8B gate_up|128;--twostep|8B o|1024;--twostep|70B down|1024"}
METRICS=gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,lts__throughput.avg.pct_of_peak_sustained_elapsed,sm__throughput.avg.pct_of_peak_sustained_elapsed,smsp__issue_active.avg.pct_of_peak_sustained_active,smsp__warps_active.avg.per_cycle_active,smsp__warps_eligible.avg.per_cycle_active,launch__registers_per_thread,launch__grid_size,launch__block_size
if [ -z "$NCU" ] || ! [ -x "$NCU" ]; then
  echo "profile.sh: no ncu (Nsight Compute) found; set NCU" >&2
  exit 2
fi
mkdir -p "$OUT"
"$NCU" --version | tail -1

# summarise NAME: OUT/NAME.ncu-rep -> OUT/NAME.md (and stdout)
summarise() {
  local name=$1
  "$NCU" --import "$OUT/$name.ncu-rep" --csv --page raw --print-units base --metrics "$METRICS" > "$OUT/$name.csv" 2> "$OUT/$name.err" || {
    echo "profile.sh: ncu --import $name failed: $(head -3 "$OUT/$name.err")"
    return 1
  }
  python3 - "$OUT/$name.csv" "$name" <<'EOF' | tee "$OUT/$name.md"
import csv, sys
from collections import OrderedDict
path, name = sys.argv[1], sys.argv[2]
rows = list(csv.reader(open(path, newline="")))
head = next(i for i, r in enumerate(rows) if "Kernel Name" in r)
cols = rows[head]
# the units row (ncu scales units unless --print-units base): to bytes and nanoseconds
scale = {"byte": 1, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9, "nsecond": 1, "usecond": 1e3, "msecond": 1e6,
         "second": 1e9}
units = rows[head + 1] if head + 1 < len(rows) and not rows[head + 1][0].strip().isdigit() else []
data = [r for r in rows[head + 1:] if len(r) == len(cols) and r[0].strip().isdigit()]
def num(r, key):
    try:
        i = cols.index(key)
        u = units[i].strip() if i < len(units) else ""
        return float(r[i].replace(",", "")) * scale.get(u, 1)
    except (ValueError, IndexError):
        return float("nan")
by = OrderedDict()
for r in data:
    k = r[cols.index("Kernel Name")].split("(")[0].strip()
    by.setdefault(k, []).append(r)
total = sum(num(r, "gpu__time_duration.sum") for r in data) or 1.0
print(f"### {name}: {len(data)} kernels, {total / 1e3:.1f} us in all (each alone, ncu)\n")
print("| kernel | n | us each | share | DRAM MB | DRAM GB/s | DRAM % | L2 % | SM % | issue % | warps / eligible a scheduler | regs | grid x block |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
def avg(rs, key, w):
    s = sum(w[i] for i in range(len(rs)))
    return sum(num(r, key) * w[i] for i, r in enumerate(rs)) / s if s else float("nan")
out = []
for k, rs in by.items():
    t = [num(r, "gpu__time_duration.sum") for r in rs]
    tt = sum(t)
    b = sum(num(r, "dram__bytes_read.sum") + num(r, "dram__bytes_write.sum") for r in rs)
    out.append((tt, k, rs, t, b))
for tt, k, rs, t, b in sorted(out, key=lambda x: -x[0]):
    f = lambda key: avg(rs, key, t)
    print(f"| {k[:70]} | {len(rs)} | {tt / len(rs) / 1e3:.2f} | {100 * tt / total:.1f} % | {b / len(rs) / 1e6:.2f} | "
          f"{b / tt:.0f} | {f('dram__throughput.avg.pct_of_peak_sustained_elapsed'):.0f} | "
          f"{f('lts__throughput.avg.pct_of_peak_sustained_elapsed'):.0f} | "
          f"{f('sm__throughput.avg.pct_of_peak_sustained_elapsed'):.0f} | "
          f"{f('smsp__issue_active.avg.pct_of_peak_sustained_active'):.0f} | "
          f"{f('smsp__warps_active.avg.per_cycle_active'):.1f} / {f('smsp__warps_eligible.avg.per_cycle_active'):.2f} | "
          f"{num(rs[0], 'launch__registers_per_thread'):.0f} | "
          f"{num(rs[0], 'launch__grid_size'):.0f} x {num(rs[0], 'launch__block_size'):.0f} |")
print()
EOF
}

rc=0
# 1. one decode step of each model and batch size
for model in $MODELS; do
  for b in $BATCHES; do
    name="step-$model-b$b"
    wargs=()
    [ -n "${WEIGHTS:-}" ] && wargs=(--synthetic-weights "$WEIGHTS")
    echo "===== $name"
    SQSERVE_PROFILE_STEP=1 SQSERVE_CUDA_GRAPHS=0 "$NCU" --profile-from-start off --clock-control "$CLOCKS" \
      --metrics "$METRICS" --export "$OUT/$name" --force-overwrite \
      "$BIN" bench --synthetic "$model" --device cuda "${wargs[@]}" --pp 0 --tg 2 -r 1 --decode-batches "$b" \
      > "$OUT/$name.log" 2>&1 || { echo "profile.sh: $name failed: $(tail -3 "$OUT/$name.log")"; rc=1; continue; }
    summarise "$name" || rc=1
  done
done

# 2. the matmul paths, one shape and M at a time ("MODE|SHAPE|M")
IFS=';' read -ra entries <<< "$GEMM"
for entry in "${entries[@]}"; do
  IFS='|' read -r mode shape m <<< "$entry"
  name="gemm_${mode#--}_${shape// /_}_m$m"
  echo "===== $name"
  "$NCU" --clock-control "$CLOCKS" --kernel-name "regex:k_sq|k_i8|device_kernel|nvjet|gemm" \
    --metrics "$METRICS" --export "$OUT/$name" --force-overwrite \
    "$GBIN/bench_gemm" "$mode" --shape "$shape" --m "$m" --reps 2 \
    > "$OUT/$name.log" 2>&1 || { echo "profile.sh: $name failed: $(tail -3 "$OUT/$name.log")"; rc=1; continue; }
  summarise "$name" || rc=1
done
exit $rc
