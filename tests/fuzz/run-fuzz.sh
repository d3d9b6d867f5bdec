#!/usr/bin/env bash
# Runs each libFuzzer target on its seed corpus (tests/fuzz/corpus/T, read
# only) plus a work corpus (OUT/grown/T, where new inputs go), from the
# repository root (the tok and request targets load the default model).
# Usage:
#   run-fuzz.sh OUT SECONDS TARGET...      each target SECONDS of wall time
#                                          (make fuzz; the work corpus grows
#                                          from one run to the next)
#   run-fuzz.sh --runs N OUT TARGET...     each target N executions, from a
#                                          fresh work corpus with a fixed seed
#                                          (make test: bounded by work, not by
#                                          time, so a slow machine runs the
#                                          same inputs, only slower)
# OUT is the folder holding the fuzz_T binaries. Prints one line per
# target: executions, coverage (edges), corpus size, crashes. Crashing
# inputs are kept as OUT/crashes/T-*; the exit status is nonzero if any
# target crashed. The kernels run their portable C paths
# (SQSERVE_ISA=portable unless set): UBSan sees their float-to-int
# conversions, which the SIMD paths do without a check.
set -u
cd "$(dirname "$0")/../.." || exit 1
runs=
if [ "${1:-}" = "--runs" ]; then
  runs=${2:?executions}
  shift 2
  out=${1:?output folder}
  shift
  limit=(-runs="$runs" -seed=1 -timeout=600) # a hang guard, not a speed test
  work=$out/ci-work
  rm -rf "$work"
else
  out=${1:?output folder}
  secs=${2:?seconds}
  shift 2
  limit=(-max_total_time="$secs" -timeout=30) # an input slower than 30 s is a finding
  work=$out/grown
fi
status=0
mkdir -p "$out/crashes"
printf '%-8s %12s %8s %8s %8s\n' target execs cov corpus crashes
for t in "$@"; do
  bin=$out/fuzz_$t
  [ -x "$bin" ] || { echo "$bin is missing (make fuzz-bins)"; status=1; continue; }
  [ -d "tests/fuzz/corpus/$t" ] || { echo "tests/fuzz/corpus/$t is missing (tests/fuzz/make_seeds.py)"; status=1; continue; }
  mkdir -p "$work/$t"
  log=$out/$t.log
  before=$(find "$out/crashes" -name "$t-*" | wc -l)
  SQSERVE_ISA=${SQSERVE_ISA:-portable} \
  ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1 \
    "$bin" "${limit[@]}" -print_final_stats=1 -rss_limit_mb=4096 \
    -artifact_prefix="$out/crashes/$t-" "$work/$t" "tests/fuzz/corpus/$t" >"$log" 2>&1
  rc=$?
  after=$(find "$out/crashes" -name "$t-*" | wc -l)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  corp=$(grep -o 'corp: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  printf '%-8s %12s %8s %8s %8s\n' "$t" "${execs:-?}" "${cov:-?}" "${corp:-?}" "$((after - before))"
  if [ "$rc" -ne 0 ] || [ "$after" -gt "$before" ]; then
    status=1
    echo "  $t failed (exit $rc); log: $log"
    grep -m3 -E 'ERROR|runtime error|SUMMARY' "$log" | sed 's/^/  /'
  elif [ -n "$runs" ] && [ "${execs:-0}" -lt "$runs" ]; then
    status=1
    echo "  $t ran ${execs:-no} executions of $runs; log: $log"
  fi
done
exit $status
