"""Nothing silently ignored (issue 17 item 4): every request field of
/v1/completions and /v1/chat/completions in the OpenAI API reference is
either honoured - a request using it shows its effect - or refused with a
400 whose `param` names it. Requests go through the official `openai`
client, as an application would send them.

FIELDS below is the list from the API reference; the test also checks it
against the installed client's signature, so a field a newer client can
send is classified here before it can pass the server unnoticed.
Contract: docs/api.md ("Request fields").
"""

from __future__ import annotations

import inspect
import json

import openai
import pytest

from serve_util import HANG_S, MODEL_ID, start_server, wait_until

PROMPT = "The capital of France is"
CHAT = [{"role": "user", "content": "Name three colours."}]

# The OpenAI API reference's request fields (create completion / create chat completion).
COMPLETIONS_FIELDS = {
    "model", "prompt", "best_of", "echo", "frequency_penalty", "logit_bias", "logprobs", "max_tokens",
    "n", "presence_penalty", "seed", "stop", "stream", "stream_options", "suffix", "temperature",
    "top_p", "user",
}
CHAT_FIELDS = {
    "messages", "model", "audio", "frequency_penalty", "function_call", "functions", "logit_bias",
    "logprobs", "max_completion_tokens", "max_tokens", "metadata", "modalities", "moderation", "n",
    "parallel_tool_calls", "prediction", "presence_penalty", "prompt_cache_key", "prompt_cache_options",
    "prompt_cache_retention", "reasoning_effort", "response_format", "safety_identifier", "seed",
    "service_tier", "stop", "store", "stream", "stream_options", "temperature", "tool_choice", "tools",
    "top_logprobs", "top_p", "user", "verbosity", "web_search_options",
}
# sqserve's own extensions (sent as extra_body), honoured on both endpoints.
EXTENSIONS = {"top_k", "min_p", "repetition_penalty", "ignore_eos"}


@pytest.fixture(scope="module")
def server():
    s = start_server("--log-format", "json")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    c = server.openai(max_retries=0)
    yield c
    c.close()


def cmpl(client, **kw):
    kw.setdefault("prompt", PROMPT)
    kw.setdefault("max_tokens", 6)
    kw.setdefault("temperature", 0)
    return client.completions.create(model=MODEL_ID, **kw)


def chat(client, **kw):
    kw.setdefault("messages", CHAT)
    kw.setdefault("max_tokens", 6)
    kw.setdefault("temperature", 0)
    return client.chat.completions.create(model=MODEL_ID, **kw)


def refused(fn, field, **kw):
    with pytest.raises(openai.BadRequestError) as e:
        fn(**kw)
    body = e.value.body if isinstance(e.value.body, dict) else {}
    err = body.get("error", body)
    assert err.get("param") == field, (field, e.value.body)


def text(r):
    c = r.choices[0]
    return c.text if hasattr(c, "text") else c.message.content


def first_token(client, server, **kw):
    r = cmpl(client, max_tokens=1, logprobs=0, **kw)
    return r.choices[0].logprobs.tokens[0]


# ---- per field: (endpoint, field) -> check(client, server) -----------------------

def c_best_of(client, server):
    assert len(cmpl(client, n=2, best_of=2, temperature=1, seed=3).choices) == 2
    refused(lambda **k: cmpl(client, **k), "best_of", best_of=3, n=1)


def c_echo(client, server):
    assert cmpl(client, echo=True).choices[0].text.startswith(PROMPT)


def penalty(field):
    def check(client, server):
        rep = "one two one two one two one two one two"
        base = text(cmpl(client, prompt=rep, max_tokens=12, extra_body={"ignore_eos": True}))
        pen = text(cmpl(client, prompt=rep, max_tokens=12, extra_body={"ignore_eos": True}, **{field: 2.0}))
        assert base != pen, (field, base)
        refused(lambda **k: cmpl(client, **k), field, **{field: 3.0})
    return check


def logit_bias(fn):
    def check(client, server):
        kw = {"messages": CHAT} if fn == "chat" else {}
        call = (lambda **k: chat(client, **k)) if fn == "chat" else (lambda **k: cmpl(client, **k))
        ids = server.tokenize(" blue")
        forced = call(max_tokens=1, logit_bias={str(ids[0]): 100}, **kw)
        assert text(forced) == " blue", text(forced)
        base = call(max_tokens=1)
        banned_id = server.tokenize(text(base))[0]
        other = call(max_tokens=1, logit_bias={str(banned_id): -100})
        assert server.tokenize(text(other))[0] != banned_id, text(other)
        refused(call, "logit_bias", logit_bias={"-1": 5})
        refused(call, "logit_bias", logit_bias={str(ids[0]): 101})
    return check


