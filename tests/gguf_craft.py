"""gguf_craft.py - a small, self-contained GGUF writer for tests.

Written with nothing but `struct` and NumPy (it does not use the `gguf`
package's writer), so that tests can build both valid files and files that
are wrong in exactly one chosen place.

Layout written (little-endian, GGUF v2/v3 - the two differ only in the
version number):

    magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
    n_kv x   (string key | u32 value type | value)
    n_tensors x (string name | u32 n_dims | u64 ne[n_dims] | u32 type | u64 offset)
    padding to `alignment` | tensor data (each tensor at an aligned offset)

    string = u64 length | bytes;   array = u32 element type | u64 count | elements

Everything can be overridden for corruption: the magic, the version, both
counts, any key's length or type id, any value's raw bytes (`Raw`), a
string's declared length (`Str(..., length=N)`), an array's declared count
(`Arr(..., count=N)`), a tensor's declared n_dims / type id / offset / name
length. `GGUFFile.to_bytes()` also records the byte offset of every
structural field in `GGUFFile.marks` so that tests can truncate the file at
a chosen point.

`tiny_llama(path, **overrides)` writes a valid 2-layer Llama model with a
byte-level BPE vocabulary that sqserve can load and run.
"""

from __future__ import annotations

import struct
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

MAGIC = b"GGUF"

# ---- metadata value types ----------------------------------------------------

U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
VTYPE_NAMES = ["u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string",
               "array", "u64", "i64", "f64"]
_SCALAR_FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i",
               F32: "<f", BOOL: "<B", U64: "<Q", I64: "<q", F64: "<d"}

# ---- tensor types (GGML ids) ---------------------------------------------------

T_F32, T_F16, T_Q4_0, T_Q4_1 = 0, 1, 2, 3
T_Q5_0, T_Q5_1, T_Q8_0, T_Q8_1 = 6, 7, 8, 9
T_Q2_K, T_Q3_K, T_Q4_K, T_Q5_K, T_Q6_K, T_Q8_K = 10, 11, 12, 13, 14, 15
T_I8, T_I16, T_I32, T_I64, T_F64, T_BF16 = 24, 25, 26, 27, 28, 30

# type id -> (elements per block, bytes per block), as in ggml
BLOCK: Dict[int, Tuple[int, int]] = {
    T_F32: (1, 4), T_F16: (1, 2), T_Q4_0: (32, 18), T_Q4_1: (32, 20),
    T_Q5_0: (32, 22), T_Q5_1: (32, 24), T_Q8_0: (32, 34), T_Q8_1: (32, 36),
    T_Q2_K: (256, 84), T_Q3_K: (256, 110), T_Q4_K: (256, 144), T_Q5_K: (256, 176),
    T_Q6_K: (256, 210), T_Q8_K: (256, 292), T_I8: (1, 1), T_I16: (1, 2),
    T_I32: (1, 4), T_I64: (1, 8), T_F64: (1, 8), T_BF16: (1, 2),
}
TYPE_NAMES = {T_F32: "F32", T_F16: "F16", T_Q4_0: "Q4_0", T_Q4_1: "Q4_1",
              T_Q5_0: "Q5_0", T_Q5_1: "Q5_1", T_Q8_0: "Q8_0", T_Q8_1: "Q8_1",
              T_Q2_K: "Q2_K", T_Q3_K: "Q3_K", T_Q4_K: "Q4_K", T_Q5_K: "Q5_K",
              T_Q6_K: "Q6_K", T_Q8_K: "Q8_K", T_I8: "I8", T_I16: "I16", T_I32: "I32",
              T_I64: "I64", T_F64: "F64", T_BF16: "BF16"}

DEFAULT_ALIGNMENT = 32


def tensor_nbytes(ttype: int, ne: Sequence[int]) -> int:
    """Bytes of a tensor of shape ne (GGUF order) and type ttype."""
    be, bb = BLOCK[ttype]
    n = 1
    for d in ne:
        n *= int(d)
    if int(ne[0]) % be:
        raise ValueError(f"row length {ne[0]} is not a multiple of {be}")
    return n // be * bb


