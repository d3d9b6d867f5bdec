"""sqserve's GPTQ against an independent NumPy GPTQ on real SmolLM2 layers.

The NumPy side (tests/reference/ref_gptq.py) is written from the GPTQ
paper; the layer inputs come from the NumPy reference forward pass
(tests/reference/ref_llama.py), so nothing here shares code with the C
engine except the token ids. For layer 1's q projection (576 inputs) and
down projection (1536 inputs), int4 groups of 64, with and without
act-order, the C quantizer (build/tools/gptq_tool: gptq_prepare_ordered +
uq_quantize_perm, as quant_apply calls them) and the NumPy one must give
the same relative layer output error ||XW^T - XQ^T|| / ||XW^T||:

- on the calibration tokens (what GPTQ minimises) and on held-out tokens
  (WikiText-2 test, not used to calibrate) within 1 % of each other;
- on the calibration tokens both at most 0.8x round-to-nearest's error.

Measured on the development machine: the two agree to 5 digits (float32
C arithmetic against float64 NumPy flips a few roundings at most); the 1 %
tolerance leaves room for other BLAS builds, while a wrong error update,
Cholesky factor, group scale or permutation moves the C error by far more.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "reference"))
BIN = os.environ.get("SQSERVE_BIN", str(ROOT / "build" / "sqserve"))
TOOL = Path(BIN).resolve().parent / "tools" / "gptq_tool"
MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
DATA = Path(os.environ.get("SQSERVE_DATA", ROOT.parent / "shared" / "data"))
LAYER = 1

pytestmark = pytest.mark.skipif(not MODEL.exists() or not (DATA / "wikitext-2-valid.txt").exists(),
                                reason="default model or WikiText-2 not available")


def token_ids(path, n):
    text = path.read_text(encoding="utf-8")[: n * 8]
    r = subprocess.run([BIN, "tokenize", "-m", str(MODEL), "--no-special"], input=text,
                       capture_output=True, text=True, check=True)
    ids = json.loads(r.stdout)
    assert len(ids) >= n
    return ids[:n]


@pytest.fixture(scope="module")
def layer_inputs():
    """Layer LAYER's q-projection and down-projection inputs (windows of 512
    from an empty cache), calibration and held-out."""
    from ref_llama import RefLlama, layer_inputs as capture
    model = RefLlama(str(MODEL))
    W = {"q": model.layers[LAYER]["wq"], "down": model.layers[LAYER]["w_down"]}
    model.layers = model.layers[: LAYER + 1]  # nothing past the layer is needed

    def inputs(ids):
        return capture(model, LAYER, ids, {"q": 0, "down": 6})

    cal = inputs(token_ids(DATA / "wikitext-2-valid.txt", 2048))
    held = inputs(token_ids(DATA / "wikitext-2-test.txt", 1024))
    return W, cal, held


def c_gptq(tmp_path, W, X, bits, group, damp, act):
    w, x, out = tmp_path / "w.f32", tmp_path / "x.f32", tmp_path / "q.f32"
    np.ascontiguousarray(W, np.float32).tofile(w)
    np.ascontiguousarray(X, np.float32).tofile(x)
    n, k = W.shape
    r = subprocess.run([str(TOOL), w, x, str(n), str(k), str(len(X)), str(bits), str(group), str(damp),
                        str(int(act)), out], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return np.fromfile(out, np.float32).reshape(n, k)


@pytest.mark.parametrize("act", [False, True], ids=["in-order", "act-order"])
@pytest.mark.parametrize("which", ["q", "down"])
def test_c_gptq_matches_numpy_gptq(layer_inputs, tmp_path, which, act):
    import ref_gptq as G
    if not TOOL.exists():
        pytest.skip("build/tools/gptq_tool not built (make unit-bins)")
    W, cal, held = layer_inputs
    W, Xc, Xt = W[which], cal[which], held[which]
    damp = 0.1
    q_np = G.gptq(W, Xc, 4, 64, damp, act)
    q_c = c_gptq(tmp_path, W, Xc, 4, 64, damp, act)
    q_rtn = G.rtn(W, 4, 64)
    e = {name: (G.out_err(Xc, W, q), G.out_err(Xt, W, q)) for name, q in
         (("numpy", q_np), ("c", q_c), ("rtn", q_rtn))}
    print(f"layer {LAYER} {which} act-order={act}: relative output error (calibration, held-out) "
          + ", ".join(f"{k} {a:.5f} {b:.5f}" for k, (a, b) in e.items()))
    assert abs(e["c"][0] - e["numpy"][0]) <= 0.01 * e["numpy"][0]
    assert abs(e["c"][1] - e["numpy"][1]) <= 0.01 * e["numpy"][1]
    assert e["c"][0] <= 0.8 * e["rtn"][0] and e["numpy"][0] <= 0.8 * e["rtn"][0]