def c_logprobs_cmpl(client, server):
    r = cmpl(client, logprobs=2)
    assert all(len(t) == 2 for t in r.choices[0].logprobs.top_logprobs)


def c_logprobs_chat(client, server):
    r = chat(client, logprobs=True)
    assert r.choices[0].logprobs.content and r.choices[0].logprobs.content[0].top_logprobs == []


def c_top_logprobs(client, server):
    r = chat(client, logprobs=True, top_logprobs=3)
    assert all(len(t.top_logprobs) == 3 for t in r.choices[0].logprobs.content)
    refused(lambda **k: chat(client, **k), "top_logprobs", top_logprobs=3)


def max_tokens(fn, field):
    def check(client, server):
        call = chat if fn == "chat" else cmpl
        r = call(client, extra_body={"ignore_eos": True}, **{field: 3})
        assert r.usage.completion_tokens == 3 and r.choices[0].finish_reason == "length"
    return check


def n_choices(fn):
    def check(client, server):
        assert len((chat if fn == "chat" else cmpl)(client, n=3, temperature=1).choices) == 3
    return check


def seed(fn):
    def check(client, server):
        call = chat if fn == "chat" else cmpl
        a = [text(call(client, temperature=1.5, seed=s, max_tokens=8)) for s in (1, 1, 2, 3, 4)]
        assert a[0] == a[1] and len(set(a[1:])) > 1, a
    return check


def stop(fn):
    def check(client, server):
        call = chat if fn == "chat" else cmpl
        full = text(call(client, max_tokens=8, extra_body={"ignore_eos": True}))
        word = full.strip().split()[0]
        r = call(client, max_tokens=8, stop=[word], extra_body={"ignore_eos": True})
        assert word not in text(r) and r.choices[0].finish_reason == "stop", (full, text(r))
    return check


def stream(fn):
    def check(client, server):
        call = chat if fn == "chat" else cmpl
        chunks = list(call(client, stream=True, max_tokens=4, extra_body={"ignore_eos": True}))
        assert len(chunks) >= 4
    return check


def stream_options(fn):
    def check(client, server):
        call = chat if fn == "chat" else cmpl
        chunks = list(call(client, stream=True, stream_options={"include_usage": True}, max_tokens=3))
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1
        refused(lambda **k: call(client, **k), "stream_options", stream=True,
                stream_options={"include_usage": True, "continuous_usage_stats": True})
    return check


def c_suffix(client, server):
    refused(lambda **k: cmpl(client, **k), "suffix", suffix=" and that is all.")


def temperature(fn):
    def check(client, server):
        call = chat if fn == "chat" else cmpl
        greedy = [text(call(client, temperature=0, seed=s, max_tokens=8)) for s in (1, 2)]
        hot = {text(call(client, temperature=2, seed=s, max_tokens=8)) for s in (1, 2, 3)}
        assert greedy[0] == greedy[1] and (len(hot) > 1 or greedy[0] not in hot), (greedy, hot)
        refused(lambda **k: call(client, **k), "temperature", temperature=2.5)
    return check


def top_p(fn):
    def check(client, server):
        call = chat if fn == "chat" else cmpl
        g = text(call(client, temperature=0, max_tokens=8))
        for s in (1, 2, 3):  # the nucleus holds only the best token: greedy whatever the seed
            assert text(call(client, temperature=2, top_p=1e-9, seed=s, max_tokens=8,
                             extra_body={"top_k": 0, "min_p": 0})) == g
    return check


def user_logged(field):
    def check(client, server):
        tag = f"tester-{field}-17"
        cmpl(client, **({field: tag} if field == "user" else {"extra_body": {field: tag}}))
        def logged():  # the access line is written once the response has left
            lines = [json.loads(x) for x in server.stderr_text(200000).splitlines() if x.startswith("{")]
            return any(x.get("event") == "access" and x.get("user") == tag for x in lines)
        assert wait_until(logged, HANG_S), tag
    return check


def c_store(client, server):
    chat(client, store=False)
    refused(lambda **k: chat(client, **k), "store", store=True)


def c_metadata(client, server):
    refused(lambda **k: chat(client, **k), "metadata", metadata={"k": "v"})


def c_service_tier(client, server):
    assert chat(client, service_tier="auto").service_tier == "default"
    refused(lambda **k: chat(client, **k), "service_tier", service_tier="flex")


