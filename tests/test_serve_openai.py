"""`sqserve serve` through the official `openai` Python client (and raw HTTP
where the client hides what we check): completions and chat, streaming and
not, stop strings, max_tokens / finish_reason, seeds, logprobs, n, usage,
echo, token-id prompts, multi-prompt, content parts, stream usage, models,
tokenize / detokenize and the OpenAPI description. Contract: docs/api.md.
"""

from __future__ import annotations

import json
import math
import re

import openai
import pytest

from serve_util import (MODEL_ID, REPO_ROOT, binary_path, model_path, sse_events,
                        start_server, stream_raw, httpx)
import subprocess

PROMPT = "Once upon a time"
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def _cli_text(out: str) -> str:
    """`sqserve generate` prints the text and one newline."""
    return out[:-1] if out.endswith("\n") else out


# Several tests here read what the model says (Paris, an end of turn within
# the budget): a property of the FP32 model. On CPUs below AVX-512 the
# default path quantizes GGUF activations to 8 bits per block, which flips
# the greedy answer to these prompts (test_int_acts.py bounds that path's
# accuracy), so the server and the CLI it is compared with run --exact-fp32.
EXACT = ["--exact-fp32"]


@pytest.fixture(scope="module")
def server():
    s = start_server(*EXACT)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    c = server.openai()
    yield c
    c.close()


def greedy(client, prompt=PROMPT, max_tokens=16, **kw):
    kw.setdefault("extra_body", {"ignore_eos": True})
    return client.completions.create(model=MODEL_ID, prompt=prompt, max_tokens=max_tokens,
                                     temperature=0, **kw)


# ---- models ----------------------------------------------------------------------


def test_models_list(client):
    ms = client.models.list()
    ids = [m.id for m in ms.data]
    assert MODEL_ID in ids, ids
    m = next(m for m in ms.data if m.id == MODEL_ID)
    assert m.object == "model"


def test_models_retrieve_and_unknown_404(client, server):
    m = client.models.retrieve(MODEL_ID)
    assert m.id == MODEL_ID and m.object == "model"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
    r = server.get("/v1/models/no-such-model")
    assert r.status_code == 404 and "error" in r.json(), r.text


# ---- completions -----------------------------------------------------------------