# ---- value wrappers -------------------------------------------------------------


class Raw:
    """Bytes written verbatim where an encoded value (or field) would go."""

    def __init__(self, data: bytes):
        self.data = bytes(data)


class Str:
    """A string whose declared u64 length may lie (length=None: the truth)."""

    def __init__(self, data, length: Optional[int] = None):
        self.data = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        self.length = length


class Arr:
    """A typed array value. items are Python values of element type etype
    (Arr for nested arrays). count overrides the declared element count."""

    def __init__(self, etype: int, items: Iterable[Any], count: Optional[int] = None):
        self.etype = etype
        self.items = list(items)
        self.count = count


def enc_u32(x: int) -> bytes:
    return struct.pack("<I", x & 0xFFFFFFFF)


def enc_u64(x: int) -> bytes:
    return struct.pack("<Q", x & 0xFFFFFFFFFFFFFFFF)


def enc_str(s, length: Optional[int] = None) -> bytes:
    if isinstance(s, Str):
        length = s.length if length is None else length
        s = s.data
    b = s.encode("utf-8") if isinstance(s, str) else bytes(s)
    return enc_u64(len(b) if length is None else length) + b


def enc_value(vtype: int, value: Any) -> bytes:
    """Encodes one metadata value of type vtype (no type id in front)."""
    if isinstance(value, Raw):
        return value.data
    if vtype == STRING:
        return enc_str(value)
    if vtype == ARRAY:
        if not isinstance(value, Arr):
            raise TypeError("an ARRAY value must be an Arr")
        n = len(value.items) if value.count is None else value.count
        body = b"".join(enc_value(value.etype, it) for it in value.items)
        return enc_u32(value.etype) + enc_u64(n) + body
    if vtype == BOOL:
        return struct.pack("<B", int(value) & 0xFF)  # any byte: 2 is a test case
    if vtype in _SCALAR_FMT:
        return struct.pack(_SCALAR_FMT[vtype], value)
    raise ValueError(f"cannot encode a value of unknown type {vtype} (use Raw)")


# ---- file model -------------------------------------------------------------------


class KV:
    def __init__(self, key, vtype: int, value: Any, key_length: Optional[int] = None,
                 type_id: Optional[int] = None):
        self.key = key
        self.vtype = vtype
        self.value = value
        self.key_length = key_length  # declared key length override
        self.type_id = type_id        # value type id written (default vtype)


class Tensor:
    def __init__(self, name, ne: Sequence[int], ttype: int, data: Optional[bytes] = None,
                 n_dims: Optional[int] = None, type_id: Optional[int] = None,
                 offset: Optional[int] = None, name_length: Optional[int] = None):
        self.name = name
        self.ne = [int(d) for d in ne]  # GGUF order: ne[0] is the row length
        self.ttype = ttype
        self.data = data                # None: zeros of the right size
        self.n_dims = n_dims            # declared n_dims override (ne written as given)
        self.type_id = type_id          # declared type id override
        self.offset = offset            # declared data offset override
        self.name_length = name_length  # declared name length override

    def payload(self) -> bytes:
        if self.data is not None:
            return self.data
        try:
            return bytes(tensor_nbytes(self.ttype, self.ne))
        except (KeyError, ValueError, OverflowError, MemoryError):
            return b""


