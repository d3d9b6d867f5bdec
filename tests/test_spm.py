"""SentencePiece vocabularies (tokenizer.ggml.model = "llama") against the
`sentencepiece` package.

A small BPE SentencePiece model is trained at test time (identity
normalizer, no whitespace collapsing, dummy prefix, byte fallback: the
settings of Llama-style tokenizers) on the BPE suite's own strings
(tests/reference/tok_cases.py). Its pieces, scores and types become the
vocabulary of a random-weight GGUF (tests/arch_gguf.py), the way llama.cpp's
converter writes them. sqserve must then give SentencePiece's ids on every
case (text fragments split at special tokens each get the dummy prefix, as
llama.cpp does), decode them back, and generate.
"""
import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import arch_gguf
import serve_util

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "reference"))
from ref_llama import RefLlama, greedy  # noqa: E402
from tok_cases import all_cases  # noqa: E402

spm = pytest.importorskip("sentencepiece")
BIN = str(serve_util.binary_path())
CASES = all_cases()


def train():
    corpus = [b.decode("utf-8", "replace") for _, b in CASES if b]
    corpus += ["The quick brown fox jumps over the lazy dog. hello world, hello there"] * 5
    buf = io.BytesIO()
    # character_coverage < 1 leaves rare characters out, so byte fallback is exercised
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=buf, model_type="bpe", vocab_size=800,
        byte_fallback=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
        add_dummy_prefix=True, character_coverage=0.98, allow_whitespace_only_pieces=True,
        max_sentence_length=1 << 20, minloglevel=2)
    return spm.SentencePieceProcessor(model_proto=buf.getvalue())


def gguf_vocab(sp):
    """(tokens, scores, types) as llama.cpp's converter writes them."""
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        types.append(2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i)
                     else 5 if sp.is_unused(i) else 1)
    return tokens, scores, types


@pytest.fixture(scope="module")
def sp():
    return train()


@pytest.fixture(scope="module")
def model(sp, tmp_path_factory):
    return arch_gguf.write(tmp_path_factory.mktemp("spm") / "spm.gguf", arch="llama", vocab=gguf_vocab(sp),
                           seed=3)