def test_completion_shape(client):
    r = greedy(client, max_tokens=8)
    assert r.object == "text_completion"
    assert r.id.startswith("cmpl-"), r.id
    assert r.model == MODEL_ID
    assert isinstance(r.created, int) and r.created > 1_600_000_000
    assert len(r.choices) == 1
    c = r.choices[0]
    assert c.index == 0 and c.text and c.logprobs is None
    assert c.finish_reason == "length"
    assert r.usage.completion_tokens == 8
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_completion_matches_cli_greedy(client):
    """The server's greedy text equals `sqserve generate --temp 0` on the same
    prompt (same engine, same model; FP32 activations)."""
    r = greedy(client, max_tokens=24)
    p = subprocess.run([str(binary_path()), "generate", "-m", str(model_path()), "-t", "2",
                        "-p", PROMPT, "-n", "24", "--temp", "0", "--ignore-eos", *EXACT],
                       capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    assert p.returncode == 0, p.stderr
    assert r.choices[0].text == _cli_text(p.stdout), \
        f"server {r.choices[0].text!r}\ncli    {p.stdout!r}"


def test_temperature_zero_is_deterministic(client):
    a = greedy(client, max_tokens=16, extra_body={}).choices[0].text
    b = greedy(client, max_tokens=16, extra_body={}).choices[0].text
    assert a == b and a


def test_max_tokens_gives_length(client):
    for n in (1, 5, 12):
        r = greedy(client, max_tokens=n, logprobs=1)
        c = r.choices[0]
        assert c.finish_reason == "length", (n, c)
        assert r.usage.completion_tokens == n, (n, r.usage)
        assert len(c.logprobs.tokens) == n, (n, c.logprobs.tokens)
        assert "".join(c.logprobs.tokens) == c.text


def test_eos_gives_stop(client):
    r = client.chat.completions.create(model=MODEL_ID, messages=FRANCE, temperature=0,
                                       max_tokens=64)
    c = r.choices[0]
    assert c.finish_reason == "stop", c
    assert r.usage.completion_tokens < 64
    assert "<|im_end|>" not in c.message.content


def test_stop_string(client):
    full = greedy(client, max_tokens=24).choices[0].text
    words = full.split()
    assert len(words) >= 4, full
    stop = " " + words[3]  # a word in the middle of the greedy text
    cut = full.index(stop)
    r = greedy(client, max_tokens=24, stop=stop)
    c = r.choices[0]
    assert c.text == full[:cut], f"full {full!r}\nstop {stop!r}\ngot  {c.text!r}"
    assert c.finish_reason == "stop"


def test_stop_list(client):
    full = greedy(client, max_tokens=24).choices[0].text
    words = full.split()
    stops = ["@@never@@", " " + words[5], " " + words[2]]
    cut = min(full.index(s) for s in stops if s in full)
    r = greedy(client, max_tokens=24, stop=stops)
    c = r.choices[0]
    assert c.text == full[:cut], f"full {full!r}\nstops {stops!r}\ngot  {c.text!r}"
    assert c.finish_reason == "stop"


def test_stop_string_streaming(client):
    full = greedy(client, max_tokens=24).choices[0].text
    stop = " " + full.split()[3]
    s = greedy(client, max_tokens=24, stop=stop, stream=True)
    text, reasons = "", []
    for ch in s:
        for c in ch.choices:
            text += c.text
            if c.finish_reason:
                reasons.append(c.finish_reason)
    assert text == full[:full.index(stop)], f"full {full!r}\nstop {stop!r}\ngot {text!r}"
    assert reasons == ["stop"]


def test_stop_string_across_tokens_streaming(client):
    """A stop string that starts inside one token and ends inside another:
    the stream must hold back the partial match and never emit any of it."""
    full = greedy(client, max_tokens=24).choices[0].text
    words = full.split(" ")
    i = next(i for i in range(2, len(words) - 1) if len(words[i]) >= 3 and len(words[i + 1]) >= 2)
    stop = words[i][1:] + " " + words[i + 1][:2]
    want = full[:full.index(stop)]
    a = greedy(client, max_tokens=24, stop=[stop])
    assert a.choices[0].text == want and a.choices[0].finish_reason == "stop", (stop, a)
    parts = [ch.choices[0].text for ch in greedy(client, max_tokens=24, stop=[stop], stream=True)]
    assert "".join(parts) == want, f"stop {stop!r}: streamed {parts}, want {want!r}"


def test_two_prompts_streaming(client):
    s = greedy(client, prompt=[PROMPT, "The capital of Italy is"], max_tokens=5, stream=True,
               stream_options={"include_usage": True})
    texts, reasons, usage = {0: "", 1: ""}, {0: [], 1: []}, None
    for ch in s:
        if not ch.choices:
            usage = ch.usage
            continue
        c = ch.choices[0]
        texts[c.index] += c.text
        if c.finish_reason:
            reasons[c.index].append(c.finish_reason)
    assert reasons == {0: ["length"], 1: ["length"]}
    assert texts[0] == greedy(client, max_tokens=5).choices[0].text
    assert usage is not None and usage.completion_tokens == 10


def test_completion_logprobs_streaming(client):
    """Streamed logprobs: text_offset keeps counting across chunks (it is an
    offset into the whole completion text, as without streaming)."""
    plain = greedy(client, max_tokens=8, logprobs=2)
    text, tokens, offsets = "", [], []
    for ch in greedy(client, max_tokens=8, logprobs=2, stream=True):
        c = ch.choices[0]
        if c.logprobs is not None:
            tokens += c.logprobs.tokens
            offsets += c.logprobs.text_offset
            assert all(len(t) == 2 for t in c.logprobs.top_logprobs)
        text += c.text
    assert text == plain.choices[0].text
    assert tokens == plain.choices[0].logprobs.tokens
    assert offsets == plain.choices[0].logprobs.text_offset, \
        f"streamed text_offset {offsets}, non-streamed {plain.choices[0].logprobs.text_offset}"


def test_completion_stream_equals_nonstream(client):
    full = greedy(client, max_tokens=20).choices[0].text
    s = greedy(client, max_tokens=20, stream=True)
    text, reasons, n = "", [], 0
    for ch in s:
        n += 1
        assert ch.object == "text_completion"
        assert ch.model == MODEL_ID
        assert ch.usage is None  # no include_usage
        assert len(ch.choices) == 1 and ch.choices[0].index == 0
        text += ch.choices[0].text
        if ch.choices[0].finish_reason:
            reasons.append(ch.choices[0].finish_reason)
    assert text == full
    assert reasons == ["length"]
    assert n >= 2  # really streamed


def test_raw_sse_framing(server):
    chunks, done, r = stream_raw(server, "/v1/completions",
                                 {"model": MODEL_ID, "prompt": PROMPT, "max_tokens": 6,
                                  "temperature": 0, "stream": True})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream"), r.headers
    assert done, "stream did not end with data: [DONE]"
    assert chunks and chunks[-1]["choices"][0]["finish_reason"] == "length"
    ids = {c["id"] for c in chunks}
    assert len(ids) == 1, f"chunk ids differ: {ids}"


def test_seed_reproducible(client):
    def run(seed):
        return client.completions.create(model=MODEL_ID, prompt=PROMPT, max_tokens=16,
                                         temperature=0.8, seed=seed).choices[0].text
    a, b = run(42), run(42)
    assert a == b, f"seed 42 twice gave\n{a!r}\n{b!r}"
    # and sampling really samples: different seeds at temperature 1 differ
    outs = {client.completions.create(model=MODEL_ID, prompt=PROMPT, max_tokens=16,
                                      temperature=1.0, seed=s).choices[0].text for s in (1, 2, 3, 4)}
    assert len(outs) >= 2, f"4 seeds at temperature 1 gave one text: {outs}"


def test_seed_reproducible_chat(client):
    def run():
        return client.chat.completions.create(model=MODEL_ID, messages=FRANCE, max_tokens=16,
                                              temperature=0.8, seed=42).choices[0].message.content
    assert run() == run()


def test_completion_logprobs(client):
    r = greedy(client, max_tokens=8, logprobs=3)
    c = r.choices[0]
    lp = c.logprobs
    assert lp is not None
    n = r.usage.completion_tokens
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == n
    assert "".join(lp.tokens) == c.text
    for tok, tlp, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert tlp <= 0 and math.isfinite(tlp)
        assert len(top) == 3, top
        assert all(v <= 0 for v in top.values())
        # greedy: the chosen token is the most likely one
        assert tlp == pytest.approx(max(top.values()), abs=1e-4), (tok, tlp, top)
        assert tok in top, (tok, top)
    assert lp.text_offset == sorted(lp.text_offset)
    assert lp.text_offset[0] == 0  # no echo: offsets are into the completion text
    for tok, off in zip(lp.tokens, lp.text_offset):
        assert c.text[off:off + len(tok)] == tok


def test_completion_logprobs_text_offset_non_ascii(client):
    """text_offset are character offsets into `text` (OpenAI; vLLM the same),
    also when tokens hold non-ASCII characters."""
    prompt = "Le café est très chaud et la crème brûlée est délicieuse. Le café"
    r = greedy(client, prompt=prompt, max_tokens=12, logprobs=1, extra_body={})
    c = r.choices[0]
    lp = c.logprobs
    assert "".join(lp.tokens) == c.text and any(ord(ch) > 127 for ch in c.text), c.text
    bad = [(t, o) for t, o in zip(lp.tokens, lp.text_offset) if c.text[o:o + len(t)] != t]
    assert not bad, (f"text_offset does not index the text {c.text!r}: tokens {lp.tokens} "
                     f"offsets {lp.text_offset} (UTF-8 byte offsets? characters expected)")
    e = greedy(client, prompt="Le café", max_tokens=4, logprobs=1, echo=True, extra_body={})
    ec = e.choices[0]
    for t, o in zip(ec.logprobs.tokens, ec.logprobs.text_offset):
        assert ec.text[o:o + len(t)] == t, (ec.text, ec.logprobs.tokens, ec.logprobs.text_offset)


def test_multibyte_streaming(client):
    """Emoji take several tokens each: the stream must never split a character
    (a lone U+FFFD may only end an output cut by max_tokens), and equal the
    non-streamed text; logprob bytes add up to the text."""
    msgs = [{"role": "user", "content": "Reply with only emojis: 🎉🎉🎉"}]
    full = client.chat.completions.create(model=MODEL_ID, messages=msgs, max_tokens=16,
                                          temperature=0, logprobs=True)
    c = full.choices[0]
    assert "🎉" in c.message.content, c.message.content
    raw = b"".join(bytes(t.bytes) for t in c.logprobs.content)
    assert raw.decode("utf-8", "replace") == c.message.content
    deltas = [ch.choices[0].delta.content for ch in client.chat.completions.create(
        model=MODEL_ID, messages=msgs, max_tokens=16, temperature=0, stream=True)
        if ch.choices and ch.choices[0].delta.content]
    assert "".join(deltas) == c.message.content
    for i, d in enumerate(deltas):
        if "\ufffd" in d:
            assert i == len(deltas) - 1 and c.finish_reason == "length" and d.endswith("\ufffd"), \
                f"delta {i} of {len(deltas)} splits a character: {deltas}"


def test_sampling_extensions(client):
    greedy_text = greedy(client, max_tokens=16, extra_body={}).choices[0].text
    k1 = client.completions.create(model=MODEL_ID, prompt=PROMPT, max_tokens=16, temperature=1.0,
                                   seed=3, extra_body={"top_k": 1}).choices[0].text
    assert k1 == greedy_text, "top_k=1 at temperature 1 must be greedy"
    rep = "one one one one one one one one"
    base = greedy(client, prompt=rep, max_tokens=16, extra_body={}).choices[0].text
    for kw in ({"extra_body": {"repetition_penalty": 1.5}},
               {"extra_body": {}, "frequency_penalty": 2.0},
               {"extra_body": {}, "presence_penalty": 2.0}):
        t = greedy(client, prompt=rep, max_tokens=16, **kw).choices[0].text
        assert t != base, f"{kw} did not change the greedy text {base!r}"
    r = client.completions.create(model=MODEL_ID, prompt=PROMPT, max_tokens=4, top_p=0.9,
                                  user="someone", extra_body={"min_p": 0.05})
    assert r.choices[0].text


def test_completion_logprobs_zero(client):
    r = greedy(client, max_tokens=4, logprobs=0)
    lp = r.choices[0].logprobs
    assert lp is not None and len(lp.token_logprobs) == 4


def test_chat_logprobs(client):
    r = client.chat.completions.create(model=MODEL_ID, messages=FRANCE, temperature=0,
                                       max_tokens=6, logprobs=True, top_logprobs=2)
    c = r.choices[0]
    assert c.finish_reason == "length"
    content = c.logprobs.content
    assert len(content) == r.usage.completion_tokens == 6
    assert "".join(t.token for t in content) == c.message.content
    for t in content:
        assert t.logprob <= 0
        assert len(t.top_logprobs) == 2, t
        assert t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob
        assert t.logprob == pytest.approx(t.top_logprobs[0].logprob, abs=1e-4)
        assert bytes(t.bytes).decode("utf-8") == t.token, t  # ASCII answer: bytes are the token


def test_chat_logprobs_at_eos(client):
    """Stopped by the end-of-turn token: the token itself is not shown, so the
    logprobs list the visible tokens; usage may count the end token too
    (vLLM does, OpenAI does not document it): one more at most."""
    r = client.chat.completions.create(model=MODEL_ID, messages=FRANCE, temperature=0,
                                       max_tokens=32, logprobs=True, top_logprobs=2)
    c = r.choices[0]
    assert c.finish_reason == "stop"
    content = c.logprobs.content
    assert "".join(t.token for t in content) == c.message.content
    assert r.usage.completion_tokens in (len(content), len(content) + 1)


def test_chat_no_logprobs_by_default(client):
    r = client.chat.completions.create(model=MODEL_ID, messages=FRANCE, temperature=0,
                                       max_tokens=4)
    assert r.choices[0].logprobs is None


def test_n_two_choices(client):
    r = client.completions.create(model=MODEL_ID, prompt=PROMPT, max_tokens=8, n=2,
                                  temperature=0.8, seed=7, logprobs=1,
                                  extra_body={"ignore_eos": True})
    assert sorted(c.index for c in r.choices) == [0, 1]
    assert all(c.text and c.finish_reason == "length" for c in r.choices), r.choices
    assert r.choices[0].text != r.choices[1].text, "n=2 sampled the same text twice"
    assert all(len(c.logprobs.tokens) == 8 for c in r.choices)
    assert r.usage.completion_tokens == 16, r.usage
    assert r.usage.prompt_tokens == r.usage.total_tokens - 16
    rc = client.chat.completions.create(model=MODEL_ID, messages=FRANCE, max_tokens=8, n=2,
                                        temperature=0.8, seed=7)
    assert sorted(c.index for c in rc.choices) == [0, 1]
    assert all(c.message.role == "assistant" and c.message.content for c in rc.choices)


def test_n_two_streaming(client):
    s = client.completions.create(model=MODEL_ID, prompt=PROMPT, max_tokens=6, n=2,
                                  temperature=0.8, stream=True)
    texts, reasons = {0: "", 1: ""}, {}
    for ch in s:
        assert len(ch.choices) == 1, "streaming chunks carry one choice each (docs/api.md)"
        c = ch.choices[0]
        texts[c.index] += c.text
        if c.finish_reason:
            reasons[c.index] = c.finish_reason
    assert set(reasons) == {0, 1} and all(texts.values()), (texts, reasons)


def test_usage_matches_tokenize(client, server):
    prompt = "The quick brown fox jumps over the lazy dog. " * 3
    r = greedy(client, prompt=prompt, max_tokens=7)
    assert r.usage.prompt_tokens == len(server.tokenize(prompt))
    assert r.usage.completion_tokens == 7
    assert r.usage.total_tokens == r.usage.prompt_tokens + 7


def test_chat_usage_matches_tokenize(client, server):
    r = client.chat.completions.create(model=MODEL_ID, messages=FRANCE, temperature=0,
                                       max_tokens=5, extra_body={"ignore_eos": True})
    assert r.usage.prompt_tokens == len(server.tokenize(messages=FRANCE))
    assert r.usage.completion_tokens == 5
    assert r.choices[0].finish_reason == "length"


def test_echo(client):
    r = greedy(client, max_tokens=6, echo=True)
    plain = greedy(client, max_tokens=6).choices[0].text
    assert r.choices[0].text == PROMPT + plain, r.choices[0].text
    assert r.usage.completion_tokens == 6


def test_prompt_token_ids(client, server):
    ids = server.tokenize(PROMPT)
    a = greedy(client, prompt=ids, max_tokens=12)
    b = greedy(client, prompt=PROMPT, max_tokens=12)
    assert a.choices[0].text == b.choices[0].text
    assert a.usage.prompt_tokens == len(ids)


def test_prompt_list_of_strings(client):
    p2 = "The capital of Italy is"
    r = greedy(client, prompt=[PROMPT, p2], max_tokens=8)
    assert sorted(c.index for c in r.choices) == [0, 1]
    by = {c.index: c.text for c in r.choices}
    assert by[0] == greedy(client, prompt=PROMPT, max_tokens=8).choices[0].text
    assert by[1] == greedy(client, prompt=p2, max_tokens=8).choices[0].text
    assert r.usage.completion_tokens == 16


def test_prompt_list_of_token_lists(client, server):
    p2 = "The capital of Italy is"
    r = greedy(client, prompt=[server.tokenize(PROMPT), server.tokenize(p2)], max_tokens=6)
    by = {c.index: c.text for c in r.choices}
    assert by == {0: greedy(client, prompt=PROMPT, max_tokens=6).choices[0].text,
                  1: greedy(client, prompt=p2, max_tokens=6).choices[0].text}


# ---- chat ------------------------------------------------------------------------


def test_chat_paris(client):
    r = client.chat.completions.create(model=MODEL_ID, messages=FRANCE, temperature=0,
                                       max_tokens=16)
    assert r.object == "chat.completion"
    assert r.model == MODEL_ID
    c = r.choices[0]
    assert c.index == 0 and c.message.role == "assistant"
    assert "Paris" in c.message.content, c.message.content


def test_chat_content_parts(client):
    plain = client.chat.completions.create(model=MODEL_ID, messages=FRANCE, temperature=0,
                                           max_tokens=12).choices[0].message.content
    parts = [{"role": "user", "content": [{"type": "text",
                                           "text": "What is the capital of France?"}]}]
    r = client.chat.completions.create(model=MODEL_ID, messages=parts, temperature=0,
                                       max_tokens=12)
    assert r.choices[0].message.content == plain
    two = [{"role": "user", "content": [{"type": "text", "text": "What is the capital"},
                                        {"type": "text", "text": " of France?"}]}]
    r2 = client.chat.completions.create(model=MODEL_ID, messages=two, temperature=0,
                                        max_tokens=16)
    assert "Paris" in r2.choices[0].message.content, r2.choices[0].message.content


def test_chat_system_and_history(client):
    msgs = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Hi!"},
            {"role": "assistant", "content": "Hello! How can I help?"},
            {"role": "user", "content": "What is the capital of France?"}]
    r = client.chat.completions.create(model=MODEL_ID, messages=msgs, temperature=0,
                                       max_tokens=16)
    assert r.choices[0].message.content


