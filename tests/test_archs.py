"""Architectures other than plain Llama: qwen2 (q/k/v biases, NeoX RoPE),
qwen3 (per-head q/k RMSNorm, NeoX RoPE) and a Mistral-style Llama with a
sliding attention window, on small random-weight GGUFs written at test time
with the `gguf` package (tests/arch_gguf.py).

sqserve's logits (build/tools/logits_tool: the CPU forward pass, in chunks
so that later rows read the paged KV cache) are compared with the
independent NumPy reference (tests/reference/ref_llama.py), which reads the
same file with the `gguf` package. Measured on the development machine:
max |difference| ~2.4e-6 on logits of magnitude ~6 (float32 summation
order); the tolerance is 1e-3. Negative controls show the comparison would
catch a wrong RoPE pairing or a missing window.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import arch_gguf
import gguf_craft as gc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "reference"))
from ref_llama import RefLlama, greedy  # noqa: E402

BIN = os.environ.get("SQSERVE_BIN", str(ROOT / "build" / "sqserve"))
TOOL = Path(BIN).resolve().parent / "tools" / "logits_tool"
TOL = 1e-3
WINDOW = 5

# seeds: fixed per model (a greedy path with a near tie would make the
# generate comparison meaningless; the test says so instead of passing)
MODELS = {
    "llama": dict(arch="llama", seed=0),
    "qwen2": dict(arch="qwen2", seed=1),
    "qwen2-tied": dict(arch="qwen2", tied=True, seed=2),
    "qwen3": dict(arch="qwen3", seed=3),
    # head_count x key_length (128) wider than the embedding (64), as in Qwen3-0.6B
    "qwen3-wide-q": dict(arch="qwen3", key_length=32, seed=5),
    "mistral-swa": dict(arch="llama", n_swa=WINDOW, seed=4),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("archs")
    return {name: arch_gguf.write(d / f"{name}.gguf", **kw) for name, kw in MODELS.items()}


def run(*args, **kw):
    return subprocess.run([BIN, *map(str, args)], capture_output=True, timeout=300, **kw)


def one_error_line(r):
    lines = [l for l in r.stderr.decode().splitlines() if l.startswith("error: ")]
    assert r.returncode == 1 and len(lines) == 1, r.stderr[-2000:]
    return lines[0]


def sqserve_logits(path, ids, chunk, tmp_path):
    if not TOOL.exists():
        pytest.skip("build/tools/logits_tool not built (make unit-bins)")
    out = tmp_path / "logits.f32"
    r = subprocess.run([str(TOOL), str(path), str(out), str(chunk), *map(str, ids)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return np.fromfile(out, np.float32).reshape(len(ids), -1)


def ref_logits(path, ids, **hp_override):
    m = RefLlama(str(path))
    for k, v in hp_override.items():
        setattr(m.hp, k, v)
    return m.forward(ids, m.new_cache(len(ids)), all_logits=True)


IDS = [int(x) for x in np.random.default_rng(7).integers(0, 256, 40)]


@pytest.mark.parametrize("chunk", [1, 7, 40])
@pytest.mark.parametrize("name", list(MODELS))
def test_logits_match_reference(models, tmp_path, name, chunk):
    got = sqserve_logits(models[name], IDS, chunk, tmp_path)
    want = ref_logits(models[name], IDS)
    err = float(np.abs(got - want).max())
    print(f"{name} chunk {chunk}: max |logit difference| {err:.2e} (max |logit| {np.abs(want).max():.2f})")
    assert err <= TOL


@pytest.mark.parametrize("name", ["qwen2", "qwen3"])
def test_rope_pairing_is_visible(models, tmp_path, name):
    """Control: with adjacent-pair RoPE the reference is far from sqserve."""
    got = sqserve_logits(models[name], IDS, 40, tmp_path)
    assert np.abs(got - ref_logits(models[name], IDS, rope_neox=False)).max() > 100 * TOL


def test_window_is_visible(models, tmp_path):
    """Control: without its window the reference differs from sqserve exactly
    from position WINDOW on (before it, every key is inside the window)."""
    got = sqserve_logits(models["mistral-swa"], IDS, 7, tmp_path)
    full = ref_logits(models["mistral-swa"], IDS, n_swa=0)
    assert np.abs(got[:WINDOW] - full[:WINDOW]).max() <= TOL
    assert np.abs(got[WINDOW:] - full[WINDOW:]).max(axis=1).min() > 10 * TOL


def test_inspect_names_the_architecture(models):
    want = {"llama": ("llama", "no", "no", "norm", "0"), "qwen2": ("qwen2", "yes", "no", "neox", "0"),
            "qwen3": ("qwen3", "no", "yes", "neox", "0"), "mistral-swa": ("llama", "no", "no", "norm", str(WINDOW)),
            "qwen3-wide-q": ("qwen3", "no", "yes", "neox", "0")}
    for name, fields in want.items():
        r = run("inspect", "-m", models[name])
        assert r.returncode == 0, r.stderr
        f = dict(re.findall(r"^(\w+): (.*)$", r.stdout.decode(), re.M))
        assert (f["architecture"], f["qkv_bias"], f["qk_norm"], f["rope"], f["sliding_window"]) == fields
        assert (f["q_dim"], f["head_dim"]) == (("128", "32") if name == "qwen3-wide-q" else ("64", "16"))


def piece_bytes(piece):
    inv = {c: b for b, c in gc.BYTE_CHAR.items()}
    return bytes(inv[c] for c in piece)


@pytest.mark.parametrize("name", ["qwen2", "qwen3", "qwen3-wide-q", "mistral-swa"])
def test_generate_follows_the_reference(models, name):
    """sqserve generate (greedy) prints the reference's greedy continuation."""
    n = 12
    r = run("tokenize", "-m", models[name], "-p", "hello world")
    assert r.returncode == 0
    prompt = [int(x) for x in re.findall(r"\d+", r.stdout.decode())]
    m = RefLlama(str(models[name]))
    ids, _, gaps = greedy(m, prompt, n)
    assert min(gaps) > 1e-2, "a near tie: pick another seed"
    tokens, types, _ = gc.tiny_vocab()
    assert all(types[i] == 1 for i in ids), "the path reaches a control token: pick another seed"
    want = b"".join(piece_bytes(tokens[i]) for i in ids).decode("utf-8", "replace")
    g = run("generate", "-m", models[name], "-p", "hello world", "-n", n, "--temp", 0, "--ignore-eos")
    assert g.returncode == 0, g.stderr
    assert f"generation: {n} tokens".encode() in g.stderr
    assert g.stdout.decode().rstrip("\n") == want


