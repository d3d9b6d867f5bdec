"""`make run` stays lean: no test tools, a parallel build, CUDA only where it
can run (or when asked), with one line saying which.

The Makefile is exercised with `make -n` (nothing is built) in a build
folder of the test's own, with stand-ins for nvidia-smi and nvcc on PATH.
"""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def make_n(tmp_path, *args, gpu=None, nvcc=True):
    """`make -n all` with a fake nvidia-smi (gpu True: lists a GPU; False:
    fails; None: absent) and a fake nvcc (or none)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("nvidia-smi", "nvcc"):
        (bin_dir / tool).unlink(missing_ok=True)
    if gpu is not None:
        smi = bin_dir / "nvidia-smi"
        smi.write_text("#!/bin/sh\n" + ("echo 'GPU 0: NVIDIA H200 (UUID: GPU-0)'\n" if gpu else "exit 9\n"))
        smi.chmod(0o755)
    if nvcc:
        n = bin_dir / "nvcc"
        n.write_text("#!/bin/sh\nexit 0\n")
        n.chmod(0o755)
    # a PATH without the host's own CUDA tools: the fakes, then make/cc/sh
    tools = tmp_path / "tools"
    tools.mkdir(exist_ok=True)
    for t in ("make", "sh", "bash", "cc", "gcc", "pkg-config", "mkdir", "echo", "cmp", "od", "sed", "ar",
              "rm", "cat"):
        p = shutil.which(t)
        if p and not (tools / t).exists():
            (tools / t).symlink_to(p)
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA", "NVCC", "MAKEFLAGS", "MFLAGS")}
    env["PATH"] = f"{bin_dir}:{tools}"
    r = subprocess.run(["make", "-n", "--no-print-directory", f"BUILD={tmp_path / 'build'}", *args, "all"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [l for l in r.stdout.splitlines() if "build: CUDA kernels" in l]
    assert len(lines) == 1, r.stdout[-2000:]
    return lines[0], r.stdout


@pytest.mark.skipif(not shutil.which("make"), reason="no make")
@pytest.mark.parametrize("gpu,nvcc,args,want,compiles", [
    (None, True, [], "off: no GPU (nvidia-smi -L lists none); CUDA=1 builds the kernels anyway", False),
    (False, True, [], "off: no GPU (nvidia-smi -L lists none)", False),
    (True, True, [], "on: nvidia-smi -L lists a GPU", True),
    # NVCC= too: the Makefile also looks in /usr/local/cuda/bin
    (True, False, ["NVCC="], "off: a GPU is present but nvcc is missing", False),
    (None, True, ["CUDA=1"], "on: CUDA=1 was asked for", True),
    (True, True, ["CUDA=0"], "off: CUDA=0 was asked for", False),
])
def test_cuda_only_with_a_gpu_or_when_asked(tmp_path, gpu, nvcc, args, want, compiles):
    line, out = make_n(tmp_path, *args, gpu=gpu, nvcc=nvcc)
    assert want in line, line
    assert bool(re.search(r"nvcc .*kernels/cuda/\w+\.cu", out)) == compiles, out[-2000:]


def _rule(target):
    text = (ROOT / "Makefile").read_text()
    m = re.search(rf"^{re.escape(target)}:([^\n]*)\n((?:\t[^\n]*\n)*)", text, re.M)
    assert m, target
    return m.group(1).split(), m.group(2)


def test_make_run_needs_no_test_tools_and_builds_in_parallel():
    prereq, recipe = _rule("run")
    assert "deps-run" in prereq and "deps" not in prereq, prereq
    assert re.search(r"\$\(MAKE\).*-j\$\(JOBS\).* all", recipe), recipe
    _, deps_run = _rule("deps-run")
    assert "install-deps.sh run" in deps_run, deps_run
    test_prereq, _ = _rule("test")
    assert "deps" in test_prereq, test_prereq


def test_install_deps_run_mode_makes_no_venv(tmp_path):
    """`install-deps.sh run` stops before the test virtualenv (the Debian
    packages are already there wherever this suite runs, so apt is not run)."""
    (tmp_path / "deploy").mkdir()
    (tmp_path / "tests").mkdir()
    shutil.copy(ROOT / "deploy" / "install-deps.sh", tmp_path / "deploy")
    shutil.copy(ROOT / "tests" / "requirements.txt", tmp_path / "tests")
    r = subprocess.run([str(tmp_path / "deploy" / "install-deps.sh"), "run"], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / ".venv").exists(), "install-deps.sh run created the test venv"
    r = subprocess.run([str(tmp_path / "deploy" / "install-deps.sh"), "nonsense"], capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stderr
