"""arch_gguf.py - small random-weight GGUFs of each supported architecture,
written with the PyPI `gguf` package (as ../shared/tools/synth_gguf.py does
for Llama), for tests/test_archs.py and tests/test_spm.py. Built at test
time, never stored.

    write(path, arch, n_swa=0, vocab="bpe", tied=False, seed=0,
          arch_name=None, drop=(), key_length=None, value_length=None,
          add_space_prefix=None, tokenizer_model="gpt2")

arch: "llama", "qwen2" (biases on q/k/v, NeoX RoPE), "qwen3" (per-head q/k
RMSNorm, NeoX RoPE); n_swa > 0 writes {arch}.attention.sliding_window (a
Mistral-style Llama). vocab: "bpe" (gguf_craft's byte-level vocabulary) or
an (tokens, scores, types) triple for a SentencePiece ("llama") vocabulary.
Layer 0's matrices are F32, layer 1's Q8_0 (quantized by the gguf package),
so both the float and the quantized kernels are compared; norms and biases
are F32. The chat template is ChatML. For refusal tests: arch_name writes
another general.architecture (keys under that prefix), drop leaves tensors
out, key_length sets head_dim through {arch}.attention.key_length (and
value_length, unless value_length says otherwise), so q is key_length *
N_HEAD wide whatever DIM is (as in Qwen3-0.6B);
tokenizer_model names the BPE vocabulary's model, scores None leaves an SPM
vocabulary's scores out; add_space_prefix writes that SPM flag.
"""
from __future__ import annotations

import numpy as np
import gguf
from gguf.quants import quantize

import gguf_craft as gc

DIM, N_HEAD, N_HEAD_KV, FFN, N_LAYER, CTX = 64, 4, 2, 128, 2, 512


def _bpe(w: gguf.GGUFWriter, model="gpt2") -> int:
    tokens, types, merges = gc.tiny_vocab()
    w.add_tokenizer_model(model)
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(tokens.index("<|im_start|>"))
    w.add_eos_token_id(tokens.index("<|im_end|>"))
    w.add_add_bos_token(False)
    return len(tokens)


def _spm(w: gguf.GGUFWriter, vocab, add_space_prefix) -> int:
    tokens, scores, types = vocab
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    if scores is not None:
        w.add_token_scores(scores)
    if add_space_prefix is not None:
        w.add_add_space_prefix(add_space_prefix)
    w.add_token_types(types)
    w.add_bos_token_id(tokens.index("<s>"))
    w.add_eos_token_id(tokens.index("</s>"))
    w.add_unk_token_id(tokens.index("<unk>"))
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    return len(tokens)


def tiny_spm_vocab():
    """A small hand-made SentencePiece vocabulary (no trainer needed): <unk>,
    <s>, </s>, the 256 byte tokens, printable ASCII and U+2581 as single
    pieces, and a few merged pieces whose scores rank them (for the fuzz
    seeds; tests/test_spm.py uses a trained one)."""
    tokens, scores, types = ["<unk>", "<s>", "</s>"], [0.0, 0.0, 0.0], [2, 3, 3]
    for b in range(256):
        tokens.append(f"<0x{b:02X}>")
        scores.append(0.0)
        types.append(6)
    merged = ["\u2581t", "he", "\u2581the", "ll", "llo", "\u2581he", "\u2581hello", "or", "\u2581w", "\u2581wor",
              "ld", "\u2581world", "in", "\u2581a"]
    singles = ["\u2581"] + [chr(c) for c in range(0x21, 0x7f)]
    for i, p in enumerate(merged):
        tokens.append(p)
        scores.append(-float(i))
        types.append(1)
    for i, p in enumerate(singles):
        tokens.append(p)
        scores.append(-100.0 - i)
        types.append(1)
    return tokens, scores, types


def write(path, arch: str = "llama", n_swa: int = 0, vocab="bpe", tied: bool = False, seed: int = 0,
          arch_name=None, drop=(), key_length=None, value_length=None, add_space_prefix=None,
          tokenizer_model="gpt2"):
    rng = np.random.default_rng(seed)
    hd = key_length or DIM // N_HEAD
    qd, kvd = hd * N_HEAD, hd * N_HEAD_KV
    w = gguf.GGUFWriter(str(path), arch_name or arch)
    w.add_name(f"tiny-{arch}{'-swa' if n_swa else ''}-test")
    w.add_context_length(CTX)
    w.add_embedding_length(DIM)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(FFN)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_dimension_count(hd)
    if arch == "qwen3" or key_length:
        w.add_key_length(hd)
        w.add_value_length(value_length or hd)
    if n_swa:
        w.add_sliding_window(n_swa)
    n_vocab = _bpe(w, tokenizer_model) if vocab == "bpe" else _spm(w, vocab, add_space_prefix)
    w.add_vocab_size(n_vocab)
    w.add_chat_template(gc.CHATML_TEMPLATE)

    def mat(rows, cols, layer, scale=0.08):
        a = (rng.standard_normal((rows, cols)) * scale).astype(np.float32)
        if name in drop:
            return
        if layer == 1:
            w.add_tensor(name, quantize(a, gguf.GGMLQuantizationType.Q8_0),
                         raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, a)

    def vec(n, center=1.0, scale=0.1):
        v = (center + scale * rng.standard_normal(n)).astype(np.float32)
        if name not in drop:
            w.add_tensor(name, v)

    name = "token_embd.weight"
    w.add_tensor(name, (rng.standard_normal((n_vocab, DIM)) * 0.5).astype(np.float32))
    name = "output_norm.weight"
    vec(DIM)
    if not tied:
        name = "output.weight"
        w.add_tensor(name, (rng.standard_normal((n_vocab, DIM)) * 0.2).astype(np.float32))
    for l in range(N_LAYER):
        p = f"blk.{l}."
        for name, rows, cols in ((p + "attn_q.weight", qd, DIM), (p + "attn_k.weight", kvd, DIM),
                                 (p + "attn_v.weight", kvd, DIM), (p + "attn_output.weight", DIM, qd),
                                 (p + "ffn_gate.weight", FFN, DIM), (p + "ffn_up.weight", FFN, DIM),
                                 (p + "ffn_down.weight", DIM, FFN)):
            mat(rows, cols, l)
        for name in (p + "attn_norm.weight", p + "ffn_norm.weight"):
            vec(DIM)
        if arch == "qwen2":
            for name, n in ((p + "attn_q.bias", qd), (p + "attn_k.bias", kvd), (p + "attn_v.bias", kvd)):
                vec(n, 0.0, 0.5)
        if arch == "qwen3":
            for name in (p + "attn_q_norm.weight", p + "attn_k_norm.weight"):
                vec(hd, 1.0, 0.3)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=False)
    w.close()
    return path