def tokenize(model, data, special=False):
    r = subprocess.run([BIN, "tokenize", "-m", str(model), *([] if special else ["--no-special"])], input=data,
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [int(x) for x in re.findall(rb"\d+", r.stdout)]


def test_the_model_exercises_byte_fallback_and_merges(sp):
    ids = sp.encode("\u03a9 \ud55c\uad6d\uc5b4 the")
    assert any(sp.is_byte(i) for i in ids) and any(len(sp.id_to_piece(i)) > 2 for i in ids)


@pytest.mark.parametrize("name,data", CASES, ids=[c[0] for c in CASES])
def test_ids_match_sentencepiece(sp, model, name, data):
    want = sp.encode(data.decode("utf-8", "replace"))
    assert tokenize(model, data) == want


@pytest.mark.parametrize("text", ["<s>hello</s> world", "a<s>b", "<s><s>x", "x</s>", " <s>  y"])
def test_each_fragment_after_a_special_token_gets_the_prefix(sp, model, text):
    want, pos = [], 0
    for m in re.finditer(r"</?s>", text):
        want += sp.encode(text[pos:m.start()]) + [sp.piece_to_id(m.group())]
        pos = m.end()
    want += sp.encode(text[pos:])
    assert tokenize(model, text.encode(), special=True) == want


def test_space_prefix_can_be_turned_off(sp, model, tmp_path):
    """tokenizer.ggml.add_space_prefix = false: no U+2581 before the text."""
    p = arch_gguf.write(tmp_path / "m.gguf", vocab=gguf_vocab(sp), add_space_prefix=False)
    got = tokenize(p, b"hello world")
    assert "".join(sp.id_to_piece(i) for i in got) == "hello\u2581world"
    assert "".join(sp.id_to_piece(i) for i in tokenize(model, b"hello world")) == "\u2581hello\u2581world"


def test_server_round_trip(sp, model):
    """POST /tokenize gives SentencePiece's ids (the server parses special
    tokens, so texts spelling one are left out; JSON refuses NUL); POST
    /detokenize gives the text back after the dummy-prefix space; a
    completion's prompt gets one BOS."""
    texts = [data.decode("utf-8", "replace") for _, data in CASES]
    texts = [t for t in texts if not re.search(r"</?s>|<unk>|\x00", t)]
    with serve_util.start_server("-m", model) as s, s.http() as c:  # one connection for all
        for t in texts:
            r = c.post("/tokenize", json={"prompt": t})
            assert r.status_code == 200, r.text
            ids = r.json()["tokens"]
            assert ids == sp.encode(t)
            r = c.post("/detokenize", json={"tokens": ids})
            assert r.status_code == 200 and r.json()["prompt"] == (" " + t if t else ""), r.text
        # /tokenize frames with add_special only; a bad flag is refused
        assert c.post("/tokenize", json={"prompt": "hi", "add_special": True}).json()["tokens"] == \
            [sp.bos_id()] + sp.encode("hi")
        assert c.post("/tokenize", json={"prompt": "hi", "add_special": False}).json()["tokens"] == sp.encode("hi")
        r = c.post("/tokenize", json={"prompt": "hi", "add_special": 1})
        assert r.status_code == 400 and "add_special" in r.text
        # completions frame the prompt with BOS (add_bos_token), once
        for prompt, n in (("hello world", 1 + len(sp.encode("hello world"))),
                          ("<s>hello world", 1 + len(sp.encode("hello world")))):
            r = c.post("/v1/completions", json={"model": "spm", "prompt": prompt, "max_tokens": 1, "temperature": 0})
            assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == n, r.text


def piece_bytes(sp, i):
    if sp.is_byte(i):
        return bytes([int(sp.id_to_piece(i)[3:5], 16)])
    if sp.is_control(i) or sp.is_unknown(i):
        return b""
    return sp.id_to_piece(i).replace("\u2581", " ").encode()


def test_generate_follows_the_reference(sp, model):
    """generate adds BOS (add_bos_token) and prints the reference's greedy path."""
    n = 12
    prompt = [sp.bos_id()] + sp.encode("hello world")
    ids, _, gaps = greedy(RefLlama(str(model)), prompt, n)
    assert min(gaps) > 1e-2 and sp.eos_id() not in ids, "pick another seed"
    want = b"".join(piece_bytes(sp, i) for i in ids).decode("utf-8", "replace")
    r = subprocess.run([BIN, "generate", "-m", str(model), "-p", "hello world", "-n", str(n), "--temp", "0"],
                       capture_output=True, timeout=120)
    assert r.returncode == 0 and f"generation: {n} tokens".encode() in r.stderr, r.stderr
    assert r.stdout.decode().rstrip("\n") == want


def one_error_line(r):
    lines = [l for l in r.stderr.decode().splitlines() if l.startswith("error: ")]
    assert r.returncode == 1 and len(lines) == 1, r.stderr[-2000:]
    return lines[0]


def test_missing_scores_are_refused(sp, tmp_path):
    tokens, scores, types = gguf_vocab(sp)
    p = arch_gguf.write(tmp_path / "m.gguf", vocab=(tokens, None, types))
    r = subprocess.run([BIN, "inspect", "-m", str(p)], capture_output=True)
    assert "tokenizer.ggml.scores is missing" in one_error_line(r)


def test_unknown_tokenizer_model_is_refused_by_name(tmp_path):
    p = arch_gguf.write(tmp_path / "m.gguf", tokenizer_model="bert")
    r = subprocess.run([BIN, "inspect", "-m", str(p)], capture_output=True)
    assert "tokenizer model 'bert' is not supported" in one_error_line(r)
