"""NumPy reference forward pass for GGUF "llama", "qwen2" and "qwen3" models
(sqserve golden fixtures and the architecture tests, tests/test_archs.py).

Independent of the C engine: weights are read with the PyPI `gguf` package
(gguf.GGUFReader) and dequantized with gguf.quants.dequantize to float32; the
math below is written from the model definition, not from the engine's source.

The block is the one llama.cpp runs for general.architecture == "llama":

    x   = token_embd[ids]
    for each layer:
        h   = rmsnorm(x) * attn_norm
        q,k,v = h @ Wq^T, h @ Wk^T, h @ Wv^T        (per-head split)
        q,k = rope_normal(q,k, pos)                 (ADJACENT pairs 2i,2i+1)
        a   = softmax(q k^T / sqrt(head_dim) + causal_mask) v
              (grouped-query: query head h reads KV head h // (n_head/n_head_kv))
        x   = x + a @ Wo^T
        h   = rmsnorm(x) * ffn_norm
        x   = x + (silu(h @ Wgate^T) * (h @ Wup^T)) @ Wdown^T
    logits = (rmsnorm(x) * output_norm) @ W_out^T    (W_out = output.weight, or
                                                      token_embd.weight if tied)

Per architecture (as llama.cpp builds them):
  qwen2: q/k/v get their biases (attn_{q,k,v}.bias) after the projections;
         RoPE "neox": the pair (x[i], x[i + n_rot/2]) is rotated by
         pos * base^(-2i/n_rot) (the converter does not permute Qwen's rows).
  qwen3: no biases; after the projections each head of q and of k is
         RMSNorm'ed over head_dim with attn_q_norm / attn_k_norm (same eps),
         then RoPE "neox".
  any:   {arch}.attention.sliding_window = W > 0: a query at position p sees
         keys at positions p-W+1 .. p (Mistral's window; HF's
         sliding_window masks p - j >= W).

rmsnorm(x) = x / sqrt(mean(x^2) + eps).  RoPE "normal" (llama.cpp
LLAMA_ROPE_TYPE_NORM): for i < n_rot/2 the pair (x[2i], x[2i+1]) is rotated by
pos * base^(-2i/n_rot); the HF->GGUF converter permuted the Q/K rows so that
this adjacent-pair form equals HF's rotate_half form.

Precision: every tensor and every matmul is float32 by default (NumPy/OpenBLAS
sgemm; reductions inside rmsnorm/softmax are NumPy float32 pairwise sums).  RoPE
angles are computed in float64 and their cos/sin rounded to float32.  Pass
dtype=np.float64 to run the whole thing in float64 (used to measure the float32
rounding error quoted in README.md).

All hyperparameters come from the GGUF metadata ({arch}.* keys).
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import numpy as np
import gguf
from gguf import GGMLQuantizationType
from gguf.quants import dequantize


def _meta(reader: gguf.GGUFReader, key: str, default=None):
    f = reader.fields.get(key)
    if f is None:
        if default is None:
            raise KeyError(f"GGUF metadata key {key!r} missing")
        return default
    return f.contents()


class HParams:
    def __init__(self, reader: gguf.GGUFReader):
        arch = _meta(reader, "general.architecture")
        if arch not in ("llama", "qwen2", "qwen3"):
            raise ValueError(f"reference only implements llama, qwen2, qwen3; got {arch!r}")
        self.arch = arch
        self.rope_neox = arch in ("qwen2", "qwen3")
        p = arch + "."
        self.n_layer = int(_meta(reader, p + "block_count"))
        self.n_embd = int(_meta(reader, p + "embedding_length"))
        self.n_ff = int(_meta(reader, p + "feed_forward_length"))
        self.n_head = int(_meta(reader, p + "attention.head_count"))
        self.n_head_kv = int(_meta(reader, p + "attention.head_count_kv", self.n_head))
        self.n_ctx_train = int(_meta(reader, p + "context_length"))
        self.eps = float(_meta(reader, p + "attention.layer_norm_rms_epsilon"))
        self.rope_base = float(_meta(reader, p + "rope.freq_base", 10000.0))
        self.head_dim = int(_meta(reader, p + "attention.key_length",
                                  self.n_embd // self.n_head))
        self.head_dim_v = int(_meta(reader, p + "attention.value_length", self.head_dim))
        self.n_rot = int(_meta(reader, p + "rope.dimension_count", self.head_dim))
        if p + "rope.scaling.type" in reader.fields:
            st = _meta(reader, p + "rope.scaling.type")
            if st not in ("none",):
                raise NotImplementedError(f"rope scaling {st!r} not implemented")
        self.vocab = int(_meta(reader, p + "vocab_size", 0)) or None
        self.n_swa = int(_meta(reader, p + "attention.sliding_window", 0))
        if self.n_head % self.n_head_kv:
            raise ValueError("n_head must be a multiple of n_head_kv")

    def as_dict(self) -> Dict:
        return dict(self.__dict__)


def _load(t: gguf.gguf_reader.ReaderTensor, dtype) -> np.ndarray:
    """Dequantize one tensor to a dense array shaped [ne[n-1], ..., ne[0]]
    (rows first, as GGUFReader presents it; ne[0] is the innermost dim)."""
    qtype = GGMLQuantizationType(t.tensor_type)
    data = np.asarray(t.data)
    out = dequantize(data, qtype)
    shape = tuple(int(x) for x in reversed(list(t.shape)))
    out = np.ascontiguousarray(out.reshape(shape), dtype=dtype)
    return out


class KVCache:
    def __init__(self, hp: HParams, n_ctx: int, dtype):
        self.k = [np.zeros((n_ctx, hp.n_head_kv, hp.head_dim), dtype) for _ in range(hp.n_layer)]
        self.v = [np.zeros((n_ctx, hp.n_head_kv, hp.head_dim_v), dtype) for _ in range(hp.n_layer)]
        self.n = 0
        self.n_ctx = n_ctx


class RefLlama:
    def __init__(self, model_path: str, dtype=np.float32,
                 reader: Optional[gguf.GGUFReader] = None,
                 emulate_llama_cpp: bool = False):
        """emulate_llama_cpp=True is ONLY for the cross-check (crosscheck.py):
        it mimics llama.cpp's CPU rounding (8-bit activation blocks in the
        quantized matmuls, f16 Q/K/V/probabilities in attention) to show that
        the remaining reference-vs-llama.cpp gap is rounding, not a bug.  The
        fixtures never use it."""
        self.dtype = np.dtype(dtype)
        self.emulate = emulate_llama_cpp
        r = reader if reader is not None else gguf.GGUFReader(model_path)
        self.reader = r
        hp = self.hp = HParams(r)
        tensors = {t.name: t for t in r.tensors}
        self.tensor_types = {n: GGMLQuantizationType(t.tensor_type).name for n, t in tensors.items()}

        def get(name, shape=None, required=True):
            t = tensors.get(name)
            if t is None:
                if required:
                    raise KeyError(f"tensor {name} missing")
                return None
            a = _load(t, self.dtype)
            if shape is not None and a.shape != shape:
                raise ValueError(f"{name}: shape {a.shape}, expected {shape}")
            return a

        if "rope_freqs.weight" in tensors:
            raise NotImplementedError("rope_freqs (llama3 rope scaling) not implemented")
        E, F, H, Hkv, D, Dv = hp.n_embd, hp.n_ff, hp.n_head, hp.n_head_kv, hp.head_dim, hp.head_dim_v
        self.tok_embd = get("token_embd.weight")
        n_vocab = self.tok_embd.shape[0]
        if hp.vocab is not None and hp.vocab != n_vocab:
            raise ValueError("vocab_size mismatch")
        self.n_vocab = n_vocab
        self.output_norm = get("output_norm.weight", (E,))
        out = get("output.weight", (n_vocab, E), required=False)
        self.tied = out is None
        self.output = self.tok_embd if out is None else out
        self.output_type = self.tensor_types["token_embd.weight" if out is None else "output.weight"]
        self.layers: List[Dict[str, np.ndarray]] = []
        for i in range(hp.n_layer):
            b = f"blk.{i}."
            L = {
                "type": self.tensor_types[b + "attn_q.weight"],
                "attn_norm": get(b + "attn_norm.weight", (E,)),
                "wq": get(b + "attn_q.weight", (H * D, E)),
                "wk": get(b + "attn_k.weight", (Hkv * D, E)),
                "wv": get(b + "attn_v.weight", (Hkv * Dv, E)),
                "wo": get(b + "attn_output.weight", (E, H * Dv)),
                "ffn_norm": get(b + "ffn_norm.weight", (E,)),
                "w_gate": get(b + "ffn_gate.weight", (F, E)),
                "w_up": get(b + "ffn_up.weight", (F, E)),
                "w_down": get(b + "ffn_down.weight", (E, F)),
            }
            for bn, key, n in (("attn_q.bias", "bq", H * D), ("attn_k.bias", "bk", Hkv * D),
                               ("attn_v.bias", "bv", Hkv * Dv), ("attn_output.bias", "bo", E)):
                L[key] = get(b + bn, (n,), required=hp.arch == "qwen2" and key != "bo")
            for nn, key in (("attn_q_norm.weight", "q_norm"), ("attn_k_norm.weight", "k_norm")):
                L[key] = get(b + nn, (D,), required=hp.arch == "qwen3")
            self.layers.append(L)
        # RoPE inverse frequencies: base^(-2i/n_rot), i < n_rot/2 (float64)
        self._inv_freq = hp.rope_base ** (-np.arange(0, hp.n_rot, 2, dtype=np.float64) / hp.n_rot)

    # ------------------------------------------------------------------
    def new_cache(self, n_ctx: int) -> KVCache:
        return KVCache(self.hp, n_ctx, self.dtype)

    def _mm(self, x: np.ndarray, w: np.ndarray, wtype: str) -> np.ndarray:
        """x [T, K] @ w[N, K]^T."""
        if self.emulate and wtype not in ("F32", "F16", "BF16"):
            x = _q8_roundtrip(x, with_sum=wtype in ("Q4_1", "Q5_1"))
        return x @ w.T

    def _rmsnorm(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        ms = np.mean(x * x, axis=-1, keepdims=True)
        return (x / np.sqrt(ms + self.dtype.type(self.hp.eps))) * w

    def _rope(self, x: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """x: [T, n_heads, head_dim]; rotate adjacent pairs (2i, 2i+1), i < n_rot/2."""
        n_rot = self.hp.n_rot
        ang = pos.astype(np.float64)[:, None] * self._inv_freq[None, :]   # [T, n_rot/2]
        cos = np.cos(ang).astype(self.dtype)[:, None, :]
        sin = np.sin(ang).astype(self.dtype)[:, None, :]
        out = x.copy()
        if self.hp.rope_neox:   # pairs (i, i + n_rot/2)
            half = n_rot // 2
            x0, x1 = x[..., :half], x[..., half:n_rot]
            out[..., :half] = x0 * cos - x1 * sin
            out[..., half:n_rot] = x0 * sin + x1 * cos
            return out
        x0 = x[..., 0:n_rot:2]
        x1 = x[..., 1:n_rot:2]
        out[..., 0:n_rot:2] = x0 * cos - x1 * sin
        out[..., 1:n_rot:2] = x0 * sin + x1 * cos
        return out

    def forward(self, ids: Sequence[int], cache: KVCache, all_logits: bool = False) -> np.ndarray:
        """Run the tokens `ids` at positions cache.n .. cache.n+T-1, append their
        K/V to the cache, and return logits [T, n_vocab] (or [n_vocab] for the
        last token when all_logits is False).  Batched: all T positions at once
        with a causal mask."""
        hp = self.hp
        dt = self.dtype
        ids = np.asarray(ids, dtype=np.int64)
        T = len(ids)
        p0 = cache.n
        if p0 + T > cache.n_ctx:
            raise ValueError("KV cache overflow")
        H, Hkv, D, Dv = hp.n_head, hp.n_head_kv, hp.head_dim, hp.head_dim_v
        g = H // Hkv
        pos = np.arange(p0, p0 + T)
        scale = dt.type(1.0 / math.sqrt(D))
        n_kv = p0 + T
        # causal mask: query at pos p sees keys at positions <= p
        kpos = np.arange(n_kv)
        visible = kpos[None, :] <= pos[:, None]
        if hp.n_swa > 0:   # sliding window: the last n_swa positions only
            visible &= pos[:, None] - kpos[None, :] < hp.n_swa
        mask = np.where(visible, dt.type(0), dt.type(-np.inf)).astype(dt)

        x = self.tok_embd[ids].astype(dt)                       # [T, E]
        for li, L in enumerate(self.layers):
            h = self._rmsnorm(x, L["attn_norm"])
            q = self._mm(h, L["wq"], L["type"])
            k = self._mm(h, L["wk"], L["type"])
            v = self._mm(h, L["wv"], L["type"])
            if L["bq"] is not None:
                q = q + L["bq"]
            if L["bk"] is not None:
                k = k + L["bk"]
            if L["bv"] is not None:
                v = v + L["bv"]
            q, k = q.reshape(T, H, D), k.reshape(T, Hkv, D)
            if L["q_norm"] is not None:   # qwen3: per-head RMSNorm before RoPE
                q = self._rmsnorm(q, L["q_norm"])
                k = self._rmsnorm(k, L["k_norm"])
            q = self._rope(q, pos)
            k = self._rope(k, pos)
            v = v.reshape(T, Hkv, Dv)
            if self.emulate:   # f16 KV cache, f16 query
                k = k.astype(np.float16).astype(dt)
                v = v.astype(np.float16).astype(dt)
                q = q.astype(np.float16).astype(dt)
            cache.k[li][p0:p0 + T] = k
            cache.v[li][p0:p0 + T] = v
            K = cache.k[li][:n_kv]                              # [n_kv, Hkv, D]
            V = cache.v[li][:n_kv]
            # group query heads by their KV head: q -> [Hkv, g*T, D]
            qg = q.reshape(T, Hkv, g, D).transpose(1, 2, 0, 3).reshape(Hkv, g * T, D)
            s = np.matmul(qg, K.transpose(1, 2, 0)) * scale     # [Hkv, g*T, n_kv]
            s = s.reshape(Hkv, g, T, n_kv) + mask
            s = s - np.max(s, axis=-1, keepdims=True)
            p = np.exp(s)
            p = p / np.sum(p, axis=-1, keepdims=True)
            if self.emulate:
                p = p.astype(np.float16).astype(dt)
            a = np.matmul(p.reshape(Hkv, g * T, n_kv), V.transpose(1, 0, 2))  # [Hkv, g*T, Dv]
            a = a.reshape(Hkv, g, T, Dv).transpose(2, 0, 1, 3).reshape(T, H * Dv)
            o = self._mm(a, L["wo"], L["type"])
            if L["bo"] is not None:
                o = o + L["bo"]
            x = x + o
            h = self._rmsnorm(x, L["ffn_norm"])
            gt = self._mm(h, L["w_gate"], L["type"])
            up = self._mm(h, L["w_up"], L["type"])
            act = gt / (dt.type(1) + np.exp(-gt))               # silu
            x = x + self._mm(act * up, L["w_down"], L["type"])
        cache.n = n_kv
        if not all_logits:
            x = x[-1:]
        h = self._rmsnorm(x, self.output_norm)
        logits = self._mm(h, self.output, self.output_type)
        return logits if all_logits else logits[0]


def layer_inputs(model: "RefLlama", layer: int, ids: Sequence[int], sites: Dict[str, int],
                 window: int = 512) -> Dict[str, np.ndarray]:
    """The inputs of layer `layer`'s matmuls, by name: sites maps a name to
    the matmul's index in the layer (0 q, 1 k, 2 v, 3 o, 4 gate, 5 up,
    6 down). The tokens run in windows of `window` from an empty cache; the
    rows of every window are concatenated."""
    got: Dict[str, List[np.ndarray]] = {k: [] for k in sites}
    orig = model._mm
    for w0 in range(0, len(ids), window):
        calls = [0]

        def mm(x, w, t):
            li, j = divmod(calls[0], 7)
            calls[0] += 1
            if li == layer:
                for name, jj in sites.items():
                    if j == jj:
                        got[name].append(x.copy())
            return orig(x, w, t)

        model._mm = mm
        try:
            model.forward(ids[w0:w0 + window], model.new_cache(window))
        finally:
            model._mm = orig
    return {k: np.concatenate(v) for k, v in got.items()}


def _q8_roundtrip(x: np.ndarray, with_sum: bool) -> np.ndarray:
    """Cross-check only: value of x after llama.cpp's Q8_0/Q8_1 activation
    quantization (blocks of 32 along the last axis, d = amax/127 stored as
    f16, q = round(x/d)).  The Q8_1 block sum term is not modelled."""
    shp = x.shape
    xb = x.reshape(-1, 32).astype(np.float32)
    amax = np.max(np.abs(xb), axis=1, keepdims=True)
    d = amax / np.float32(127)
    idv = np.where(d > 0, np.float32(1) / np.where(d > 0, d, 1), 0).astype(np.float32)
    q = np.round(xb * idv)
    d16 = d.astype(np.float16).astype(np.float32)
    return (q * d16).reshape(shp).astype(x.dtype)


def log_softmax64(logits: np.ndarray) -> np.ndarray:
    """log_softmax in float64 of (float32) logits, last axis."""
    z = logits.astype(np.float64)
    m = np.max(z, axis=-1, keepdims=True)
    return z - (m + np.log(np.sum(np.exp(z - m), axis=-1, keepdims=True)))


def greedy(model: RefLlama, prompt_ids: Sequence[int], n_steps: int, k: int = 5):
    """Greedy decode exactly n_steps tokens (argmax; ties -> lowest id; no stop
    at EOS).  Returns (ids, topk per step [[(id, logprob)]*k], top1-top2 gaps,
    per-step logits of the chosen token)."""
    cache = model.new_cache(len(prompt_ids) + n_steps)
    logits = model.forward(prompt_ids, cache)
    out, tops, gaps = [], [], []
    for step in range(n_steps):
        lp = log_softmax64(logits)
        order = np.argsort(-logits.astype(np.float64), kind="stable")
        tid = int(order[0])                  # == np.argmax (first max)
        tops.append([(int(i), float(lp[i])) for i in order[:k]])
        gaps.append(float(logits[order[0]]) - float(logits[order[1]]))
        out.append(tid)
        if step + 1 < n_steps:
            logits = model.forward([tid], cache)
    return out, tops, gaps
