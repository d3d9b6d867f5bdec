#!/usr/bin/env bash
# tests/gpu/bundle.sh - packs what tests/gpu/run.sh needs on a bare GPU
# machine that has the CUDA toolkit but none of the Debian -dev packages
# (the lent device machines): the binaries built here with CUDA=1, the
# non-system shared libraries they load (as one tar.xz), the WikiText-2
# test text, and the model split in two parts (a device call carries at
# most 64 MiB). Everything goes under git-ignored .gpu*/ folders:
#
#   .gpu/     bin.tar.xz (stripped binaries and their libraries)
#             data/wikitext-2-test.txt                   (~12 MB)
#   .gpu-m1/  model.part1                                 (first 48 MiB)
#   .gpu-m2/  model.part2 model.sha256 wikitext-2-valid.txt (the rest)
#
# On the device: unpack into /tmp/sq (see docs/perf-gpu.md, "Running on a
# lent GPU"), then SQSERVE_BIN=/tmp/sq/bin/sqserve GPU_BIN_DIR=/tmp/sq/bin
# MODEL=/tmp/sq/model.gguf DATA=/tmp/sq/data/wikitext-2-test.txt tests/gpu/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
DATA=${DATA:-../shared/data/wikitext-2-test.txt}
make -j"$(nproc)" CUDA=1 all gpu-bins >/dev/null
rm -rf .gpu .gpu-m1 .gpu-m2
rm -rf /tmp/sq-bundle
mkdir -p .gpu/data .gpu-m1 .gpu-m2 /tmp/sq-bundle/bin /tmp/sq-bundle/lib
cp build/sqserve build/gpu/* /tmp/sq-bundle/bin/
rm -f /tmp/sq-bundle/bin/*.d
strip --strip-debug /tmp/sq-bundle/bin/*
cp "$DATA" .gpu/data/
# shellcheck source=tests/gpu/libs.sh
. tests/gpu/libs.sh
copy_libs /tmp/sq-bundle/lib /tmp/sq-bundle/bin/*
# which commit the binaries are (the device's checkout may be older)
git describe --always --dirty --abbrev=7 > /tmp/sq-bundle/COMMIT
tar cJf .gpu/bin.tar.xz -C /tmp/sq-bundle bin lib COMMIT
split -b 48M "$MODEL" /tmp/sq-bundle/model.part
mv /tmp/sq-bundle/model.partaa .gpu-m1/model.part1
mv /tmp/sq-bundle/model.partab .gpu-m2/model.part2
sha256sum "$MODEL" | cut -d' ' -f1 > .gpu-m2/model.sha256
# the calibration text, for an accuracy grid run there (tests/bench/accuracy.py)
cp "$(dirname "$DATA")/wikitext-2-valid.txt" .gpu-m2/
du -sh .gpu .gpu-m1 .gpu-m2
