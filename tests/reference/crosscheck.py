#!/usr/bin/env python3
"""Measure how much the reference numbers can move, to choose test tolerances.

usage: crosscheck.py MODEL.gguf [--fixtures tests/fixtures] [--out FILE.json]
                     [--ppl-windows 2] [--no-llama-cpp]

Reports (JSON on stdout, and to --out):
  float32_vs_float64   the fixture's float32 reference vs the same code in
                       float64, along every generate.json greedy path (one
                       batch) and on the first --ppl-windows ppl windows
  batched_vs_incremental  float32 batch forward vs the fixture's incremental
                       (KV cache, one token at a time) top-5 logprobs
  llama_cpp            (if llama-cpp-python is importable) final hidden state
                       relative error of llama.cpp vs the reference, vs the
                       reference with llama.cpp-style activation rounding
                       (emulate_llama_cpp), and that emulation vs the plain
                       reference (the "noise floor" of 8-bit activations)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))

import gguf  # noqa: E402
from ref_llama import RefLlama, log_softmax64  # noqa: E402
from ref_tokenizer import RefTokenizer  # noqa: E402


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def path_logits(model, prompt_ids, greedy_ids):
    seq = list(prompt_ids) + list(greedy_ids[:-1])
    cache = model.new_cache(len(seq))
    L = model.forward(seq, cache, all_logits=True)
    return L[len(prompt_ids) - 1:]


def final_hidden(model, ids):
    cap = {}
    orig = model._mm

    def mm(x, w, t):
        if w is model.output:
            cap["h"] = x.copy()
        return orig(x, w, t)

    model._mm = mm
    try:
        model.forward(ids, model.new_cache(len(ids)), all_logits=True)
    finally:
        model._mm = orig
    return cap["h"]


def rel_rows(a, b):
    return [float(np.linalg.norm(a[i] - b[i]) / np.linalg.norm(b[i])) for i in range(len(a))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--fixtures", default=os.path.join(REPO, "tests", "fixtures"))
    ap.add_argument("--out", default=None)
    ap.add_argument("--ppl-windows", type=int, default=2)
    ap.add_argument("--no-llama-cpp", action="store_true")
    args = ap.parse_args()

    reader = gguf.GGUFReader(args.model)
    tok = RefTokenizer(args.model, reader=reader)
    m32 = RefLlama(args.model, reader=reader)
    m64 = RefLlama(args.model, dtype=np.float64, reader=reader)
    gen = json.load(open(os.path.join(args.fixtures, "generate.json")))
    res = {"float32_vs_float64": {"generate": {}}, "batched_vs_incremental": {}}

    for p in gen["prompts"]:
        L32 = path_logits(m32, p["prompt_ids"], p["greedy_ids"])
        L64 = path_logits(m64, p["prompt_ids"], p["greedy_ids"])
        lp32, lp64 = log_softmax64(L32), log_softmax64(L64)
        ids = np.array(p["greedy_ids"])
        top_ids = np.array([[i for i, _ in t] for t in p["top5"]])
        fix_lp = np.array([[lp for _, lp in t] for t in p["top5"]])
        rows = np.arange(len(ids))[:, None]
        res["float32_vs_float64"]["generate"][p["name"]] = {
            "max_abs_logit": float(np.max(np.abs(L32.astype(np.float64) - L64))),
            "max_abs_top5_logprob": float(np.max(np.abs(lp32[rows, top_ids] - lp64[rows, top_ids]))),
            "argmax_agree": int(np.sum(np.argmax(L64, axis=-1) == ids)),
            "n_steps": int(len(ids)),
        }
        res["batched_vs_incremental"][p["name"]] = {
            "max_abs_top5_logprob": float(np.max(np.abs(lp32[rows, top_ids] - fix_lp))),
            "argmax_agree": int(np.sum(np.argmax(L32, axis=-1) == ids)),
        }
        log(p["name"], res["float32_vs_float64"]["generate"][p["name"]],
            res["batched_vs_incremental"][p["name"]])

    ppl_path = os.path.join(args.fixtures, "ppl.json")
    if os.path.exists(ppl_path) and args.ppl_windows > 0:
        pj = json.load(open(ppl_path))
        data = open(os.path.join(REPO, pj["file"]), "rb").read()
        ids = tok.encode_bytes(data)[:pj["max_tokens"]]
        ctx = pj["ctx"]
        w32, w64 = [], []
        for w in range(args.ppl_windows):
            win = ids[w * ctx:(w + 1) * ctx]
            for m, acc in ((m32, w32), (m64, w64)):
                L = m.forward(win, m.new_cache(ctx), all_logits=True)
                lp = log_softmax64(L[:-1])
                acc.append(-float(np.sum(lp[np.arange(ctx - 1), win[1:]])))
        n = args.ppl_windows * (ctx - 1)
        res["float32_vs_float64"]["ppl_prefix"] = {
            "windows": args.ppl_windows,
            "fixture_window_nll": pj["window_nll"][:args.ppl_windows],
            "rerun_float32_window_nll": w32,
            "float64_window_nll": w64,
            "ppl_float32": math.exp(sum(w32) / n),
            "ppl_float64": math.exp(sum(w64) / n),
            "rel_ppl_diff": abs(math.exp(sum(w32) / n) / math.exp(sum(w64) / n) - 1),
        }
        log("ppl prefix", res["float32_vs_float64"]["ppl_prefix"])

    if not args.no_llama_cpp:
        try:
            import llama_cpp
            from llama_cpp import Llama
        except Exception as e:
            log(f"no llama-cpp-python ({e})")
        else:
            memu = RefLlama(args.model, reader=reader, emulate_llama_cpp=True)
            lc = Llama(model_path=args.model, n_ctx=512, n_batch=512, embedding=True,
                       pooling_type=llama_cpp.LLAMA_POOLING_TYPE_NONE, verbose=False,
                       n_threads=os.cpu_count() or 2)
            n_embd = m32.hp.n_embd
            out = {}
            for p in gen["prompts"]:
                ids = list(p["prompt_ids"]) + list(p["greedy_ids"][:16])
                lc.reset()
                lc.eval(ids)
                E = np.array([np.ctypeslib.as_array(
                    llama_cpp.llama_get_embeddings_ith(lc._ctx.ctx, i), shape=(n_embd,)).copy()
                    for i in range(len(ids))])
                H32 = final_hidden(m32, ids)
                Hemu = final_hidden(memu, ids)
                r_plain, r_emu, r_floor = rel_rows(H32, E), rel_rows(Hemu, E), rel_rows(Hemu, H32)
                out[p["name"]] = {
                    "n_positions": len(ids),
                    "pos0_rel_llama_cpp_vs_ref": r_plain[0],
                    "pos0_rel_llama_cpp_vs_ref_emulated": r_emu[0],
                    "median_rel_llama_cpp_vs_ref": float(np.median(r_plain)),
                    "median_rel_llama_cpp_vs_ref_emulated": float(np.median(r_emu)),
                    "median_rel_emulated_vs_ref": float(np.median(r_floor)),
                    "max_rel_llama_cpp_vs_ref": float(np.max(r_plain)),
                    "max_rel_emulated_vs_ref": float(np.max(r_floor)),
                }
                log(p["name"], out[p["name"]])
            res["llama_cpp"] = {"final_hidden_state_relative_error": out,
                                "note": "relative L2 error of the final normed hidden state "
                                        "(input of the output matmul), per position"}
    js = json.dumps(res, indent=1)
    print(js)
    if args.out:
        with open(args.out, "w") as f:
            f.write(js + "\n")


if __name__ == "__main__":
    main()
