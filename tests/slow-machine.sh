#!/usr/bin/env bash
# The timing-sensitive API suites on a starved CPU: pytest and every server
# it starts are pinned to one core (taskset -c $SLOW_CPU, default 0) while a
# busy loop runs on that same core at a higher priority (nice -5 when run as
# root, else the same priority), so the tests get a fraction of one core.
# A test that passes on a quiet machine and fails here depends on speed,
# which no test may (they wait on events and count steps; time bounds are
# hang guards). Not part of `make test`: it takes a multiple of the suites'
# normal time. Usage: tests/slow-machine.sh [BUILD]   (make test-slow-machine)
#
# The selection: drain and drain timeout on SIGTERM (signals), /health while
# loading, the step budget, idle/half-sent/trickling connections and the
# receive timeout (conns), the request timeout and the flags (flags), the
# streaming tests of the OpenAI surface, concurrent streams. Override
# with SLOW_TESTS="files..." and SLOW_K="pytest -k expression".
set -u
cd "$(dirname "$0")/.." || exit 1
BUILD=${1:-build}
CPU=${SLOW_CPU:-0}
TESTS=${SLOW_TESTS:-"tests/test_serve_signals.py tests/test_serve_loading.py tests/test_serve_step_budget.py tests/test_serve_conns.py tests/test_serve_flags.py tests/test_serve_concurrency.py tests/test_serve_openai.py"}
# from the OpenAI surface only the streaming tests (the rest is not timing-sensitive)
K=${SLOW_K:-"not test_serve_openai or stream"}
command -v taskset >/dev/null || { echo "taskset (util-linux) is needed"; exit 1; }
[ -x "$BUILD/sqserve" ] || { echo "$BUILD/sqserve is missing (make)"; exit 1; }

prio=0
[ "$(id -u)" -eq 0 ] && prio=-5
taskset -c "$CPU" nice -n "$prio" sh -c 'while :; do :; done' &
hog=$!
trap 'kill "$hog" 2>/dev/null' EXIT
echo "busy loop (pid $hog, nice $prio) and the tests pinned to CPU $CPU"
start=$(date +%s)
# shellcheck disable=SC2086 # the list is split on purpose
SQSERVE_BIN="$BUILD/sqserve" taskset -c "$CPU" .venv/bin/python -m pytest $TESTS -q -p no:cacheprovider \
  -k "$K" --durations=10
rc=$?
echo "slow-machine run: exit $rc after $(( $(date +%s) - start )) s on one shared core"
exit $rc
