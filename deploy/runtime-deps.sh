#!/usr/bin/env bash
# The runtime packages of a binary, for the second stage of the Docker images.
#
#   deploy/runtime-deps.sh list BINARY       prints, one per line, the Debian/Ubuntu
#                                            packages that own the shared libraries
#                                            BINARY loads (run where it was built)
#   deploy/runtime-deps.sh install FILE [PKG...]
#                                            installs those of FILE's packages (and
#                                            PKGs) that are missing, and drops the
#                                            apt lists it fetched (runtime image)
#
# Deriving the list from the binary keeps one recipe for Debian 12 and Ubuntu
# 24.04, whose library package names differ (t64 renames), and follows the
# Makefile when it links something new. Libraries that no package owns (the
# CUDA driver, injected at run time by the NVIDIA container toolkit) are left
# out with a note on stderr. Packages already in the image are not touched,
# so a CUDA runtime image keeps the cuBLAS it was released with.
set -euo pipefail

candidates() { # a library's path, its target, and both with and without /usr (usrmerge)
  local p
  for p in "$1" "$(realpath "$1")"; do
    printf '%s\n' "$p" "${p#/usr}" "/usr${p#/usr}"
  done
}

list() {
  local bin=$1 lib c pkg owners
  [ -x "$bin" ] || { echo "runtime-deps: $bin is not an executable" >&2; exit 1; }
  local libs=()
  mapfile -t libs < <(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3}')
  [ ${#libs[@]} -gt 0 ] || { echo "runtime-deps: ldd found no libraries in $bin" >&2; exit 1; }
  # one dpkg query for every candidate path: lines "pkg[:arch][, pkg...]: /path"
  owners=$(for lib in "${libs[@]}"; do candidates "$lib"; done | sort -u \
           | xargs dpkg-query -S 2>/dev/null | grep -v '^diversion' || true)
  for lib in "${libs[@]}"; do
    pkg=""
    while read -r c; do
      pkg=$(awk -F': ' -v f="$c" '$2 == f {sub(/[:,].*/, "", $1); print $1; exit}' <<<"$owners")
      [ -z "$pkg" ] || break
    done < <(candidates "$lib")
    if [ -n "$pkg" ]; then echo "$pkg"; else echo "runtime-deps: no package owns $lib; left out" >&2; fi
  done | sort -u
}

install() {
  local file=$1 p
  shift
  local missing=()
  while read -r p; do
    [ -n "$p" ] || continue
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done < <(cat "$file"; printf '%s\n' "$@")
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    rm -rf /var/lib/apt/lists/*  # the lists fetched above: not part of the image
  fi
}

case "${1:-}" in
  list) [ $# -eq 2 ] || { echo "usage: $0 list BINARY" >&2; exit 2; }; list "$2" ;;
  install) [ $# -ge 2 ] || { echo "usage: $0 install FILE [PKG...]" >&2; exit 2; }; shift; install "$@" ;;
  *) echo "usage: $0 list BINARY | install FILE [PKG...]" >&2; exit 2 ;;
esac
