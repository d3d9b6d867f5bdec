#!/usr/bin/env python3
"""Why one-shot GPTQ lost to round-to-nearest on SmolLM2: held-out layer
error of the NumPy GPTQ (tests/reference/ref_gptq.py) against calibration
size, damping and act-order, on one layer (NumPy only, no sqserve code but
the tokenizer).

    .venv/bin/python tests/bench/gptq_heldout.py [LAYER]      (default 3)

Layer inputs from the NumPy reference forward pass (windows of 512 from an
empty cache): calibration on wikitext-2-valid (2048 or 4096 tokens),
held-out on the first 1024 tokens of wikitext-2-test. Prints the relative
output error ||XW^T - XQ^T|| / ||XW^T|| of int4 g64 RTN and GPTQ for the
q projection (576 inputs) and the down projection (1536 inputs). Minutes
on a 2-core machine.
"""
import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
from ref_llama import RefLlama, layer_inputs  # noqa: E402
import ref_gptq as G  # noqa: E402

MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
DATA = os.environ.get("ACCURACY_DATA", os.path.join(ROOT, "..", "shared", "data"))
BIN = os.environ.get("SQSERVE_BIN", os.path.join(ROOT, "build", "sqserve"))


def ids_of(path, n):
    txt = open(path, encoding="utf-8").read()[: n * 8]
    out = subprocess.run([BIN, "tokenize", "-m", MODEL, "--no-special"], input=txt, capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out)[:n]


def main():
    layer = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    model = RefLlama(MODEL)
    W = {"q": model.layers[layer]["wq"], "down": model.layers[layer]["w_down"]}
    model.layers = model.layers[: layer + 1]

    def inputs(ids):
        return layer_inputs(model, layer, ids, {"q": 0, "down": 6})

    cal = inputs(ids_of(os.path.join(DATA, "wikitext-2-valid.txt"), 4096))
    held = inputs(ids_of(os.path.join(DATA, "wikitext-2-test.txt"), 1024))
    print(f"layer {layer}, int4 g64, relative output error on held-out tokens (on the calibration tokens)")
    print("| matrix | method | calib tokens | damp | act-order | held-out | calibration |")
    print("|---|---|---|---|---|---|---|")
    for name in ("q", "down"):
        w, xc, xt = W[name], cal[name], held[name]
        print(f"| {name} | RTN | - | - | - | {G.out_err(xt, w, G.rtn(w, 4, 64)):.4f} | "
              f"{G.out_err(xc, w, G.rtn(w, 4, 64)):.4f} |")
        for n in (2048, 4096):
            for damp in (0.01, 0.1):
                for act in (False, True):
                    q = G.gptq(w, xc[:n], 4, 64, damp, act)
                    print(f"| {name} | GPTQ | {n} | {damp} | {'yes' if act else 'no'} | {G.out_err(xt, w, q):.4f} | "
                          f"{G.out_err(xc[:n], w, q):.4f} |", flush=True)


if __name__ == "__main__":
    main()
