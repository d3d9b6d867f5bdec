#!/usr/bin/env python3
"""Generate sqserve's golden fixtures from the independent Python references.

usage: make_fixtures.py MODEL.gguf [--out tests/fixtures]
                        [--only tokenizer,dequant,generate,ppl]
                        [--wikitext ../shared/data/wikitext-2-test.txt]
                        [--no-llama-cpp]

Writes (under --out):
  tokenizer.json         reference tokenizer cases (ref_tokenizer.py)
  dequant/<TYPE>.bin/.f32  raw GGUF blocks and gguf.quants.dequantize output
  generate.json          greedy continuations + top-5 logprobs (ref_llama.py)
  ppl.json               wikitext-2 perplexity (ref_llama.py)

If llama-cpp-python is importable (and --no-llama-cpp is not given), every
fixture also records a llama.cpp cross-check next to (never instead of) the
reference values.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))

import gguf  # noqa: E402
from gguf import GGMLQuantizationType  # noqa: E402
from gguf.quants import dequantize  # noqa: E402

from ref_tokenizer import RefTokenizer  # noqa: E402
import tok_cases  # noqa: E402

PARTS = ("tokenizer", "dequant", "generate", "ppl")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")
    os.replace(tmp, path)
    log(f"wrote {path} ({os.path.getsize(path)} bytes)")


def versions() -> dict:
    import importlib.metadata as md
    out = {"python": sys.version.split()[0]}
    for p in ("numpy", "gguf", "tokenizers", "jinja2", "llama-cpp-python"):
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            pass
    return out


_LLAMA_CPP = {}


def llama_cpp_model(model_path: str, n_ctx: int, vocab_only: bool = False):
    """A cached llama_cpp.Llama, or None when llama-cpp-python is unavailable."""
    key = (n_ctx, vocab_only)
    if key in _LLAMA_CPP:
        return _LLAMA_CPP[key]
    try:
        import llama_cpp  # noqa: F401
        from llama_cpp import Llama
    except Exception as e:  # pragma: no cover - optional dependency
        log(f"llama-cpp-python unavailable ({e}); skipping cross-check")
        _LLAMA_CPP[key] = None
        return None
    kw = dict(model_path=model_path, verbose=False)
    if vocab_only:
        kw["vocab_only"] = True
    else:
        kw.update(n_ctx=n_ctx, n_batch=512, n_ubatch=512, logits_all=True,
                  n_threads=os.cpu_count() or 2, seed=0)
    _LLAMA_CPP[key] = Llama(**kw)
    return _LLAMA_CPP[key]


def llama_cpp_available() -> bool:
    try:
        import llama_cpp  # noqa: F401
        return True
    except Exception as e:
        log(f"llama-cpp-python unavailable ({e}); skipping cross-check")
        return False


_LC_WORKER = r"""
import sys, json
from llama_cpp import Llama
model, path, start = sys.argv[1], sys.argv[2], int(sys.argv[3])
items = json.load(open(path))
l = Llama(model_path=model, vocab_only=True, verbose=False)
for i in range(start, len(items)):
    print("BEGIN", i, flush=True)
    ids = l.tokenize(bytes.fromhex(items[i]), add_bos=False, special=True)
    print("IDS", i, json.dumps(list(ids)), flush=True)
