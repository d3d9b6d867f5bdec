"""Every input a fuzzer crashed on stays a test (built by tests/fuzz/regressions.py).

Each file is loaded with `sqserve generate` by the release and the ASan/UBSan
builds, on the portable kernels (SQSERVE_ISA=portable: their plain C
conversions are what UBSan checks; the first of these inputs hit
`kernels/cpu/k_sq.c:122: nan is outside the range of representable values of
type 'signed char'` through a NaN norm weight in an SQ + INT8 .sqm). It must
be refused with one `error:` line or run cleanly, never crash or report.
When the libFuzzer harnesses are built (`make fuzz-bins`, clang), each
input is also replayed through its harness (build/fuzz/fuzz_T FILE).
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT, run_sqserve, sanitizer_report

sys.path.insert(0, str(REPO_ROOT / "tests" / "fuzz"))
import regressions  # noqa: E402

INPUTS = [Path(n) for n in regressions.NAMES]
HANG = 600


@pytest.fixture(scope="module")
def built(tmp_path_factory, sqserve_bin):
    return regressions.build(tmp_path_factory.mktemp("regressions"), str(sqserve_bin))


def test_there_are_regressions(built):
    assert {p.parent.name for p in INPUTS} >= {"gguf", "sqm"}
    assert all(p.is_file() for p in built.values())


@pytest.fixture(params=["release", "sanitize"])
def sq(request):
    if request.param == "release":
        return request.getfixturevalue("sqserve_bin"), False
    return request.getfixturevalue("san_bin"), True


@pytest.mark.parametrize("path", [p for p in INPUTS if p.parent.name in ("gguf", "sqm")],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_model_regression_is_clean(sq, built, path):
    binary, sanitized = sq
    path = built[str(path)]
    r = run_sqserve(binary, ["generate", "-m", path, "-p", "hello", "-n", "2", "--temp", "0", "-t", "1"],
                    timeout=HANG, sanitizer=sanitized, env={"SQSERVE_ISA": "portable"})
    assert not r.timed_out, r.describe()
    assert sanitizer_report(r.stdout + r.stderr) is None, r.describe()
    assert r.returncode in (0, 1), r.describe()
    if r.returncode == 1:
        lines = r.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), r.describe()
    if path.name.startswith("nan_"):  # the NaN cases: refused, naming the tensor
        assert r.returncode == 1 and "non-finite value" in r.stderr, r.describe()


@pytest.mark.parametrize("path", INPUTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_harness_replays_regression(built, path):
    path = built[str(path)]
    harness = REPO_ROOT / "build" / "fuzz" / f"fuzz_{path.parent.name}"
    if not harness.is_file():
        pytest.skip(f"{harness} not built (make fuzz-bins needs clang)")
    env = dict(os.environ, SQSERVE_ISA="portable")
    p = subprocess.run([str(harness), str(path)], cwd=REPO_ROOT, env=env, capture_output=True,
                       text=True, timeout=HANG)
    out = p.stdout + p.stderr
    assert p.returncode == 0 and sanitizer_report(out) is None, out[-4000:]
