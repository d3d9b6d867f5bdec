#!/usr/bin/env bash
# Fetches the CUTLASS headers (kc_i8_gemm.cu's Hopper GEMM) from PyPI's
# nvidia-cutlass wheel (BSD-3, its licence kept beside the headers), checks
# its sha256 and unpacks the C++ include tree to .deps/cutlass-VERSION/
# (whole or not at all: unpacked beside it, then renamed; .fetched marks it
# done, and the Makefile rebuilds kc_i8_gemm.o when it changes).
# Only CUDA builds need it; a no-op when the headers are already there.
# pip: deploy/pip.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."

VERSION=4.2.0.0
SHA256=f9599ada45c7bcb6bf53f7d3f0a7d154183e53451c01bfa59eecd37dd4a693f6
DEST=.deps/cutlass-$VERSION
[ -f "$DEST/.fetched" ] && exit 0

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# shellcheck source=deploy/pip.sh
. deploy/pip.sh
PIP=$(pick_pip "$tmp")
echo "cutlass: downloading nvidia-cutlass==$VERSION from PyPI"
$PIP download -q --disable-pip-version-check --no-deps "nvidia-cutlass==$VERSION" -d "$tmp"
whl="$tmp/nvidia_cutlass-$VERSION-py3-none-any.whl"
got=$(sha256sum "$whl" | cut -d' ' -f1)
if [ "$got" != "$SHA256" ]; then
  echo "cutlass: sha256 mismatch for $(basename "$whl"): got $got, expected $SHA256" >&2
  exit 1
fi
unzip -q "$whl" 'cutlass_library/source/include/*' "nvidia_cutlass-$VERSION.dist-info/licenses/LICENSE.txt" -d "$tmp/x"
mkdir -p .deps
rm -rf "$DEST" "$DEST.partial"
mkdir "$DEST.partial"
mv "$tmp/x/cutlass_library/source/include" "$DEST.partial/include"
mv "$tmp/x/nvidia_cutlass-$VERSION.dist-info/licenses/LICENSE.txt" "$DEST.partial/LICENSE.txt"
touch "$DEST.partial/.fetched"
mv "$DEST.partial" "$DEST"
echo "cutlass: headers in $DEST/include"
