# shellcheck shell=bash
# tests/gpu/libs.sh - sourced by bundle.sh and ab_bundle.sh: copy_libs DEST
# BIN... copies every shared library the binaries load into DEST, except the
# C and C++ runtimes and CUDA's (the GPU machine has its own, as new or
# newer): the lent machines have none of the Debian -dev packages.
copy_libs() {
  local dest=$1 b
  shift
  mkdir -p "$dest"
  for b in "$@"; do
    ldd "$b" | awk '$3 ~ /^\// {print $3}'
  done | sort -u |
    grep -vE '/(libc|libm|libdl|librt|libpthread|ld-linux[^/]*|libstdc\+\+|libgcc_s|libcublas|libcublasLt|libcudart)\.so' |
    while read -r lib; do cp -L "$lib" "$dest/"; done
}
