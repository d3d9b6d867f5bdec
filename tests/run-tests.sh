#!/usr/bin/env bash
# Runs every suite: the C unit tests (cmocka), then pytest (which drives
# the sqserve binary, including the ASan/UBSan build on hostile inputs).
# Each runner prints its own summary line; the exit status is nonzero if
# any suite failed.
set -u
cd "$(dirname "$0")/.." || exit 1
BUILD=${1:-build}
status=0

echo "== C unit tests (cmocka), release and ASan/UBSan builds =="
passed=0; failed=0
for t in "$BUILD"/tests/test_* build/sanitize/tests/test_*; do
  [ -x "$t" ] || continue
  echo "-- $t"
  if "$t"; then passed=$((passed + 1)); else failed=$((failed + 1)); status=1; fi
done
echo "cmocka suites: $passed passed, $failed failed"

echo "== pytest =="
SQSERVE_BIN="$BUILD/sqserve" .venv/bin/python -m pytest tests -q -p no:cacheprovider
rc=$?
# exit 5 = no tests collected: a broken suite, not a pass
[ $rc -eq 0 ] || status=1
exit $status