class GGUFFile:
    def __init__(self, version: int = 3):
        self.magic = MAGIC
        self.version = version
        self.kvs: List[KV] = []
        self.tensors: List[Tensor] = []
        self.n_kv: Optional[int] = None        # declared count overrides
        self.n_tensors: Optional[int] = None
        self.layout_alignment: Optional[int] = None  # None: from general.alignment
        self.extra_tensor_info = b""           # raw bytes after the tensor infos
        self.trailing = b""                    # raw bytes after the data
        self.marks: Dict[str, int] = {}

    # -- metadata
    def add(self, key, vtype: int, value: Any, **kw) -> KV:
        kv = KV(key, vtype, value, **kw)
        self.kvs.append(kv)
        return kv

    def set(self, key, vtype: int, value: Any) -> KV:
        """Replaces the value of key in place (keeps its position), or adds it."""
        for kv in self.kvs:
            if kv.key == key:
                kv.vtype, kv.value = vtype, value
                return kv
        return self.add(key, vtype, value)

    def remove(self, key) -> None:
        before = len(self.kvs)
        self.kvs = [kv for kv in self.kvs if kv.key != key]
        if len(self.kvs) == before:
            raise KeyError(key)

    def kv(self, key) -> KV:
        for kv in self.kvs:
            if kv.key == key:
                return kv
        raise KeyError(key)

    # -- tensors
    def add_tensor(self, name, ne, ttype, data=None, **kw) -> Tensor:
        t = Tensor(name, ne, ttype, data, **kw)
        self.tensors.append(t)
        return t

    def tensor(self, name) -> Tensor:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)

    def remove_tensor(self, name) -> None:
        before = len(self.tensors)
        self.tensors = [t for t in self.tensors if t.name != name]
        if len(self.tensors) == before:
            raise KeyError(name)

    def alignment(self) -> int:
        if self.layout_alignment is not None:
            return self.layout_alignment
        for kv in self.kvs:
            if (kv.key == "general.alignment" and kv.vtype == U32 and
                    isinstance(kv.value, int) and kv.value > 0 and
                    kv.value & (kv.value - 1) == 0):
                return kv.value
        return DEFAULT_ALIGNMENT

    # -- serialisation
    def to_bytes(self) -> bytes:
        out = bytearray()
        marks: Dict[str, int] = {}

        def mark(name):
            marks[name] = len(out)

        mark("magic")
        out += self.magic
        mark("version")
        out += enc_u32(self.version)
        mark("n_tensors")
        out += enc_u64(len(self.tensors) if self.n_tensors is None else self.n_tensors)
        mark("n_kv")
        out += enc_u64(len(self.kvs) if self.n_kv is None else self.n_kv)
        for i, kv in enumerate(self.kvs):
            mark(f"kv{i}.key")
            out += enc_str(kv.key, kv.key_length)
            mark(f"kv{i}.type")
            out += enc_u32(kv.vtype if kv.type_id is None else kv.type_id)
            mark(f"kv{i}.value")
            out += enc_value(kv.vtype, kv.value)
        mark("kv_end")

        align = self.alignment()
        # natural, aligned placement of each tensor's data
        placement = []
        pos = 0
        for t in self.tensors:
            pos = (pos + align - 1) // align * align
            placement.append(pos)
            pos += len(t.payload())

        for i, t in enumerate(self.tensors):
            mark(f"ti{i}.name")
            out += enc_str(t.name, t.name_length)
            mark(f"ti{i}.n_dims")
            out += enc_u32(len(t.ne) if t.n_dims is None else t.n_dims)
            mark(f"ti{i}.ne")
            for d in t.ne:
                out += enc_u64(d)
            mark(f"ti{i}.type")
            out += enc_u32(t.ttype if t.type_id is None else t.type_id)
            mark(f"ti{i}.offset")
            out += enc_u64(placement[i] if t.offset is None else t.offset)
        out += self.extra_tensor_info
        mark("ti_end")

        if self.tensors:
            out += bytes((-len(out)) % align)
        mark("data")
        data_start = len(out)
        for i, t in enumerate(self.tensors):
            out += bytes(data_start + placement[i] - len(out))
            mark(f"data{i}")
            out += t.payload()
        out += self.trailing
        mark("end")
        self.marks = marks
        return bytes(out)

    def write(self, path) -> "GGUFFile":
        with open(path, "wb") as f:
            f.write(self.to_bytes())
        return self


# ---- tensor data ------------------------------------------------------------------


def _f16_bytes(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.astype("<f2")).view(np.uint8).reshape(len(x), 2)


QUANTIZERS = (T_F32, T_F16, T_Q8_0, T_Q4_0, T_Q4_1)