def test_chat_max_completion_tokens(client):
    r = client.chat.completions.create(model=MODEL_ID, messages=FRANCE, temperature=0,
                                       max_completion_tokens=3)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 3


def test_chat_stream(client):
    full = client.chat.completions.create(model=MODEL_ID, messages=FRANCE, temperature=0,
                                          max_tokens=16).choices[0]
    s = client.chat.completions.create(model=MODEL_ID, messages=FRANCE, temperature=0,
                                       max_tokens=16, stream=True)
    chunks = list(s)
    assert chunks
    first = chunks[0]
    assert first.object == "chat.completion.chunk"
    assert first.choices[0].delta.role == "assistant", first
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.message.content
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert reasons == [full.finish_reason]
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1


def test_stream_include_usage_completion(client):
    s = greedy(client, max_tokens=9, stream=True, stream_options={"include_usage": True})
    chunks = list(s)
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None, last
    assert last.usage.completion_tokens == 9
    assert last.usage.total_tokens == last.usage.prompt_tokens + 9
    for c in chunks[:-1]:
        assert c.usage is None and len(c.choices) == 1


def test_stream_include_usage_chat(client, server):
    s = client.chat.completions.create(model=MODEL_ID, messages=FRANCE, temperature=0,
                                       max_tokens=5, stream=True,
                                       stream_options={"include_usage": True},
                                       extra_body={"ignore_eos": True})
    chunks = list(s)
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None, last
    assert last.usage.completion_tokens == 5
    assert last.usage.prompt_tokens == len(server.tokenize(messages=FRANCE))


