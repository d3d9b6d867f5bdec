"""Reference tokenizer for sqserve's golden fixtures.

Built with the Hugging Face `tokenizers` library (Rust) from the vocabulary,
merges and token types stored in the GGUF file itself.  It shares no code with
the C engine: the C tokenizer is checked against this one.

The configuration reproduces SmolLM2's original tokenizer.json:
  * model: byte-level BPE (vocab = tokenizer.ggml.tokens, merges =
    tokenizer.ggml.merges, no unk token, no dropout, no byte fallback)
  * normalizer: none
  * pre_tokenizer: Sequence[Digits(individual_digits=True),
                            ByteLevel(add_prefix_space=False, trim_offsets=True,
                                      use_regex=True)]
  * decoder: ByteLevel
  * every control token (token_type == 3; ids 0..16 for SmolLM2) registered as
    a *special* added token, so it is recognised when it appears in text.
Encoding uses add_special_tokens=False (tokenizer.ggml.add_bos_token is
False), i.e. no BOS/EOS is inserted.

Raw bytes that are not valid UTF-8 are first decoded with
bytes.decode("utf-8", errors="replace"): each maximal subpart of an ill-formed
sequence becomes one U+FFFD (Unicode's recommended practice), which is what the
C engine does too.
"""

from __future__ import annotations

import sys
from typing import List, Sequence

import gguf
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

TOKEN_TYPE_CONTROL = 3


def _field(reader: gguf.GGUFReader, key: str):
    f = reader.fields.get(key)
    if f is None:
        raise KeyError(f"GGUF metadata key {key!r} missing")
    return f.contents()


class RefTokenizer:
    def __init__(self, model_path: str, reader: gguf.GGUFReader | None = None):
        r = reader if reader is not None else gguf.GGUFReader(model_path)
        model = _field(r, "tokenizer.ggml.model")
        if model != "gpt2":
            raise ValueError(f"reference tokenizer only handles byte-level BPE "
                             f"(tokenizer.ggml.model=gpt2), got {model!r}")
        tokens: List[str] = list(_field(r, "tokenizer.ggml.tokens"))
        types: List[int] = list(_field(r, "tokenizer.ggml.token_type"))
        merges_s: List[str] = list(_field(r, "tokenizer.ggml.merges"))
        self.add_bos = bool(r.fields["tokenizer.ggml.add_bos_token"].contents()) \
            if "tokenizer.ggml.add_bos_token" in r.fields else False
        self.bos_id = int(_field(r, "tokenizer.ggml.bos_token_id"))
        self.eos_id = int(_field(r, "tokenizer.ggml.eos_token_id"))
        self.pre = r.fields["tokenizer.ggml.pre"].contents() \
            if "tokenizer.ggml.pre" in r.fields else None

        vocab = {t: i for i, t in enumerate(tokens)}
        if len(vocab) != len(tokens):
            raise ValueError("duplicate tokens in tokenizer.ggml.tokens")
        merges = []
        for m in merges_s:
            a, b = m.split(" ")  # byte-level tokens never contain a raw space
            merges.append((a, b))

        # defaults: no dropout, no unk token, no subword prefix/suffix
        bpe = models.BPE(vocab=vocab, merges=merges, fuse_unk=False,
                         byte_fallback=False)
        tk = Tokenizer(bpe)
        tk.normalizer = None
        tk.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True,
                                     use_regex=True),
        ])
        tk.decoder = decoders.ByteLevel()
        self.special_ids = [i for i, t in enumerate(types) if t == TOKEN_TYPE_CONTROL]
        tk.add_special_tokens([
            AddedToken(tokens[i], special=True, normalized=False,
                       lstrip=False, rstrip=False, single_word=False)
            for i in self.special_ids
        ])
        # sanity: added tokens must keep their GGUF ids
        for i in self.special_ids:
            got = tk.token_to_id(tokens[i])
            if got != i:
                raise AssertionError(f"special token {tokens[i]!r}: id {got} != {i}")
        self.tk = tk
        # byte values whose byte-level symbol is not in the vocab: BPE with no
        # unk token and no byte fallback silently drops them (SmolLM2 lacks
        # 0x04 0x06 0x13 0x14 0x16 0x1d 0xc0 0xc1 0xf1 0xf2 0xf5..0xff)
        vs = set(tokens)
        self.missing_bytes = frozenset(b for b in range(256) if _BYTE_ENCODER[b] not in vs)
        self.tokens = tokens
        self.types = types

    # -- encoding ---------------------------------------------------------
    def encode_text(self, text: str) -> List[int]:
        return list(self.tk.encode(text, add_special_tokens=False).ids)

    def encode_bytes(self, data: bytes) -> List[int]:
        return self.encode_text(data.decode("utf-8", errors="replace"))

    # -- decoding ---------------------------------------------------------
    def token_bytes(self, tid: int) -> bytes:
        """Raw bytes of one token (control tokens give their literal text)."""
        t = self.tokens[tid]
        if self.types[tid] == TOKEN_TYPE_CONTROL:
            return t.encode("utf-8")
        return bytes(_BYTE_DECODER[c] for c in t)

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        return b"".join(self.token_bytes(i) for i in ids)

    def decode(self, ids: Sequence[int]) -> str:
        """Decoded text, special tokens included, invalid UTF-8 -> U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")


def _bytes_to_unicode():
    # GPT-2's reversible byte <-> printable-unicode map (as in the byte-level
    # BPE papers/tokenizers); re-implemented here, used only for decoding.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) \
        + list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


_BYTE_ENCODER = _bytes_to_unicode()
_BYTE_DECODER = {c: b for b, c in _BYTE_ENCODER.items()}


if __name__ == "__main__":
    if len(sys.argv) < 3:
        print("usage: ref_tokenizer.py MODEL.gguf TEXT...", file=sys.stderr)
        sys.exit(2)
    t = RefTokenizer(sys.argv[1])
    for s in sys.argv[2:]:
        ids = t.encode_text(s)
        print(ids)
        print(repr(t.decode(ids)))