def quantize(x: np.ndarray, ttype: int) -> bytes:
    """Encodes float values (flattened, row-major, GGUF order) as ttype."""
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    if ttype == T_F32:
        return x.astype("<f4").tobytes()
    if ttype == T_F16:
        return x.astype("<f2").tobytes()
    if ttype == T_Q8_0:
        b = x.reshape(-1, 32)
        amax = np.abs(b).max(axis=1)
        d = (amax / 127.0).astype(np.float32)
        inv = np.where(d > 0, 1.0 / np.where(d > 0, d, 1), 0).astype(np.float32)
        q = np.clip(np.round(b * inv[:, None]), -127, 127).astype(np.int8)
        out = np.empty((len(b), 34), np.uint8)
        out[:, :2] = _f16_bytes(d)
        out[:, 2:] = q.view(np.uint8)
        return out.tobytes()
    if ttype == T_Q4_0:  # ggml's quantize_row_q4_0_ref
        b = x.reshape(-1, 32)
        idx = np.abs(b).argmax(axis=1)
        mx = b[np.arange(len(b)), idx]
        d = (mx / -8.0).astype(np.float32)
        inv = np.where(d != 0, 1.0 / np.where(d != 0, d, 1), 0).astype(np.float32)
        q = np.clip(np.trunc(b * inv[:, None] + 8.5), 0, 15).astype(np.uint8)
        out = np.empty((len(b), 18), np.uint8)
        out[:, :2] = _f16_bytes(d)
        out[:, 2:] = q[:, :16] | (q[:, 16:] << 4)
        return out.tobytes()
    if ttype == T_Q4_1:  # ggml's quantize_row_q4_1_ref
        b = x.reshape(-1, 32)
        lo, hi = b.min(axis=1), b.max(axis=1)
        d = ((hi - lo) / 15.0).astype(np.float32)
        inv = np.where(d != 0, 1.0 / np.where(d != 0, d, 1), 0).astype(np.float32)
        q = np.clip(np.trunc((b - lo[:, None]) * inv[:, None] + 0.5), 0, 15).astype(np.uint8)
        out = np.empty((len(b), 20), np.uint8)
        out[:, :2] = _f16_bytes(d)
        out[:, 2:4] = _f16_bytes(lo.astype(np.float32))
        out[:, 4:] = q[:, :16] | (q[:, 16:] << 4)
        return out.tobytes()
    raise ValueError(f"no quantizer for type {TYPE_NAMES.get(ttype, ttype)}")


def dequantize(raw: bytes, ttype: int) -> np.ndarray:
    """Inverse of quantize() (for self-checks)."""
    a = np.frombuffer(raw, np.uint8)
    if ttype == T_F32:
        return a.view("<f4").astype(np.float32)
    if ttype == T_F16:
        return a.view("<f2").astype(np.float32)
    if ttype == T_Q8_0:
        b = a.reshape(-1, 34)
        d = b[:, :2].copy().view("<f2").astype(np.float32)
        return (d * b[:, 2:].view(np.int8).astype(np.float32)).reshape(-1)
    if ttype in (T_Q4_0, T_Q4_1):
        bs = 18 if ttype == T_Q4_0 else 20
        b = a.reshape(-1, bs)
        d = b[:, :2].copy().view("<f2").astype(np.float32)
        qs = b[:, bs - 16:]
        q = np.concatenate([qs & 15, qs >> 4], axis=1).astype(np.float32)
        if ttype == T_Q4_0:
            return (d * (q - 8)).reshape(-1)
        m = b[:, 2:4].copy().view("<f2").astype(np.float32)
        return (d * q + m).reshape(-1)
    raise ValueError(f"no dequantizer for type {ttype}")


