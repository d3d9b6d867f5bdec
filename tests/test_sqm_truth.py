"""What sqserve says about a quantized model is what the model is.

- Stored = stated: every recipe's .sqm holds its layer matrices in exactly
  the bits per weight the recipe states (manifest `w_bits`, `convert`'s
  line, `inspect`), codes packed (int4 two per byte, int2 four per byte).
- `eval --ref` never compares a model with itself: a .sqm needs
  `--ref-model` (same architecture and vocabulary), and the printed
  weights/acts/w_bits describe the model evaluated.
- The evaluation recorded in a .sqm names its reference.
Tiny crafted models keep each conversion to a second or two.
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

# (weights, acts): every weight kind and code width, with and without calibration
RECIPES = [
    ("int8", "int8"),
    ("int4:g64", "int8"),
    ("int4:g32", "fp32"),
    ("int3:g64", "int8"),   # 3-bit codes take 4-bit fields: stated 4.5, not 3.5
    ("int2:g64", "int8"),
    ("int8:g64:gptq", "int8"),
    ("sq:8/4:b64:s0.875", "int8"),
    ("sq:8/4:b64:s0.875", "fp32"),
    ("sq:8/2:b64:s0.875", "int8"),
    ("sq:4/2:b32:s0.75", "int8"),
    ("int4:g64", "sq:8/4:b64:s0.875:static"),
]


def run(*args, timeout=300):
    return subprocess.run([BIN, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def one_error_line(r):
    lines = [l for l in r.stderr.splitlines() if l.startswith("error: ")]
    assert r.returncode == 1 and len(lines) == 1, r.stderr[-2000:]
    return lines[0]


def fields(stdout):
    return dict(re.findall(r"^(\w+): (.*)$", stdout, re.M))


def sqm_parts(path):
    raw = Path(path).read_bytes()
    magic, version, size, _, json_off, json_len, gguf_off, gguf_len, data_off = struct.unpack("<4sIQQQQQQQ", raw[:64])
    return json.loads(raw[json_off:json_off + json_len]), raw, version, data_off


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    p = tmp_path_factory.mktemp("truth") / "tiny.gguf"
    gc.tiny_llama_file(dim=128, ffn=256, n_layer=2, seed=3).write(p)
    return p


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    p = tmp_path_factory.mktemp("text") / "text.txt"
    p.write_text(" ".join(["the quick brown fox jumps over the lazy dog"] * 200))
    return p


def convert(src, out, weights, acts):
    r = run("convert", "-m", src, "-o", out, "--weights", weights, "--acts", acts, "--calib-tokens", 128)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


@pytest.mark.parametrize("weights,acts", RECIPES, ids=[f"{w}-{a}" for w, a in RECIPES])
def test_stored_bits_are_the_stated_bits(tiny, tmp_path, weights, acts):
    out = tmp_path / "m.sqm"
    r = convert(tiny, out, weights, acts)
    man, raw, version, data_off = sqm_parts(out)
    stated = man["recipe"]["w_bits"]
    # the arrays of every layer matrix, as the manifest places them
    stored, elems, arrays = 0, 0, 0
    for t in man["tensors"]:
        elems += t["n"] * t["k"]
        for key, val in t.items():
            if isinstance(val, list) and len(val) == 2:
                stored += val[1]
                arrays += 1
    assert len(man["tensors"]) == 14
    bits = 8 * stored / elems
    assert abs(bits - stated) < 1e-9, f"stored {bits:.4f} bits/weight, stated {stated:.4f}"
    # and the file holds nothing more than those arrays (plus alignment and masks)
    masks = sum(m["mask"][1] for m in man["act_masks"])
    assert stored + masks <= len(raw) - data_off <= stored + masks + 64 * (arrays + len(man["act_masks"]))
    # every tool tells the same number
    said = re.search(r"weights \S+ \(([\d.]+) bits/weight\)", r.stderr.splitlines()[-1])
    assert said and abs(float(said.group(1)) - stated) < 0.005
    info = run("inspect", "-m", out)
    assert info.returncode == 0, info.stderr
    f = fields(info.stdout)
    assert abs(float(f["layer_bits_per_weight"]) - stated) < 0.0005
    assert abs(float(f["stated_bits_per_weight"]) - stated) < 0.0005
    per = re.findall(r"^tensor: (\S+) (\d+)x(\d+) (\d+) bytes ([\d.]+) bits/weight$", info.stdout, re.M)
    assert len(per) == 14
    by_name = {t["name"]: t for t in man["tensors"]}
    for name, n, k, nbytes, b in per:
        t = by_name[name]
        want = sum(v[1] for v in t.values() if isinstance(v, list) and len(v) == 2)
        assert int(nbytes) == want and abs(float(b) - 8 * want / (int(n) * int(k))) < 0.0005


def test_int4_codes_are_packed_two_per_byte(tiny, tmp_path):
    out = tmp_path / "w4.sqm"
    convert(tiny, out, "int4:g64", "int8")
    man, _, version, _ = sqm_parts(out)
    assert version == 2
    t = man["tensors"][0]
    assert t["code_bits"] == 4 and t["codes"][1] == t["n"] * t["k"] // 2


def test_packed_codes_load_to_the_same_model(tiny, tmp_path, text):
    """Packing loses nothing: the .sqm evaluates exactly as converting at load."""
    for weights in ("int4:g64", "int2:g64", "int8"):
        out = tmp_path / f"{weights.replace(':', '_')}.sqm"
        convert(tiny, out, weights, "int8")
        a = fields(run("eval", "-m", out, "--ppl", text, "--ctx", 64, "--max-tokens", 256).stdout)
        b = fields(run("eval", "-m", tiny, "--ppl", text, "--ctx", 64, "--max-tokens", 256,
                       "--weights", weights, "--acts", "int8").stdout)
        assert a["ppl"] == b["ppl"], (weights, a, b)
        assert (a["weights"], a["acts"]) == (weights, "int8") and a["w_bits"] == b["w_bits"]


def test_old_format_version_is_refused_with_advice(tiny, tmp_path):
    out = tmp_path / "m.sqm"
    convert(tiny, out, "int8", "int8")
    raw = bytearray(out.read_bytes())
    raw[4:8] = struct.pack("<I", 1)
    old = tmp_path / "old.sqm"
    old.write_bytes(bytes(raw))
    line = one_error_line(run("inspect", "-m", old))
    assert "version 1" in line and "re-run sqserve convert" in line


def test_eval_ref_on_a_sqm_needs_the_original(tiny, tmp_path, text):
    out = tmp_path / "m.sqm"
    convert(tiny, out, "int4:g64", "int8")
    line = one_error_line(run("eval", "-m", out, "--ppl", text, "--ctx", 64, "--ref"))
    assert "--ref-model" in line
    # the model itself as its reference is refused too
    line = one_error_line(run("eval", "-m", out, "--ppl", text, "--ctx", 64, "--ref", "--ref-model", out))
    assert "itself" in line
    # with the original: the printed fields describe the .sqm, and they differ
    r = run("eval", "-m", out, "--ppl", text, "--ctx", 64, "--max-tokens", 256, "--ref", "--ref-model", tiny)
    assert r.returncode == 0, r.stderr[-2000:]
    f = fields(r.stdout)
    assert (f["weights"], f["acts"], f["w_bits"]) == ("int4:g64", "int8", "4.500")
    assert f["ref_model"] == str(tiny) and (f["ref_weights"], f["ref_acts"]) == ("gguf", "fp32")
    assert float(f["kl"]) > 0 and f["ppl"] != f["ppl_ref"]


def test_eval_ref_of_a_plain_gguf(tiny, text):
    # on its FP32 path (--exact-fp32) a GGUF compared with itself says nothing
    line = one_error_line(run("eval", "-m", tiny, "--ppl", text, "--ctx", 64, "--ref", "--exact-fp32"))
    assert "--weights" in line and "--ref-model" in line
    # on the integer kernels (8-bit block activations) its reference is its own FP32 path
    r = run("eval", "-m", tiny, "--ppl", text, "--ctx", 64, "--max-tokens", 256, "--ref", "--int-acts")
    assert r.returncode == 0, r.stderr[-2000:]
    f = fields(r.stdout)
    assert (f["weights"], f["acts"]) == ("gguf", "q8-block")
    assert f["ref_model"] == str(tiny) and (f["ref_weights"], f["ref_acts"]) == ("gguf", "fp32")
    assert float(f["kl"]) > 0 and f["ppl"] != f["ppl_ref"]


def test_ref_model_must_share_architecture_and_vocabulary(tiny, tmp_path, text):
    other = tmp_path / "other.gguf"
    gc.tiny_llama_file(dim=128, ffn=256, n_layer=3, seed=3).write(other)
    line = one_error_line(run("eval", "-m", tiny, "--ppl", text, "--ctx", 64, "--ref", "--ref-model", other,
                              "--weights", "int8"))
    assert "cannot be the reference" in line and "architecture" in line
    vocab = tmp_path / "vocab.gguf"
    g = gc.tiny_llama_file(dim=128, ffn=256, n_layer=2, seed=3)
    g.kv("tokenizer.ggml.tokens").value.items[-1] = "zzzq"  # one token spelled differently
    g.write(vocab)
    line = one_error_line(run("eval", "-m", tiny, "--ppl", text, "--ctx", 64, "--ref", "--ref-model", vocab,
                              "--weights", "int8"))
    assert "vocabulary" in line


def test_ref_model_without_ref_is_an_error(tiny, text):
    line = one_error_line(run("eval", "-m", tiny, "--ppl", text, "--ctx", 64, "--ref-model", tiny))
    assert "--ref" in line


def test_plain_eval_says_what_it_evaluated(tiny, text):
    f = fields(run("eval", "-m", tiny, "--ppl", text, "--ctx", 64, "--max-tokens", 128, "--int-acts").stdout)
    assert (f["weights"], f["acts"]) == ("gguf", "q8-block") and float(f["w_bits"]) > 0
    f = fields(run("eval", "-m", tiny, "--ppl", text, "--ctx", 64, "--max-tokens", 128, "--exact-fp32").stdout)
    assert (f["weights"], f["acts"]) == ("gguf", "fp32") and float(f["w_bits"]) > 0


def test_recorded_eval_names_its_reference(tiny, tmp_path):
    out = tmp_path / "m.sqm"
    convert(tiny, out, "int8", "int8")
    man, *_ = sqm_parts(out)
    assert man["eval"]["reference"] == tiny.name
    line = [l for l in run("inspect", "-m", out).stdout.splitlines() if l.startswith("eval:")]
    assert line and tiny.name in line[0] and "FP32 activations" in line[0]
