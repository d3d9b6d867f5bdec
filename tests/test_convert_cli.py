"""convert's phases and --eval-tokens, and what inspect says about a .sqm.

- Every phase of convert reports progress with an ETA, step by step up to
  done = total: the calibration text, calibration, quantization, and the
  accuracy check (its text, then its windows).
- --eval-tokens 0 skips the accuracy check; the .sqm then records no
  evaluation and inspect says none was run. Values between 1 and 127 are
  refused (the check works in 128-token windows).
- inspect on a .sqm prints its recipe, the stated bits per weight, the bits
  of each part (the same matrix over all layers) and of all layer matrices,
  consistent with its per-tensor lines, and the recorded evaluation with the
  reference it was measured against.
Tiny crafted models keep each conversion to seconds.
"""
import json
import os
import re
import struct
import subprocess
from pathlib import Path

import pytest

import gguf_craft as gc

ROOT = Path(__file__).resolve().parent.parent
BIN = os.environ.get("SQSERVE_BIN", str(ROOT / "build" / "sqserve"))
PROGRESS = re.compile(r"^(.+?): (\d+)/(\d+) \(([\d.]+)s elapsed, ETA (\d+)s\)$", re.M)


def run(*args, timeout=300):
    return subprocess.run([BIN, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def manifest(path):
    raw = Path(path).read_bytes()
    _, _, _, _, json_off, json_len = struct.unpack("<4sIQQQQ", raw[:40])
    return json.loads(raw[json_off:json_off + json_len])


def fields(stdout):
    return dict(re.findall(r"^(\w+): (.*)$", stdout, re.M))


def phases(stderr):
    """phase -> list of (done, total), in order"""
    out = {}
    for what, done, total, _, _ in PROGRESS.findall(stderr):
        out.setdefault(what, []).append((int(done), int(total)))
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    p = tmp_path_factory.mktemp("convert") / "tiny.gguf"
    gc.tiny_llama_file(dim=128, ffn=256, n_layer=2, seed=5).write(p)
    return p


@pytest.fixture(scope="module")
def checked(tiny, tmp_path_factory):
    """A calibrated recipe (static SQ activations) with the accuracy check."""
    out = tmp_path_factory.mktemp("checked") / "m.sqm"
    r = run("convert", "-m", tiny, "-o", out, "--weights", "int4:g64", "--acts", "sq:8/4:b64:s0.875:static",
            "--calib-tokens", 256, "--eval-tokens", 256)
    assert r.returncode == 0, r.stderr[-2000:]
    return out, r


def test_every_phase_reports_progress(checked):
    _, r = checked
    ph = phases(r.stderr)
    want = ["calibration text", "calibration", "quantize", "accuracy check text", "accuracy check"]
    assert list(ph) == want, r.stderr[-3000:]
    for what, steps in ph.items():
        total = steps[0][1]
        assert total >= 1 and all(t == total for _, t in steps), (what, steps)
        assert [d for d, _ in steps] == list(range(1, total + 1)), (what, steps)
    assert ph["accuracy check text"][-1] == (2, 2) and ph["accuracy check"][-1] == (2, 2)  # 256 tokens
    assert ph["calibration text"][-1] == (2, 2)
    assert re.search(r"^eval vs FP32 on \d+ self-generated tokens", r.stderr, re.M)


def test_inspect_shows_recipe_bits_and_evaluation(checked, tiny):
    out, _ = checked
    r = run("inspect", "-m", out)
    assert r.returncode == 0, r.stderr
    f = fields(r.stdout)
    man = manifest(out)
    assert f["recipe"] == "weights=int4:g64 acts=sq:8/4:b64:s0.875:static"
    assert abs(float(f["stated_bits_per_weight"]) - man["recipe"]["w_bits"]) < 0.0005
    ev = man["eval"]
    assert ev and ev["reference"] == tiny.name
    m = re.search(r"^eval: ppl ([\d.]+), reference ppl ([\d.]+), kl ([\d.]+), top1 ([\d.]+) on (\d+) "
                  r"self-generated tokens; reference (\S+) \(GGUF weights, FP32 activations\)$", r.stdout, re.M)
    assert m, r.stdout
    assert abs(float(m.group(1)) - ev["ppl"]) < 1e-3 and abs(float(m.group(2)) - ev["ppl_fp32"]) < 1e-3
    assert int(m.group(5)) == ev["tokens"] and m.group(6) == tiny.name
    # the parts add up to the tensors, the tensors to the layer total
    tensors = re.findall(r"^tensor: blk\.\d+\.(\w+)\.weight (\d+)x(\d+) (\d+) bytes", r.stdout, re.M)
    parts = re.findall(r"^part_bits_per_weight: (\w+) ([\d.]+) \((\d+) matrices, (\d+) bytes\)$", r.stdout, re.M)
    assert [p[0] for p in parts] == ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up",
                                     "ffn_down"], parts
    all_bytes = all_elems = 0
    for name, bits, n_mat, nbytes in parts:
        mine = [(int(n) * int(k), int(b)) for t, n, k, b in tensors if t == name]
        assert len(mine) == int(n_mat) == 2
        e, b = sum(x for x, _ in mine), sum(y for _, y in mine)
        assert b == int(nbytes) and abs(float(bits) - 8 * b / e) < 0.0005, (name, bits, b, e)
        all_bytes, all_elems = all_bytes + b, all_elems + e
    assert abs(float(f["layer_bits_per_weight"]) - 8 * all_bytes / all_elems) < 0.0005


def test_eval_tokens_zero_skips_the_check(tiny, tmp_path):
    out = tmp_path / "skip.sqm"
    r = run("convert", "-m", tiny, "-o", out, "--weights", "int8", "--eval-tokens", 0)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "accuracy check: not run (--eval-tokens 0)" in r.stderr
    assert not [w for w in phases(r.stderr) if w.startswith("accuracy")], r.stderr
    assert "eval vs FP32" not in r.stderr
    assert manifest(out)["eval"] is None
    info = run("inspect", "-m", out)
    assert info.returncode == 0, info.stderr
    assert fields(info.stdout)["eval"].startswith("none (no accuracy check was run"), info.stdout
    assert fields(info.stdout)["recipe"] == "weights=int8 acts=fp32"


@pytest.mark.parametrize("value,rc,msg", [
    (64, 1, "--eval-tokens 64: give 0 (no accuracy check) or at least 128"),
    (1, 1, "--eval-tokens 1: give 0"),
    (-1, 2, "--eval-tokens: '-1' is not an integer"),
    ("many", 2, "--eval-tokens: 'many' is not an integer"),
])
def test_bad_eval_tokens_are_refused(tiny, tmp_path, value, rc, msg):
    out = tmp_path / "bad.sqm"
    r = run("convert", "-m", tiny, "-o", out, "--weights", "int8", "--eval-tokens", value)
    errors = [l for l in r.stderr.splitlines() if l.startswith("error: ")]
    assert r.returncode == rc and len(errors) == 1 and msg in errors[0], r.stderr
    assert not out.exists()


def test_eval_tokens_is_convert_only(tiny):
    r = run("generate", "-m", tiny, "-p", "hi", "--eval-tokens", 0)
    assert r.returncode == 2 and "unknown option '--eval-tokens'" in r.stderr
