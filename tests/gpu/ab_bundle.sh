#!/usr/bin/env bash
# tests/gpu/ab_bundle.sh REV... - the GPU binaries of several revisions, for
# timing them side by side in one device call (docs/perf-gpu.md, "Running on
# a lent GPU"): each REV (a commit, branch or tag) is built with CUDA=1 in a
# throwaway worktree, and its bench_gemm, test_kc_sq and sqserve, stripped,
# go to .gpu-ab/bin.tar.xz as <n>-<rev>/ (n = the order given), with lib/,
# the shared libraries they load (tests/gpu/libs.sh). On the device:
#   mkdir -p /tmp/ab && tar xJf .gpu-ab/bin.tar.xz -C /tmp/ab
#   export LD_LIBRARY_PATH=/tmp/ab/lib:<the directory of libcublas.so.13>
#   for d in /tmp/ab/[0-9]*/; do "$d/bench_gemm" --wg --shape "70B gate_up"; done
# interleaves them per shape. Why a script: measuring a change against the
# previous binary in the same call is the rule (METHOD), and a hand-built
# pair of trees took a session's minutes each time.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 1 ] || { echo "usage: $0 REV..." >&2; exit 2; }
top=$(pwd)
work=$(mktemp -d /tmp/sq-ab.XXXXXX)
cleanup() {
  local w
  for w in "$work"/tree-*; do
    if [ -d "$w" ]; then git -C "$top" worktree remove --force "$w"; fi
  done
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/out"
n=0
for rev in "$@"; do
  n=$((n + 1))
  sha=$(git rev-parse --short=7 "$rev^{commit}")
  tree="$work/tree-$n"
  git worktree add -q --detach "$tree" "$sha"
  # the CUTLASS headers: the ones this checkout fetched, if any (no download per tree)
  [ -d .deps ] && ln -s "$top/.deps" "$tree/.deps"
  echo "ab_bundle: building $rev ($sha)"
  make -C "$tree" -j"$(nproc)" CUDA=1 build/sqserve gpu-bins >"$work/build-$n.log" 2>&1 ||
    { tail -20 "$work/build-$n.log" >&2; echo "ab_bundle: $rev does not build" >&2; exit 1; }
  label=$(printf '%d-%s' "$n" "$(echo "$rev" | tr -c 'A-Za-z0-9._\n-' '_')")
  mkdir -p "$work/out/$label"
  cp "$tree/build/sqserve" "$tree/build/gpu/bench_gemm" "$tree/build/gpu/test_kc_sq" "$work/out/$label/"
  strip --strip-debug "$work/out/$label"/*
  echo "$sha" > "$work/out/$label/COMMIT"
done
# shellcheck source=tests/gpu/libs.sh
. tests/gpu/libs.sh
copy_libs "$work/out/lib" "$work/out"/[0-9]*/bench_gemm "$work/out"/[0-9]*/sqserve
mkdir -p .gpu-ab
tar cJf .gpu-ab/bin.tar.xz -C "$work/out" .
du -sh .gpu-ab/bin.tar.xz # (a device call carries 64 MiB: about 4 revisions)