# relative logit error bound per weight recipe; measured on these models
# 0.006-0.007 (int8) and 0.066-0.088 (sq:8/4, mostly 4-bit codes), the same
# as on the plain Llama model
SQM_RECIPES = {"int8": 0.02, "sq:8/4:b64:s0.875": 0.15}


@pytest.mark.parametrize("recipe", list(SQM_RECIPES))
@pytest.mark.parametrize("name", ["qwen2", "qwen3", "qwen3-wide-q", "mistral-swa"])
def test_convert_to_sqm_loads_and_stays_close(models, tmp_path, name, recipe):
    """Quantized layer matrices; biases and norms stay FP32 (copied into the
    .sqm's GGUF). The .sqm's logits stay near the FP32 reference."""
    out = tmp_path / f"{name}.sqm"
    r = run("convert", "-m", models[name], "-o", out, "--weights", recipe, "--acts", "fp32")
    assert r.returncode == 0, r.stderr[-2000:]
    i = run("inspect", "-m", out)
    assert i.returncode == 0, i.stderr
    f = dict(re.findall(r"^(\w+): (.*)$", i.stdout.decode(), re.M))
    assert f["architecture"] == MODELS[name]["arch"] and f["sliding_window"] == str(MODELS[name].get("n_swa", 0))
    got = sqserve_logits(out, IDS, 7, tmp_path)
    want = ref_logits(models[name], IDS)
    rel = float(np.linalg.norm(got - want) / np.linalg.norm(want))
    print(f"{name} .sqm {recipe}: relative logit error {rel:.4f}")
    assert rel < SQM_RECIPES[recipe]
    g = run("generate", "-m", out, "-p", "hello world", "-n", 4, "--temp", 0)
    assert g.returncode == 0 and b"generation: 4 tokens" in g.stderr, g.stderr


def test_smoothing_with_a_wide_q(models, tmp_path):
    """SmoothQuant's o-projection scales span head_count x key_length
    channels (128 here, not the embedding's 64) and fold into W_v's rows:
    the smoothed int8 model still agrees with its FP32 self."""
    text = tmp_path / "t.txt"
    text.write_text("hello world the quick brown fox. " * 100)
    r = run("eval", "-m", models["qwen3-wide-q"], "--ppl", text, "--ctx", 256, "--max-tokens", 512, "--ref",
            "--weights", "int8:smooth", "--acts", "int8", "--calib-tokens", 256)
    assert r.returncode == 0, r.stderr[-2000:]
    f = dict(re.findall(r"^(\w+): (.*)$", r.stdout.decode(), re.M))
    assert "smoothed: " in r.stderr.decode() and float(f["top1"]) >= 0.9 and float(f["kl"]) < 0.05, f


def test_smoothing_with_qkv_biases_is_refused(models, tmp_path):
    r = run("convert", "-m", models["qwen2"], "-o", tmp_path / "x.sqm", "--weights", "int8:smooth", "--acts",
            "int8")
    assert "smoothing is not supported for architecture 'qwen2'" in one_error_line(r)


@pytest.mark.parametrize("arch", ["gemma", "phi3", "qwen2moe"])
def test_unsupported_architecture_is_refused_by_name(tmp_path, arch):
    bad = arch_gguf.write(tmp_path / "bad.gguf", arch="llama", arch_name=arch)
    msg = one_error_line(run("inspect", "-m", bad))
    assert f"architecture '{arch}' is not supported" in msg and "qwen3" in msg


@pytest.mark.parametrize("drop,what", [("blk.1.attn_k.bias", "qwen2"), ("blk.0.attn_q_norm.weight", "qwen3")])
def test_missing_architecture_tensor_is_refused(tmp_path, drop, what):
    p = arch_gguf.write(tmp_path / "m.gguf", arch=what, drop=(drop,))
    assert f"tensor '{drop}' is missing" in one_error_line(run("inspect", "-m", p))


def test_value_length_other_than_key_length_is_refused(tmp_path):
    p = arch_gguf.write(tmp_path / "m.gguf", arch="qwen3", key_length=32, value_length=16)
    assert "value_length 16 differs from key_length 32" in one_error_line(run("inspect", "-m", p))
