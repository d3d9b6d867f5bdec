#!/usr/bin/env bash
# Exit 0 when clang can build a libFuzzer target with ASan/UBSan (what
# `make fuzz-bins` needs), 1 otherwise with the reason on stdout. make test
# builds and runs the fuzz targets only then.
command -v clang >/dev/null 2>&1 || { echo "clang is not installed"; exit 1; }
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
  'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }' >"$tmp/t.c"
if ! clang -fsanitize=fuzzer,address,undefined -o "$tmp/t" "$tmp/t.c" >"$tmp/log" 2>&1; then
  echo "clang cannot link -fsanitize=fuzzer,address,undefined: $(head -1 "$tmp/log")"
  exit 1
fi
exit 0