# ---- tokenize / detokenize ---------------------------------------------------------


@pytest.mark.parametrize("text", ["Hello, world!", "  leading and trailing spaces  ",
                                  "héllo wörld — 日本語のテキスト 🙂", "line1\nline2\n\ttab",
                                  "def f(x):\n    return x ** 2\n"])
def test_tokenize_detokenize_roundtrip(server, text):
    toks = server.tokenize(text)
    assert toks and all(isinstance(t, int) for t in toks)
    assert server.detokenize(toks) == text


def test_tokenize_matches_cli(server):
    p = subprocess.run([str(binary_path()), "tokenize", "-m", str(model_path()), "-p",
                        "The quick brown fox"], capture_output=True, text=True, timeout=600,
                       cwd=REPO_ROOT)
    assert p.returncode == 0, p.stderr
    assert server.tokenize("The quick brown fox") == json.loads(p.stdout)


def test_tokenize_messages_renders_template(server):
    toks = server.tokenize(messages=FRANCE)
    text = server.detokenize(toks)
    assert "What is the capital of France?" in text
    assert "<|im_start|>" in text and text.rstrip().endswith("assistant"), text


# ---- discovery ---------------------------------------------------------------------


def doc_endpoints():
    """(method, path) of every endpoint in docs/api.md's Endpoints table."""
    doc = (REPO_ROOT / "docs" / "api.md").read_text()
    table = doc.split("## Endpoints", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    out = []
    for row in table.splitlines():
        if not row.startswith("|"):
            continue
        first = row.split("|")[1]
        out += re.findall(r"\b(GET|POST|PUT|DELETE|PATCH) (/[^\s,|]*)", first)
    assert len(out) >= 9, out
    return out


def _norm(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def test_openapi_lists_every_endpoint(server):
    r = server.get("/openapi.json")
    assert r.status_code == 200
    spec = json.loads(r.text)
    assert isinstance(spec, dict) and "openapi" in spec
    assert str(spec["openapi"]).startswith("3.0"), spec["openapi"]
    assert "paths" in spec and "info" in spec
    paths = {_norm(p): v for p, v in spec["paths"].items()}
    for method, path in doc_endpoints():
        assert _norm(path) in paths, f"{method} {path} missing from /openapi.json paths {list(spec['paths'])}"
        assert method.lower() in paths[_norm(path)], f"{method} {path}: {paths[_norm(path)].keys()}"


def test_every_documented_endpoint_answers(server):
    bodies = {"/v1/completions": {"model": MODEL_ID, "prompt": "Hi", "max_tokens": 1},
              "/v1/chat/completions": {"model": MODEL_ID, "max_tokens": 1,
                                       "messages": [{"role": "user", "content": "Hi"}]},
              "/v1/embeddings": {"model": MODEL_ID, "input": "Hi"},
              "/tokenize": {"prompt": "Hi"}, "/detokenize": {"tokens": [504]}}
    for method, path in doc_endpoints():
        p = re.sub(r"\{[^}]*\}", MODEL_ID, path)
        r = httpx.request(method, server.url(p), json=bodies.get(path, {}) if method == "POST" else None,
                          timeout=600)  # a bound on a hang, not a speed assertion
        assert r.status_code not in (404, 405), f"{method} {p}: {r.status_code} {r.text[:300]}"
        assert r.status_code == 200, f"{method} {p}: {r.status_code} {r.text[:300]}"


def test_health(server):
    r = server.get("/health")
    assert r.status_code == 200 and r.json().get("status") == "ok", r.text