def refuse(field, value):
    def check(client, server):
        refused(lambda **k: chat(client, **k), field, **{field: value})
    return check


def c_model(client, server):
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such-model", prompt=PROMPT, max_tokens=1)


def c_prompt(client, server):
    assert text(cmpl(client, prompt="1, 2, 3,")) != text(cmpl(client, prompt="Paris is"))


def c_messages(client, server):
    a = text(chat(client, messages=[{"role": "user", "content": "Say hello."}]))
    b = text(chat(client, messages=[{"role": "user", "content": "Count to five."}]))
    assert a != b


def ext_top_k(client, server):
    g = text(cmpl(client, max_tokens=8))
    for s in (1, 2, 3):
        assert text(cmpl(client, temperature=2, seed=s, max_tokens=8, extra_body={"top_k": 1})) == g


def ext_min_p(client, server):
    g = text(cmpl(client, max_tokens=8))
    for s in (1, 2, 3):
        assert text(cmpl(client, temperature=2, seed=s, max_tokens=8,
                         extra_body={"min_p": 1.0, "top_k": 0, "top_p": 1})) == g


def ext_repetition(client, server):
    rep = "one two one two one two one two one two"
    a = text(cmpl(client, prompt=rep, max_tokens=12, extra_body={"ignore_eos": True}))
    b = text(cmpl(client, prompt=rep, max_tokens=12, extra_body={"ignore_eos": True, "repetition_penalty": 3.0}))
    assert a != b


def ext_ignore_eos(client, server):
    r = chat(client, max_tokens=200, messages=[{"role": "user", "content": "Say hi."}])
    assert r.choices[0].finish_reason == "stop", "the model should stop by itself on this prompt"
    r = chat(client, max_tokens=r.usage.completion_tokens + 5, messages=[{"role": "user", "content": "Say hi."}],
             extra_body={"ignore_eos": True})
    assert r.choices[0].finish_reason == "length"


def grammar_json(client, server):
    # a schema whose every valid output is short, so the tiny model cannot run
    # out of tokens inside it (json_object allows endless nesting)
    schema = {"type": "object", "properties": {"a": {"type": "boolean"}}, "required": ["a"],
              "additionalProperties": False}
    r = chat(client, max_tokens=64, messages=[{"role": "user", "content": "Give a JSON object with a key 'a'."}],
             response_format={"type": "json_schema", "json_schema": {"name": "t", "schema": schema, "strict": True}})
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(text(r))["a"], bool)


def grammar_field(client, server):
    r = cmpl(client, max_tokens=4, extra_body={"grammar": 'root ::= "yes" | "no"'})
    assert text(r) in ("yes", "no")


TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def grammar_tools(client, server):
    r = chat(client, max_tokens=64, tools=[TOOL], tool_choice="required",
             messages=[{"role": "user", "content": "Weather in Paris?"}])
    assert r.choices[0].message.tool_calls


def grammar_parallel(client, server):
    r = chat(client, max_tokens=64, tools=[TOOL], tool_choice="required", parallel_tool_calls=False,
             messages=[{"role": "user", "content": "Weather in Paris and Rome?"}])
    assert len(r.choices[0].message.tool_calls) == 1