def random_blocks(ttype: int, n_elems: int, rng: np.random.Generator) -> bytes:
    """Random blocks of any known type, with every fp16 scale a small finite
    value (for types sqserve parses but cannot compute with, e.g. Q2_K)."""
    be, bb = BLOCK[ttype]
    nb = n_elems // be
    b = rng.integers(0, 256, size=(nb, bb), dtype=np.uint8)
    scale = _f16_bytes(np.full(nb, 0.01, np.float32))
    if ttype == T_Q2_K:      # scales[16] qs[64] d dmin
        b[:, 80:82] = scale
        b[:, 82:84] = scale
    elif ttype == T_Q3_K:    # hmask[32] qs[64] scales[12] d
        b[:, 108:110] = scale
    elif ttype in (T_Q4_K, T_Q5_K):  # d dmin ...
        b[:, 0:2] = scale
        b[:, 2:4] = scale
    elif ttype == T_Q6_K:    # ... d last
        b[:, 208:210] = scale
    elif be == 32:           # d first (and m second for the _1 types)
        b[:, 0:2] = scale
        if ttype in (T_Q4_1, T_Q5_1):
            b[:, 2:4] = scale
    elif ttype in (T_F16, T_BF16):
        vals = rng.standard_normal(nb).astype(np.float32) * 0.02
        if ttype == T_F16:
            return vals.astype("<f2").tobytes()
        return (vals.view(np.uint32) >> 16).astype("<u2").tobytes()
    elif ttype in (T_F32, T_F64):
        vals = rng.standard_normal(nb) * 0.02
        return vals.astype("<f4" if ttype == T_F32 else "<f8").tobytes()
    return b.tobytes()


# ---- the GPT-2 byte-level alphabet ------------------------------------------------


