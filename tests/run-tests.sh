#!/usr/bin/env bash
# Runs every suite: the C unit tests (cmocka), a bounded libFuzzer run of
# each fuzz target (FUZZ_RUNS executions each, when clang has libFuzzer;
# `make test` builds them), then pytest (which drives
# the sqserve binary, including the ASan/UBSan build on hostile inputs),
# then the API suites once more against the ASan/UBSan server.
# Each runner prints its own summary line; the exit status is nonzero if
# any suite failed.
set -u
cd "$(dirname "$0")/.." || exit 1
BUILD=${1:-build}
status=0

echo "== C unit tests (cmocka), release and ASan/UBSan builds =="
passed=0; failed=0
# the sanitized suites under the options the sanitized server runs with
# (tests/conftest.py): detect_stack_use_after_return also moves locals to
# fake stack frames, which once caught a 64-byte-aligned move the plain
# stack had hidden
SAN_UNIT_ENV="detect_leaks=1:abort_on_error=1:halt_on_error=1:detect_stack_use_after_return=1"
for t in "$BUILD"/tests/test_* build/sanitize/tests/test_*; do
  [ -x "$t" ] || continue
  echo "-- $t"
  case $t in
    build/sanitize/*) run=(env "ASAN_OPTIONS=$SAN_UNIT_ENV" "$t") ;;
    *) run=("$t") ;;
  esac
  if "${run[@]}"; then passed=$((passed + 1)); else failed=$((failed + 1)); status=1; fi
done
echo "cmocka suites: $passed passed, $failed failed"

echo "== libFuzzer: each target for ${FUZZ_RUNS:=5000} executions (fixed seed) =="
if why=$(tests/fuzz/have-libfuzzer.sh); then
  # shellcheck disable=SC2086 # the list is split on purpose
  if tests/fuzz/run-fuzz.sh --runs "$FUZZ_RUNS" build/fuzz ${FUZZ_TARGETS:-gguf sqm tok chat request}; then
    echo "fuzz targets: passed"
  else
    echo "fuzz targets: failed"; status=1
  fi
else
  echo "fuzz targets skipped: $why (the regression inputs still run in pytest)"
fi

echo "== pytest =="
SQSERVE_BIN="$BUILD/sqserve" .venv/bin/python -m pytest tests -q -p no:cacheprovider
rc=$?
# exit 5 = no tests collected: a broken suite, not a pass
[ $rc -eq 0 ] || status=1

# The server under ASan/UBSan: a representative part of the API suites
# (hostile requests, the OpenAI surface with streaming/logprobs/n/echo/stop,
# disconnects and KV accounting, drain and signals, idle and trickling connections).
# serve_util.py turns on the sanitizer options and fails a test whose server
# printed a report or did not exit 0 (LeakSanitizer runs at exit). Left
# out, as the release run above covers them and they cost the most under
# ASan without reaching other code: preemption (minutes at -O1), the
# seed-reproducibility tests (sampling at temperature over the whole
# vocabulary) and the long request under --receive-timeout (its length is
# calibrated, so it only measures time). About 3 minutes on 2 quiet cores.
SAN_SERVE_TESTS=${SAN_SERVE_TESTS:-"tests/test_serve_errors.py tests/test_serve_openai.py tests/test_serve_kv.py tests/test_serve_signals.py tests/test_serve_conns.py"}
SAN_SKIP="not test_small_kv_pool_preempts and not test_seed_reproducible and not test_long_requests_are_not_cut"
if [ -x build/sanitize/sqserve ]; then
  echo "== pytest: API suites against the ASan/UBSan server (build/sanitize/sqserve) =="
  # shellcheck disable=SC2086 # the list is split on purpose
  if ! SQSERVE_BIN=build/sanitize/sqserve SQSERVE_TEST_SANITIZE=1 .venv/bin/python -m pytest \
      $SAN_SERVE_TESTS -q -p no:cacheprovider -k "$SAN_SKIP"; then
    status=1
  fi
else
  echo "build/sanitize/sqserve is missing (make sanitize): the sanitized server run failed"
  status=1
fi

# The Jinja interpreter under ASan/UBSan on every template, conversation,
# malformed and hostile template of the comparison with jinja2 (~2 minutes).
if [ -x build/sanitize/tools/jinja_render ]; then
  echo "== pytest: chat templates through the ASan/UBSan interpreter (build/sanitize/tools/jinja_render) =="
  if ! SQSERVE_JINJA_RENDER=build/sanitize/tools/jinja_render .venv/bin/python -m pytest \
      tests/test_chat_templates.py -q -p no:cacheprovider; then
    status=1
  fi
else
  echo "build/sanitize/tools/jinja_render is missing (make sanitize): the sanitized template run failed"
  status=1
fi
exit $status
