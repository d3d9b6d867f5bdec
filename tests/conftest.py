"""Shared fixtures for sqserve's pytest suite.

Binaries: $SQSERVE_BIN (default build/sqserve) and $SQSERVE_SAN_BIN (default
build/sanitize/sqserve, the ASan+UBSan build from `make sanitize`).
Model: $SQSERVE_TEST_MODEL (default models/SmolLM2-135M-Instruct.Q4_1.gguf).
Relative paths are taken from the repository root.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:  # for `import gguf_craft`
    sys.path.insert(0, str(TESTS_DIR))

DEFAULT_MODEL = "models/SmolLM2-135M-Instruct.Q4_1.gguf"

# Sanitizer settings for every run of the sanitize build: leaks are errors,
# the first report aborts the process, UBSan prints where it happened.
SAN_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1:halt_on_error=1:"
                    "detect_stack_use_after_return=1:strict_string_checks=1:symbolize=1",
    "UBSAN_OPTIONS": "halt_on_error=1:abort_on_error=1:print_stacktrace=1",
}

SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error:",
                     "UndefinedBehaviorSanitizer", "ThreadSanitizer", "MemorySanitizer")


def _resolve(env_var: str, default: str) -> Path:
    p = Path(os.environ.get(env_var) or default)
    return p if p.is_absolute() else REPO_ROOT / p


@dataclass
class Result:
    argv: Sequence[str]
    returncode: Optional[int]  # None: killed after the timeout
    stdout: str
    stderr: str
    timed_out: bool = False

    def describe(self) -> str:
        rc = "TIMEOUT (hang)" if self.timed_out else self.returncode
        return (f"$ {' '.join(map(str, self.argv))}\nexit: {rc}\n"
                f"--- stdout (tail) ---\n{self.stdout[-1500:]}\n"
                f"--- stderr (tail) ---\n{self.stderr[-4000:]}")


def run_sqserve(binary: Path, args: Sequence[str], timeout: float = 600,
                sanitizer: bool = False, env: Optional[dict] = None,
                input: Optional[str] = None) -> Result:
    """Runs the binary from the repo root; never raises on a hang."""
    e = dict(os.environ)
    for k in ("SQSERVE_MODEL", "SQSERVE_THREADS", "SQSERVE_CTX", "SQSERVE_BATCH", "SQSERVE_DEVICE",
              "SQSERVE_CHAT_TEMPLATE"):
        e.pop(k, None)  # the CLI reads these; tests must not inherit them
    if sanitizer:
        e.update(SAN_ENV)
    if env:
        e.update(env)
    argv = [str(binary), *map(str, args)]
    try:
        if input is None:
            p = subprocess.run(argv, cwd=REPO_ROOT, env=e, capture_output=True,
                               timeout=timeout, stdin=subprocess.DEVNULL)
        else:
            p = subprocess.run(argv, cwd=REPO_ROOT, env=e, capture_output=True,
                               timeout=timeout, input=input.encode())
    except subprocess.TimeoutExpired as ex:
        out = (ex.stdout or b"").decode("utf-8", "replace")
        err = (ex.stderr or b"").decode("utf-8", "replace")
        return Result(argv, None, out, err, timed_out=True)
    return Result(argv, p.returncode, p.stdout.decode("utf-8", "replace"),
                  p.stderr.decode("utf-8", "replace"))


def sanitizer_report(text: str) -> Optional[str]:
    for m in SANITIZER_MARKERS:
        if m in text:
            return m
    return None


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def sqserve_bin() -> Path:
    p = _resolve("SQSERVE_BIN", "build/sqserve")
    if not p.is_file():
        pytest.skip(f"sqserve binary {p} not found (build it with `make -j2`)")
    return p


@pytest.fixture(scope="session")
def san_bin() -> Path:
    p = _resolve("SQSERVE_SAN_BIN", "build/sanitize/sqserve")
    if not p.is_file():
        pytest.skip(f"sanitizer binary {p} not found (build it with `make sanitize`); "
                    "sanitizer runs skipped")
    return p


@pytest.fixture(scope="session")
def model_path() -> Path:
    p = _resolve("SQSERVE_TEST_MODEL", DEFAULT_MODEL)
    if not p.is_file():
        pytest.skip(f"model {p} not found (fetch it with `make model`)")
    return p
