#!/usr/bin/env python3
"""Why static SQ activations lose to dynamic ones on SmolLM2: the activation
error of each quantizer at the four matmul inputs of one layer (NumPy only,
no sqserve code but the tokenizer).

    .venv/bin/python tests/bench/static_acts_diag.py [LAYER ...]      (default 3 15)

Layer inputs from the NumPy reference forward pass of the FP32 model
(windows of 512 from an empty cache, no smoothing): the static masks from
2048 tokens of wikitext-2-valid, the errors on the first 1024 tokens of
wikitext-2-test. For every site it prints the relative output error
||X W^T - Q(X) W^T|| / ||X W^T|| with the site's weights unquantized (q/k/v
and gate/up side by side), so only the activation quantizer differs:

  A8, A4            one scale per token
  static            SQ 8/4 b64 s0.875, the paper's mask (8 channels of every
                    bank of 64 ranked by |mean(A_j) sum_i W_ij|), one scale per
                    token for the high part and one for the low part (what
                    `--acts sq:8/4:b64:s0.875:static` computes)
  static-max        the same with channels ranked by max |A_j|
  static, bank lo   the paper's mask, the low part scaled per token AND bank
                    of 64 (not a sqserve recipe: the diagnostic)
  dynamic           the 8 largest |x| of every bank high, per token

and two measures of how well a fixed mask can follow the outliers: the share
of a token's dynamic highs that the static mask holds, and how far the
token's largest low-part value stands above the median bank's (the factor by
which one bank's outlier coarsens the single low-part scale of the others).
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gptq_heldout import DATA, MODEL, ids_of  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "reference"))
from ref_llama import RefLlama, layer_inputs  # noqa: E402

BANK, HIGH, HI_BITS, LO_BITS = 64, 8, 8, 4
SITES = {"qkv": (0, ("wq", "wk", "wv")), "o": (3, ("wo",)), "gate_up": (4, ("w_gate", "w_up")),
         "down": (6, ("w_down",))}


def qmax(bits):
    return float((1 << (bits - 1)) - 1)


def fake(x, bits, where=None, axis_groups=None):
    """Symmetric round-to-nearest of x (tokens x dim) where `where` is True,
    one scale per token (or per token and group of columns)."""
    q = qmax(bits)
    m = np.ones_like(x, dtype=bool) if where is None else np.broadcast_to(where, x.shape)
    a = np.where(m, np.abs(x), 0.0)
    if axis_groups:
        t, d = x.shape
        mx = a.reshape(t, d // axis_groups, axis_groups).max(axis=2)
        s = np.repeat(mx, axis_groups, axis=1) / q
    else:
        s = a.max(axis=1, keepdims=True) / q
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(s > 0, np.clip(np.rint(x / s), -q, q) * s, 0.0)
    return np.where(m, r, x)


def bank_top(score, h=HIGH, b=BANK):
    """Mask of the h best-scored channels of every bank (score: dim or tokens x dim)."""
    s = np.atleast_2d(score)
    t, d = s.shape
    idx = np.argsort(-s.reshape(t, d // b, b), axis=2, kind="stable")[:, :, :h]
    m = np.zeros((t, d // b, b), dtype=bool)
    np.put_along_axis(m, idx, True, axis=2)
    return m.reshape(t, d) if score.ndim == 2 else m.reshape(d)


def sq(x, mask, bank_lo=False):
    hi = fake(x, HI_BITS, mask)
    return fake(hi, LO_BITS, ~mask, BANK if bank_lo else None)


def out_err(x, w, xq):
    y = x @ w.T
    return float(np.linalg.norm(y - xq @ w.T) / np.linalg.norm(y))


def inputs(model, layer, ids):
    got = layer_inputs(model, layer, ids, {k: j for k, (j, _) in SITES.items()})
    return {k: v.astype(np.float64) for k, v in got.items()}


def main():
    layers = [int(a) for a in sys.argv[1:]] or [3, 15]
    cal_ids = ids_of(os.path.join(DATA, "wikitext-2-valid.txt"), 2048)
    held_ids = ids_of(os.path.join(DATA, "wikitext-2-test.txt"), 1024)
    print("| layer | site | A8 | A4 | static | static-max | static, bank lo | dynamic | dynamic highs in the mask "
          "| low max / median bank's |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for layer in layers:
        model = RefLlama(MODEL)
        L = model.layers[layer]
        model.layers = model.layers[: layer + 1]
        cal, held = inputs(model, layer, cal_ids), inputs(model, layer, held_ids)
        for site, (_, names) in SITES.items():
            w = np.concatenate([np.asarray(L[n], dtype=np.float64) for n in names])
            xc, xt = cal[site], held[site]
            m_paper = bank_top(np.abs(xc.mean(axis=0) * w.sum(axis=0)))
            m_max = bank_top(np.abs(xc).max(axis=0))
            dyn = bank_top(np.abs(xt))
            cells = [fake(xt, 8), fake(xt, 4), sq(xt, m_paper), sq(xt, m_max), sq(xt, m_paper, bank_lo=True)]
            cells.append(fake(fake(xt, HI_BITS, dyn), LO_BITS, ~dyn))
            errs = [out_err(xt, w, c) for c in cells]
            held_share = float((dyn & m_paper).sum() / dyn.sum())
            lo = np.where(m_paper, 0.0, np.abs(xt)).reshape(len(xt), -1, BANK).max(axis=2)
            ratio = float(np.median(lo.max(axis=1) / np.maximum(np.median(lo, axis=1), 1e-30)))
            print(f"| {layer} | {site} | " + " | ".join(f"{e:.4f}" for e in errs)
                  + f" | {100 * held_share:.0f} % | {ratio:.1f} |", flush=True)


if __name__ == "__main__":
    main()