"""


def llama_cpp_tokenize_isolated(model_path: str, inputs):
    """Tokenize each input with llama.cpp in a child process; llama.cpp aborts
    the whole process on some invalid UTF-8 (uncaught C++ exception), so a
    crash is recorded for that input and a new child resumes after it."""
    import subprocess
    import tempfile
    res = [None] * len(inputs)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump([b.hex() for b in inputs], f)
        path = f.name
    try:
        start = 0
        while start < len(inputs):
            p = subprocess.run([sys.executable, "-c", _LC_WORKER, model_path, path, str(start)],
                               capture_output=True, text=True)
            cur = None
            for line in p.stdout.splitlines():
                if line.startswith("BEGIN "):
                    cur = int(line.split()[1])
                elif line.startswith("IDS "):
                    _, i, js = line.split(" ", 2)
                    res[int(i)] = json.loads(js)
                    cur = None
            if p.returncode == 0 and cur is None:
                break
            if cur is None:
                raise RuntimeError(f"llama.cpp worker failed: {p.stderr[-2000:]}")
            what = [ln for ln in p.stderr.splitlines() if "what()" in ln]
            res[cur] = "crash: " + (what[-1].strip() if what else f"exit {p.returncode}")
            start = cur + 1
    finally:
        os.unlink(path)
    return res


# ---------------------------------------------------------------------------
# a. tokenizer
# ---------------------------------------------------------------------------
def make_tokenizer(args, tok: RefTokenizer, meta: dict) -> None:
    cases = tok_cases.all_cases()
    lc_ok = (not args.no_llama_cpp) and llama_cpp_available()
    out_cases, disagreements = [], []
    for name, data in cases:
        try:
            data.decode("utf-8")
            valid = True
        except UnicodeDecodeError:
            valid = False
        ids = tok.encode_bytes(data)
        # round trip: decoding gives back the (U+FFFD-repaired) text, minus the
        # bytes that have no byte-level token in the vocab (BPE drops them)
        repaired_b = data.decode("utf-8", errors="replace").encode("utf-8")
        expect = bytes(b for b in repaired_b if b not in tok.missing_bytes)
        assert tok.decode_bytes(ids) == expect, name
        out_cases.append({"name": name, "hex": data.hex(), "ids": ids, "valid_utf8": valid})
    if lc_ok:
        repaired = [bytes.fromhex(c["hex"]).decode("utf-8", "replace").encode("utf-8")
                    for c in out_cases]
        lc_rep = llama_cpp_tokenize_isolated(args.model, repaired)
        invalid_idx = [i for i, c in enumerate(out_cases) if not c["valid_utf8"]]
        lc_raw = dict(zip(invalid_idx, llama_cpp_tokenize_isolated(
            args.model, [bytes.fromhex(out_cases[i]["hex"]) for i in invalid_idx])))
        for i, c in enumerate(out_cases):
            entry = None
            if lc_rep[i] != c["ids"]:
                entry = {"name": c["name"], "hex": c["hex"], "hf_ids": c["ids"],
                         "llama_cpp_ids": lc_rep[i]}
            if i in lc_raw and lc_raw[i] != c["ids"]:
                entry = entry or {"name": c["name"], "hex": c["hex"], "hf_ids": c["ids"]}
                entry["llama_cpp_ids_raw_bytes"] = lc_raw[i]
            if entry:
                disagreements.append(entry)
    n_invalid = sum(1 for c in out_cases if not c["valid_utf8"])
    log(f"tokenizer: {len(out_cases)} cases, {n_invalid} invalid UTF-8")
    obj = {
        "model_sha256": meta["model_sha256"],
        "reference": ("HF tokenizers " + meta["versions"].get("tokenizers", "?") +
                      " byte-level BPE built from the GGUF's tokenizer.ggml.tokens/merges; "
                      "pre_tokenizer Sequence[Digits(individual_digits=True), "
                      "ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)]; "
                      "token_type==3 tokens are special added tokens (recognised in text); "
                      "add_special_tokens=False (no BOS); input bytes are decoded with "
                      "bytes.decode('utf-8', 'replace') (one U+FFFD per maximal subpart) "
                      "before encoding. See tests/reference/ref_tokenizer.py."),
        "versions": meta["versions"],
        "cases": out_cases,
    }
    if lc_ok:
        obj["llama_cpp_cross_check"] = {
            "compared": len(out_cases),
            "method": ("Llama(vocab_only=True).tokenize(b, add_bos=False, special=True) on the "
                       "U+FFFD-repaired UTF-8 of every case ('llama_cpp_ids'), and for invalid "
                       "UTF-8 cases also on the raw bytes ('llama_cpp_ids_raw_bytes'; "
                       "'crash: ...' = llama.cpp aborted the process)"),
            "n_disagree": len(disagreements),
            "disagreements": disagreements,
            "note": "HF ids above are the truth; llama.cpp ids are informational only.",
        }
        log(f"tokenizer: llama.cpp disagrees on {len(disagreements)} case(s)")
    write_json(os.path.join(args.out, "tokenizer.json"), obj)


# ---------------------------------------------------------------------------
# b. dequant
# ---------------------------------------------------------------------------
DEQ_TYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"]
# byte offsets of fp16 scale fields inside one block
F16_FIELDS = {
    "Q8_0": [0], "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2],
    "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208],
}
N_BLOCKS = {"Q8_0": 8, "Q4_0": 8, "Q4_1": 8, "Q5_0": 8, "Q5_1": 8,
            "Q4_K": 4, "Q5_K": 4, "Q6_K": 4}
N_PLAIN = 288  # elements for F32/F16/BF16


def _scale_values(rng: np.random.Generator, n: int) -> np.ndarray:
    """Finite, moderate fp16 scales: magnitudes in [2^-10, 2), both signs,
    plus a couple of exact values (0, 1, -0.5) at fixed positions."""
    mag = np.exp2(rng.uniform(-10.0, 1.0, size=n))
    sign = np.where(rng.random(n) < 0.35, -1.0, 1.0)
    v = (mag * sign).astype(np.float16)
    fixed = [1.0, -0.5, 0.0, 0.25]
    for i, f in enumerate(fixed[:n]):
        v[(i * 5 + 1) % n] = f
    return v


def make_dequant(args) -> None:
    outdir = os.path.join(args.out, "dequant")
    os.makedirs(outdir, exist_ok=True)
    summary = {}
    for ti, name in enumerate(DEQ_TYPES):
        qt = GGMLQuantizationType[name]
        rng = np.random.default_rng(1000 + ti)
        if name == "F32":
            vals = (rng.standard_normal(N_PLAIN) * np.exp2(rng.integers(-8, 8, N_PLAIN))).astype(np.float32)
            special = np.array([0.0, -0.0, 1.0, -1.0, 1e-45, -1e-45, 1.17549435e-38,
                                5.877472e-39, 3.4028235e38, -3.4028235e38, 65504.0,
                                1e30, -1e-30, 0.1, 1.0 / 3.0, 123456.789], dtype=np.float32)
            vals[:len(special)] = special
            raw = vals.view(np.uint8)
        elif name == "F16":
            bits = rng.integers(0, 1 << 16, N_PLAIN, dtype=np.uint32).astype(np.uint16)
            expo = (bits >> 10) & 0x1F
            bits = np.where(expo == 0x1F, bits & np.uint16(0xBFFF), bits).astype(np.uint16)  # no Inf/NaN
            special = np.array([0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x83FF, 0x0400,
                                0x7BFF, 0xFBFF, 0x3C00, 0xBC00, 0x3555, 0x7800, 0x0200],
                               dtype=np.uint16)
            bits[:len(special)] = special
            raw = bits.view(np.uint8)
        elif name == "BF16":
            bits = rng.integers(0, 1 << 16, N_PLAIN, dtype=np.uint32).astype(np.uint16)
            expo = (bits >> 7) & 0xFF
            bits = np.where(expo == 0xFF, bits & np.uint16(0xBFFF), bits).astype(np.uint16)
            special = np.array([0x0000, 0x8000, 0x0001, 0x8001, 0x007F, 0x807F, 0x0080,
                                0x7F7F, 0xFF7F, 0x3F80, 0xBF80, 0x3EAB, 0x4780, 0x0040],
                               dtype=np.uint16)
            bits[:len(special)] = special
            raw = bits.view(np.uint8)
        else:
            block, tsize = gguf.GGML_QUANT_SIZES[qt]
            nb = N_BLOCKS[name]
            raw = rng.integers(0, 256, (nb, tsize), dtype=np.uint16).astype(np.uint8)
            fields = F16_FIELDS[name]
            sc = _scale_values(rng, nb * len(fields)).reshape(nb, len(fields))
            for b in range(nb):
                for j, off in enumerate(fields):
                    raw[b, off:off + 2] = np.frombuffer(sc[b, j].tobytes(), np.uint8)
            if name == "Q6_K":
                # keep the int8 sub-block scales as random bytes (include -128)
                raw[0, 192] = 0x80
            raw = raw.reshape(-1)
        raw = np.ascontiguousarray(raw, dtype=np.uint8)
        vals = dequantize(raw, qt).astype(np.float32).reshape(-1)
        assert np.all(np.isfinite(vals)), name
        with open(os.path.join(outdir, name + ".bin"), "wb") as f:
            f.write(raw.tobytes())
        with open(os.path.join(outdir, name + ".f32"), "wb") as f:
            f.write(vals.astype("<f4").tobytes())
        summary[name] = {"bytes": int(raw.size), "elements": int(vals.size)}
        log(f"dequant {name}: {raw.size} bytes -> {vals.size} floats")
    write_json(os.path.join(outdir, "index.json"), {
        "reference": "gguf.quants.dequantize (gguf " + versions().get("gguf", "?") + ")",
        "types": summary,
    })


# ---------------------------------------------------------------------------
# c. generate
# ---------------------------------------------------------------------------
PROMPTS = [
    {"name": "chat_capital", "chat": True,
     "messages": [{"role": "user", "content": "What is the capital of France?"}]},
    {"name": "chat_colors", "chat": True,
     "messages": [{"role": "system", "content": "You are a terse assistant."},
                  {"role": "user", "content": "List three primary colors."}]},
    {"name": "fox", "chat": False, "text": "The quick brown fox"},
    {"name": "fibonacci", "chat": False, "text": "def fibonacci(n):"},
    {"name": "moon_1969", "chat": False, "text": "In 1969, the first humans"},
    {"name": "once_upon", "chat": False, "text": "Once upon a time, in a small village,"},
]
N_STEPS = 64


def render_chat(template: str, messages, add_generation_prompt=True, bos="", eos="") -> str:
    # same environment options as HF transformers' apply_chat_template
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=messages,
                                            add_generation_prompt=add_generation_prompt,
                                            bos_token=bos, eos_token=eos)


def make_generate(args, tok: RefTokenizer, meta: dict, model) -> None:
    from ref_llama import greedy, log_softmax64
    reader = model.reader
    template = reader.fields["tokenizer.chat_template"].contents()
    bos = tok.tokens[tok.bos_id]
    eos = tok.tokens[tok.eos_id]
    lc = None if args.no_llama_cpp else llama_cpp_model(args.model, 512)
    prompts = []
    for p in PROMPTS:
        if p["chat"]:
            text = render_chat(template, p["messages"], True, bos, eos)
        else:
            text = p["text"]
        ids = tok.encode_text(text)
        t0 = time.time()
        out, tops, gaps = greedy(model, ids, N_STEPS)
        dt = time.time() - t0
        entry = {"name": p["name"], "chat": p["chat"], "text": text}
        if p["chat"]:
            entry["messages"] = p["messages"]
        entry.update({
            "prompt_ids": ids,
            "greedy_ids": out,
            "top5": [[[i, lp] for i, lp in t] for t in tops],
            "greedy_text": tok.decode(out),
            "top2_gaps": gaps,
            "min_top2_gap": min(gaps),
        })
        log(f"generate {p['name']}: {len(ids)} prompt ids, {dt:.1f}s, min gap {min(gaps):.4g}: "
            f"{entry['greedy_text'][:60]!r}")
        if lc is not None:
            entry["llama_cpp_cross_check"] = cross_check_generate(lc, ids, out, tops)
            cc = entry["llama_cpp_cross_check"]
            log(f"  llama.cpp: greedy agree prefix {cc['greedy_agree_prefix']}/{N_STEPS}, "
                f"teacher-forced argmax agree {cc['forced_argmax_agree']}/{N_STEPS}, "
                f"max |dlogprob| top5 {cc['max_abs_top5_logprob_delta']:.4g}")
        prompts.append(entry)
    obj = {
        "model_sha256": meta["model_sha256"],
        "reference": ("tests/reference/ref_llama.py: NumPy float32 forward pass over gguf.quants."
                      "dequantize'd weights (float32 matmuls, RoPE angles in float64); prompt "
                      "evaluated as one batch, then one token at a time with a KV cache. Greedy = "
                      "argmax (ties -> lowest id), exactly n_steps tokens, no stop at EOS. "
                      "logprob = float64 log_softmax of the float32 logits. top2_gaps[i] = "
                      "logit(top1) - logit(top2) at step i."),
        "versions": meta["versions"],
        "n_steps": N_STEPS,
        "prompts": prompts,
    }
    write_json(os.path.join(args.out, "generate.json"), obj)


def cross_check_generate(lc, prompt_ids, ref_ids, ref_tops):
    """llama.cpp (a) free-running greedy from the prompt, (b) logits along the
    reference's greedy path (teacher forcing, one batch)."""
    from ref_llama import log_softmax64
    n = len(ref_ids)
    # (a) free-running greedy, token by token
    lc.reset()
    lc.eval(list(prompt_ids))
    own = []
    for step in range(n):
        row = np.array(lc.scores[lc.n_tokens - 1], dtype=np.float32)
        tid = int(np.argmax(row))
        own.append(tid)
        if step + 1 < n:
            lc.eval([tid])
    agree = 0
    while agree < n and own[agree] == ref_ids[agree]:
        agree += 1
    # (b) teacher-forced along the reference path
    lc.reset()
    seq = list(prompt_ids) + list(ref_ids[:-1])
    lc.eval(seq)
    rows = np.array(lc.scores[len(prompt_ids) - 1: len(seq)], dtype=np.float32)
    lp = log_softmax64(rows)
    forced_agree = int(np.sum(np.argmax(rows, axis=-1) == np.array(ref_ids)))
    deltas = []
    for s in range(n):
        for tid, rlp in ref_tops[s]:
            deltas.append(abs(float(lp[s, tid]) - rlp))
    d = np.array(deltas)
    return {
        "greedy_ids": own,
        "greedy_agree_prefix": agree,
        "forced_argmax_agree": forced_agree,
        "max_abs_top5_logprob_delta": float(d.max()),
        "mean_abs_top5_logprob_delta": float(d.mean()),
        "note": "llama.cpp is informational only (it quantizes activations to 8 bits in "
                "its matmuls and keeps an f16 KV cache).",
    }