CASES = {
    ("completions", "model"): c_model,
    ("completions", "prompt"): c_prompt,
    ("completions", "best_of"): c_best_of,
    ("completions", "echo"): c_echo,
    ("completions", "frequency_penalty"): penalty("frequency_penalty"),
    ("completions", "presence_penalty"): penalty("presence_penalty"),
    ("completions", "logit_bias"): logit_bias("cmpl"),
    ("completions", "logprobs"): c_logprobs_cmpl,
    ("completions", "max_tokens"): max_tokens("cmpl", "max_tokens"),
    ("completions", "n"): n_choices("cmpl"),
    ("completions", "seed"): seed("cmpl"),
    ("completions", "stop"): stop("cmpl"),
    ("completions", "stream"): stream("cmpl"),
    ("completions", "stream_options"): stream_options("cmpl"),
    ("completions", "suffix"): c_suffix,
    ("completions", "temperature"): temperature("cmpl"),
    ("completions", "top_p"): top_p("cmpl"),
    ("completions", "user"): user_logged("user"),
    ("chat", "messages"): c_messages,
    ("chat", "model"): c_model,
    ("chat", "audio"): refuse("audio", {"voice": "alloy", "format": "mp3"}),
    ("chat", "frequency_penalty"): penalty("frequency_penalty"),
    ("chat", "presence_penalty"): penalty("presence_penalty"),
    ("chat", "function_call"): refuse("function_call", "auto"),
    ("chat", "functions"): refuse("functions", [TOOL["function"]]),
    ("chat", "logit_bias"): logit_bias("chat"),
    ("chat", "logprobs"): c_logprobs_chat,
    ("chat", "top_logprobs"): c_top_logprobs,
    ("chat", "max_completion_tokens"): max_tokens("chat", "max_completion_tokens"),
    ("chat", "max_tokens"): max_tokens("chat", "max_tokens"),
    ("chat", "metadata"): c_metadata,
    ("chat", "modalities"): refuse("modalities", ["text", "audio"]),
    ("chat", "moderation"): refuse("moderation", {"type": "auto"}),
    ("chat", "n"): n_choices("chat"),
    ("chat", "prediction"): refuse("prediction", {"type": "content", "content": "Red, green"}),
    ("chat", "prompt_cache_key"): refuse("prompt_cache_key", "k1"),
    ("chat", "prompt_cache_options"): refuse("prompt_cache_options", {"a": 1}),
    ("chat", "prompt_cache_retention"): refuse("prompt_cache_retention", "24h"),
    ("chat", "reasoning_effort"): refuse("reasoning_effort", "low"),
    ("chat", "safety_identifier"): user_logged("safety_identifier"),
    ("chat", "seed"): seed("chat"),
    ("chat", "service_tier"): c_service_tier,
    ("chat", "stop"): stop("chat"),
    ("chat", "store"): c_store,
    ("chat", "stream"): stream("chat"),
    ("chat", "stream_options"): stream_options("chat"),
    ("chat", "temperature"): temperature("chat"),
    ("chat", "top_p"): top_p("chat"),
    ("chat", "user"): user_logged("user"),
    ("chat", "verbosity"): refuse("verbosity", "low"),
    ("chat", "web_search_options"): refuse("web_search_options", {}),
    ("chat", "response_format"): grammar_json,
    ("chat", "tools"): grammar_tools,
    ("chat", "tool_choice"): grammar_tools,
    ("chat", "parallel_tool_calls"): grammar_parallel,
    ("completions", "grammar"): grammar_field,
    ("ext", "top_k"): ext_top_k,
    ("ext", "min_p"): ext_min_p,
    ("ext", "repetition_penalty"): ext_repetition,
    ("ext", "ignore_eos"): ext_ignore_eos,
}


def test_field_lists_match_the_client():
    """Every field the installed openai client can send is classified here."""
    for fn, listed in ((openai.resources.completions.Completions.create, COMPLETIONS_FIELDS),
                       (openai.resources.chat.completions.Completions.create, CHAT_FIELDS)):
        params = set(inspect.signature(fn).parameters) - {"self", "extra_headers", "extra_query",
                                                          "extra_body", "timeout"}
        assert params <= listed, f"fields the client sends that this test does not classify: {params - listed}"


def test_every_field_has_a_case():
    want = {("completions", f) for f in COMPLETIONS_FIELDS} | {("chat", f) for f in CHAT_FIELDS} | \
           {("ext", f) for f in EXTENSIONS}
    assert want <= set(CASES), sorted(want - set(CASES))


@pytest.mark.parametrize("key", sorted(CASES), ids=lambda k: f"{k[0]}.{k[1]}")
def test_field_honoured_or_refused(client, server, key):
    CASES[key](client, server)


@pytest.mark.parametrize("path,body", [
    ("/v1/completions", {"prompt": "x", "max_tokens": 1, "use_beam_search": True}),
    ("/v1/chat/completions", {"messages": CHAT, "max_tokens": 1, "foo": {"bar": 1}}),
    ("/v1/chat/completions", {"messages": CHAT, "suffix": "x"}),
    ("/v1/embeddings", {"input": "x", "truncate_prompt_tokens": 4}),
])
def test_unknown_fields_are_refused_by_name(server, path, body):
    body = {"model": MODEL_ID, **body}
    r = server.post(path, body)
    extra = [k for k in body if k not in ("model", "prompt", "messages", "max_tokens", "input")][0]
    assert r.status_code == 400 and r.json()["error"]["param"] == extra, r.text


def test_max_tokens_zero_only_for_prompt_scoring(server):
    r = server.post("/v1/completions", {"model": MODEL_ID, "prompt": PROMPT, "max_tokens": 0})
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens", r.text
