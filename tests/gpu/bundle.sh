#!/usr/bin/env bash
# tests/gpu/bundle.sh - packs what tests/gpu/run.sh needs on a bare GPU
# machine that has the CUDA toolkit but none of the Debian -dev packages
# (the lent device machines): the binaries built here with CUDA=1, the
# non-system shared libraries they load (as one tar.xz), the WikiText-2
# test text, and the model split in two parts (a device call carries at
# most 64 MiB). Everything goes under git-ignored .gpu*/ folders:
#
#   .gpu/     bin.tar.xz (stripped binaries and their libraries, ~26 MB)
#             data/wikitext-2-test.txt                   (~1.2 MB)
#   .gpu-m1/  model.part1                                 (first 35 MiB)
#   .gpu-m2/  model.part2 model.sha256                    (the rest, ~62 MB)
#
# The binaries hold sm_90a code alone (the lent GPUs are H200s): the PTX for
# newer GPUs would make bin.tar.xz ~36 MB, and .gpu with .gpu-m1 must fit one
# call's 64 MiB beside the tracked tree (~3.6 MB). Built in build/gpu90, so
# build/ keeps its own objects.
#
# On the device: unpack into /tmp/sq (see docs/perf-gpu.md, "Running on a
# lent GPU"), then SQSERVE_BIN=/tmp/sq/bin/sqserve GPU_BIN_DIR=/tmp/sq/bin
# MODEL=/tmp/sq/model.gguf DATA=/tmp/sq/data/wikitext-2-test.txt tests/gpu/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
DATA=${DATA:-../shared/data/wikitext-2-test.txt}
B=build/gpu90
make -j"$(nproc)" CUDA=1 BUILD=$B CU_ARCH='-gencode arch=compute_90a,code=sm_90a' all gpu-bins >/dev/null
rm -rf .gpu .gpu-m1 .gpu-m2
rm -rf /tmp/sq-bundle
mkdir -p .gpu/data .gpu-m1 .gpu-m2 /tmp/sq-bundle/bin /tmp/sq-bundle/lib
cp $B/sqserve $B/gpu/* /tmp/sq-bundle/bin/
rm -f /tmp/sq-bundle/bin/*.d
strip --strip-debug /tmp/sq-bundle/bin/*
cp "$DATA" .gpu/data/
# shellcheck source=tests/gpu/libs.sh
. tests/gpu/libs.sh
copy_libs /tmp/sq-bundle/lib /tmp/sq-bundle/bin/*
# which commit the binaries are (the device's checkout may be older)
git describe --always --dirty --abbrev=7 > /tmp/sq-bundle/COMMIT
tar cJf .gpu/bin.tar.xz -C /tmp/sq-bundle bin lib COMMIT
head -c 35M "$MODEL" > .gpu-m1/model.part1
tail -c +$((35 * 1024 * 1024 + 1)) "$MODEL" > .gpu-m2/model.part2
sha256sum "$MODEL" | cut -d' ' -f1 > .gpu-m2/model.sha256
du -sh .gpu .gpu-m1 .gpu-m2