# ---------------------------------------------------------------------------
# d. perplexity
# ---------------------------------------------------------------------------
PPL_CTX = 512
PPL_MAX_TOKENS = 16384


def make_ppl(args, tok: RefTokenizer, meta: dict, model) -> None:
    from ref_llama import log_softmax64
    path = args.wikitext
    with open(path, "rb") as f:
        data = f.read()
    t0 = time.time()
    all_ids = tok.encode_bytes(data)
    log(f"ppl: tokenized {len(data)} bytes -> {len(all_ids)} ids in {time.time() - t0:.1f}s")
    if len(all_ids) < PPL_MAX_TOKENS:
        raise SystemExit("wikitext file too short")
    ids = all_ids[:PPL_MAX_TOKENS]
    n_win = len(ids) // PPL_CTX
    window_nll = []
    lc = None if args.no_llama_cpp else llama_cpp_model(args.model, PPL_CTX)
    lc_window_nll = []
    for w in range(n_win):
        win = ids[w * PPL_CTX:(w + 1) * PPL_CTX]
        t0 = time.time()
        cache = model.new_cache(PPL_CTX)
        logits = model.forward(win, cache, all_logits=True)       # [512, vocab] float32
        lp = log_softmax64(logits[:-1])
        nll = -float(np.sum(lp[np.arange(PPL_CTX - 1), win[1:]]))
        window_nll.append(nll)
        msg = f"ppl window {w}: nll {nll:.4f} ({nll / (PPL_CTX - 1):.4f}/tok) {time.time() - t0:.1f}s"
        if lc is not None:
            lc.reset()
            lc.eval(win)
            rows = np.array(lc.scores[:PPL_CTX - 1], dtype=np.float32)
            llp = log_softmax64(rows)
            lnll = -float(np.sum(llp[np.arange(PPL_CTX - 1), win[1:]]))
            lc_window_nll.append(lnll)
            msg += f"; llama.cpp {lnll:.4f}"
        log(msg)
    n_pred = n_win * (PPL_CTX - 1)
    ppl = math.exp(sum(window_nll) / n_pred)
    rel = os.path.relpath(os.path.abspath(path), REPO)
    obj = {
        "model_sha256": meta["model_sha256"],
        "reference": ("tests/reference/ref_llama.py NumPy float32 forward, each window one batch "
                      "from an empty KV cache with a causal mask; NLL from float64 log_softmax of "
                      "the float32 logits. Whole file read as bytes, tokenized with the reference "
                      "tokenizer (no BOS), first max_tokens ids, non-overlapping ctx-sized windows, "
                      "positions 1..ctx-1 of each window scored."),
        "versions": meta["versions"],
        "file": rel,
        "file_sha256": hashlib.sha256(data).hexdigest(),
        "file_n_ids": len(all_ids),
        "ctx": PPL_CTX,
        "max_tokens": PPL_MAX_TOKENS,
        "n_windows": n_win,
        "n_predictions": n_pred,
        "ppl": ppl,
        "window_nll": window_nll,
        "first_ids_sha256": hashlib.sha256(np.asarray(ids, dtype="<i4").tobytes()).hexdigest(),
        "first_ids_head": ids[:64],
    }
    if lc is not None:
        obj["llama_cpp_ppl"] = math.exp(sum(lc_window_nll) / n_pred)
        obj["llama_cpp_window_nll"] = lc_window_nll
        lids = llama_cpp_tokenize_isolated(args.model, [data])[0]
        obj["llama_cpp_tokenization"] = {
            "file_ids_identical": lids == all_ids,
            "first_ids_identical": (lids[:PPL_MAX_TOKENS] == ids) if isinstance(lids, list) else False,
            "n_ids": len(lids) if isinstance(lids, list) else lids,
        }
        log(f"ppl: llama.cpp tokenization of the file: {obj['llama_cpp_tokenization']}")
    log(f"ppl = {ppl:.6f}" + (f" (llama.cpp {obj['llama_cpp_ppl']:.6f})" if lc is not None else ""))
    write_json(os.path.join(args.out, "ppl.json"), obj)


# ---------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures"))
    ap.add_argument("--only", default=",".join(PARTS))
    ap.add_argument("--wikitext", default=os.path.join(REPO, "..", "shared", "data", "wikitext-2-test.txt"))
    ap.add_argument("--no-llama-cpp", action="store_true")
    args = ap.parse_args(argv)
    parts = [p for p in args.only.split(",") if p]
    for p in parts:
        if p not in PARTS:
            ap.error(f"unknown part {p!r}")
    os.makedirs(args.out, exist_ok=True)
    meta = {"model_sha256": sha256_file(args.model), "versions": versions()}
    reader = gguf.GGUFReader(args.model)
    tok = RefTokenizer(args.model, reader=reader)
    if "tokenizer" in parts:
        make_tokenizer(args, tok, meta)
    if "dequant" in parts:
        make_dequant(args)
    model = None
    if "generate" in parts or "ppl" in parts:
        from ref_llama import RefLlama
        model = RefLlama(args.model, reader=reader)
    if "generate" in parts:
        make_generate(args, tok, meta, model)
    if "ppl" in parts:
        make_ppl(args, tok, meta, model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
