#!/usr/bin/env bash
# tests/gpu/ab_env.sh - one command under several environment settings,
# interleaved (A B C, A B C, ...), so switches that are off by default
# (KC_SQ_SWIGLU=1, KC_SQ_NORM=1, ...) are compared on one warm GPU in one
# device call, each setting seeing the same clocks and temperature.
#
#   tests/gpu/ab_env.sh [-r ROUNDS] [-g REGEX] 'SETTING' ... -- COMMAND [ARGS...]
#
# A setting is a space-separated list of VAR=VALUE ('' for the defaults).
# Every round runs COMMAND once per setting, in the order given; the lines
# of its output matching REGEX (default '^\| [0-9]': the rows of `sqserve
# bench`'s tables) are printed prefixed by the round and the setting. A
# failing run prints its last lines and the script goes on; the exit status
# is 1 if any run failed. Example (decode at batch 1 and 2, two rounds):
#
#   tests/gpu/ab_env.sh -r 2 'KC_SQ_ROPE=0' 'KC_SQ_ROPE=1' -- \
#     /tmp/sq/bin/sqserve bench --synthetic llama3-8b --device cuda --pp 0 --tg 32 -r 2 --decode-batches 1,2
set -uo pipefail
rounds=2
regex='^\| [0-9]'
while getopts "r:g:" o; do
  case $o in
    r) rounds=$OPTARG ;;
    g) regex=$OPTARG ;;
    *) echo "usage: $0 [-r ROUNDS] [-g REGEX] 'SETTING' ... -- COMMAND [ARGS...]" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
settings=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  settings+=("$1")
  shift
done
if [ $# -lt 2 ] || [ ${#settings[@]} -eq 0 ]; then
  echo "usage: $0 [-r ROUNDS] [-g REGEX] 'SETTING' ... -- COMMAND [ARGS...]" >&2
  exit 2
fi
shift # the --
rc=0
for ((r = 1; r <= rounds; r++)); do
  for s in "${settings[@]}"; do
    read -ra vars <<< "$s"
    out=$(env ${vars[@]+"${vars[@]}"} "$@" 2>&1)
    st=$?
    label="round $r, ${s:-defaults}"
    if [ $st -ne 0 ]; then
      echo "[$label] FAILED (exit $st):"
      echo "$out" | tail -5 | sed "s/^/[$label]   /"
      rc=1
      continue
    fi
    echo "$out" | grep -E -- "$regex" | sed "s/^/[$label] /"
  done
done
exit $rc