def bytes_to_unicode() -> Dict[int, str]:
    """GPT-2's reversible byte -> printable character mapping."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) +
          list(range(ord("\xae"), ord("\xff") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


BYTE_CHAR = bytes_to_unicode()

# merges of the tiny vocabulary, in rank order; "Ġ" is the byte-level space
TINY_MERGES: List[Tuple[str, str]] = [
    ("h", "e"), ("l", "l"), ("he", "ll"), ("hell", "o"), ("t", "h"), ("th", "e"),
    ("Ġ", "t"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a"), ("o", "r"), ("Ġ", "w"),
    ("Ġw", "or"), ("Ġwor", "l"), ("Ġworl", "d"),
]
CONTROL_TOKENS = ["<|im_start|>", "<|im_end|>"]

CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def tiny_vocab(merges: Sequence[Tuple[str, str]] = TINY_MERGES):
    """(tokens, token_types, merge strings): 256 byte tokens (id = byte value),
    one token per merge result, then the control tokens (type 3)."""
    tokens = [BYTE_CHAR[b] for b in range(256)]
    for a, b in merges:
        if a + b not in tokens:
            tokens.append(a + b)
    types = [1] * len(tokens)
    for c in CONTROL_TOKENS:
        tokens.append(c)
        types.append(3)
    return tokens, types, [f"{a} {b}" for a, b in merges]


# ---- the tiny Llama ------------------------------------------------------------------

# per-tensor-role default storage types: the layers differ so that every
# type the writer can produce is exercised by a valid model
def _default_types(n_layer: int) -> Dict[str, int]:
    types = {"token_embd.weight": T_Q8_0, "output.weight": T_F16,
             "output_norm.weight": T_F32}
    for l in range(n_layer):
        mat = [(T_F32, T_F16), (T_Q8_0, T_Q4_0), (T_Q4_1, T_F16)][l % 3]
        for p in ("attn_norm", "ffn_norm"):
            types[f"blk.{l}.{p}.weight"] = T_F32 if l % 2 == 0 else T_F16
        for p in ("attn_q", "attn_k", "attn_v", "attn_output"):
            types[f"blk.{l}.{p}.weight"] = mat[0]
        for p in ("ffn_gate", "ffn_up", "ffn_down"):
            types[f"blk.{l}.{p}.weight"] = mat[1]
    return types


def tiny_llama_file(version: int = 3, n_layer: int = 2, dim: int = 64, n_head: int = 4,
                    n_head_kv: int = 2, ffn: int = 128, ctx: int = 256, seed: int = 0,
                    tied: bool = False, alignment: Optional[int] = None,
                    types: Optional[Dict[str, int]] = None,
                    merges: Sequence[Tuple[str, str]] = TINY_MERGES,
                    chat_template: Optional[str] = CHATML_TEMPLATE,
                    meta: Optional[Dict[str, Any]] = None,
                    drop_tensors: Iterable[str] = (),
                    name: str = "tiny-llama-test") -> GGUFFile:
    """A valid tiny Llama as a GGUFFile (mutate it, then .write(path)).

    meta: {key: (vtype, value)} set after the defaults, or {key: None} to
    remove a default key. types: {tensor name: type id} overrides."""
    rng = np.random.default_rng(seed)
    head_dim = dim // n_head
    kv_dim = head_dim * n_head_kv
    tokens, ttypes, merge_strs = tiny_vocab(merges)
    n_vocab = len(tokens)

    g = GGUFFile(version)
    g.add("general.architecture", STRING, "llama")
    g.add("general.name", STRING, name)
    if alignment is not None:
        g.add("general.alignment", U32, alignment)
    g.add("llama.block_count", U32, n_layer)
    g.add("llama.context_length", U32, ctx)
    g.add("llama.embedding_length", U32, dim)
    g.add("llama.feed_forward_length", U32, ffn)
    g.add("llama.attention.head_count", U32, n_head)
    g.add("llama.attention.head_count_kv", U32, n_head_kv)
    g.add("llama.rope.freq_base", F32, 10000.0)
    g.add("llama.attention.layer_norm_rms_epsilon", F32, 1e-5)
    g.add("llama.rope.dimension_count", U32, head_dim)
    g.add("llama.vocab_size", U32, n_vocab)
    g.add("tokenizer.ggml.model", STRING, "gpt2")
    g.add("tokenizer.ggml.pre", STRING, "smollm")
    g.add("tokenizer.ggml.tokens", ARRAY, Arr(STRING, tokens))
    g.add("tokenizer.ggml.token_type", ARRAY, Arr(I32, ttypes))
    g.add("tokenizer.ggml.merges", ARRAY, Arr(STRING, merge_strs))
    g.add("tokenizer.ggml.bos_token_id", U32, tokens.index("<|im_start|>"))
    g.add("tokenizer.ggml.eos_token_id", U32, tokens.index("<|im_end|>"))
    g.add("tokenizer.ggml.add_bos_token", BOOL, False)
    if chat_template is not None:
        g.add("tokenizer.chat_template", STRING, chat_template)
    for k, v in (meta or {}).items():
        if v is None:
            g.remove(k)
        else:
            g.set(k, v[0], v[1])

    tt = _default_types(n_layer)
    tt.update(types or {})
    drop = set(drop_tensors)

    def add(tname, ne, values):
        if tname in drop:
            return
        ttype = tt.get(tname, T_F32)
        if ttype in QUANTIZERS:
            data = quantize(values, ttype)
        else:  # a type sqserve parses but cannot compute with: random blocks
            data = random_blocks(ttype, len(values), rng)
        g.add_tensor(tname, ne, ttype, data)

    def mat(k, n, scale=0.05):
        return (rng.standard_normal(k * n) * scale).astype(np.float32)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    add("token_embd.weight", [dim, n_vocab], mat(dim, n_vocab, 0.5))
    add("output_norm.weight", [dim], norm(dim))
    if not tied:
        add("output.weight", [dim, n_vocab], mat(dim, n_vocab, 0.2))
    for l in range(n_layer):
        p = f"blk.{l}."
        add(p + "attn_norm.weight", [dim], norm(dim))
        add(p + "ffn_norm.weight", [dim], norm(dim))
        add(p + "attn_q.weight", [dim, dim], mat(dim, dim))
        add(p + "attn_k.weight", [dim, kv_dim], mat(dim, kv_dim))
        add(p + "attn_v.weight", [dim, kv_dim], mat(dim, kv_dim))
        add(p + "attn_output.weight", [dim, dim], mat(dim, dim))
        add(p + "ffn_gate.weight", [dim, ffn], mat(dim, ffn))
        add(p + "ffn_up.weight", [dim, ffn], mat(dim, ffn))
        add(p + "ffn_down.weight", [ffn, dim], mat(ffn, dim))
    return g


def tiny_llama(path, **overrides) -> GGUFFile:
    """Writes a valid tiny Llama model to path; returns its GGUFFile."""
    return tiny_llama_file(**overrides).write(path)
