"""Tool calling through the official `openai` client: tools in the prompt,
tool_choice "required" and a named function enforced by the grammar, the
reply parsed into message.tool_calls (and streamed as delta.tool_calls),
a two-turn loop with a role "tool" result, and the 400s. The test model's
template is ChatML, so this is the Hermes / Qwen format; the Llama-3 format
is covered by tests/unit/test_tools.c. Contract: docs/api.md "Tool calls".
"""

from __future__ import annotations

import json

import openai
import pytest

from schema_check import problems
from serve_util import MODEL_ID, start_server, stream_raw

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}, "unit": {"enum": ["c", "f"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
CLOCK = {"type": "function", "function": {"name": "get_time", "description": "The time now in a time zone",
                                          "parameters": {"type": "object",
                                                         "properties": {"zone": {"enum": ["UTC", "CET"]}},
                                                         "required": ["zone"], "additionalProperties": False}}}
TOOLS = [WEATHER, CLOCK]
PARAMS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def server():
    s = start_server()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    c = server.openai()
    yield c
    c.close()


def check_call(tc, names=PARAMS):
    assert tc.type == "function" and tc.id.startswith("call_") and len(tc.id) > 10, tc
    assert tc.function.name in names, tc
    args = json.loads(tc.function.arguments)
    assert problems(args, PARAMS[tc.function.name]) == [], (tc.function.arguments, problems(args, PARAMS[tc.function.name]))


def test_tools_reach_the_prompt(client):
    plain = client.chat.completions.create(model=MODEL_ID, messages=ASK, max_tokens=1, temperature=0)
    with_tools = client.chat.completions.create(model=MODEL_ID, messages=ASK, tools=TOOLS, tool_choice="none",
                                                max_tokens=1, temperature=0)
    auto = client.chat.completions.create(model=MODEL_ID, messages=ASK, tools=TOOLS, max_tokens=1, temperature=0)
    # "none" leaves the tools out of the prompt; "auto" (the default with tools) lists them
    assert with_tools.usage.prompt_tokens == plain.usage.prompt_tokens
    assert auto.usage.prompt_tokens > plain.usage.prompt_tokens + 100


def test_required_gives_tool_calls(client):
    r = client.chat.completions.create(model=MODEL_ID, messages=ASK, tools=TOOLS, tool_choice="required",
                                       parallel_tool_calls=False, max_tokens=120, temperature=0)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls", c
    assert len(c.message.tool_calls) == 1
    check_call(c.message.tool_calls[0])
    assert c.message.content is None


def test_named_function_is_forced(client):
    r = client.chat.completions.create(model=MODEL_ID, messages=ASK, tools=TOOLS,
                                       tool_choice={"type": "function", "function": {"name": "get_time"}},
                                       max_tokens=120, temperature=0.9, n=3, seed=5)
    for c in r.choices:
        assert c.message.tool_calls, c
        for tc in c.message.tool_calls:
            assert tc.function.name == "get_time"
            check_call(tc)


def test_parallel_calls_each_valid(client):
    """With parallel calls allowed the model may write several; every
    complete one is a listed function with valid arguments."""
    r = client.chat.completions.create(model=MODEL_ID, messages=ASK, tools=TOOLS, tool_choice="required",
                                       max_tokens=100, temperature=0)
    c = r.choices[0]
    assert c.message.tool_calls
    for tc in c.message.tool_calls:
        check_call(tc)
    ids = [tc.id for tc in c.message.tool_calls]
    assert len(set(ids)) == len(ids)
    assert c.finish_reason in ("tool_calls", "length")


def test_two_turn_tool_loop(client, server):
    r = client.chat.completions.create(model=MODEL_ID, messages=ASK, tools=TOOLS, tool_choice="required",
                                       parallel_tool_calls=False, max_tokens=120, temperature=0)
    msg = r.choices[0].message
    tc = msg.tool_calls[0]
    check_call(tc)
    history = ASK + [msg.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": tc.id, "content": json.dumps({"temperature": 21, "sky": "sunny"})}]
    r2 = client.chat.completions.create(model=MODEL_ID, messages=history, tools=TOOLS, max_tokens=40, temperature=0)
    c2 = r2.choices[0]
    assert c2.finish_reason in ("stop", "length", "tool_calls")
    assert c2.message.content or c2.message.tool_calls
    # the call and its result are in the prompt, as the template writes them
    assert r2.usage.prompt_tokens > r.usage.prompt_tokens + 20
    tok = server.post("/tokenize", {"messages": history}).json()["tokens"]
    text = server.post("/detokenize", {"tokens": tok}).json()["prompt"]
    assert "<tool_call>\n{\"name\":\"" + tc.function.name + "\"" in text, text
    assert "<tool_response>\n{\"temperature\": 21" in text, text


def test_streamed_tool_calls(server):
    body = {"model": MODEL_ID, "messages": ASK, "tools": TOOLS, "tool_choice": "required",
            "parallel_tool_calls": False, "max_tokens": 120, "temperature": 0, "stream": True}
    chunks, done, resp = stream_raw(server, "/v1/chat/completions", body)
    assert resp.status_code == 200 and done
    deltas = [ch["choices"][0]["delta"] for ch in chunks if ch["choices"]]
    calls = [d["tool_calls"] for d in deltas if d.get("tool_calls")]
    assert calls, deltas
    first = calls[0][0]
    assert first["index"] == 0 and first["id"].startswith("call_") and first["type"] == "function"
    name = first["function"]["name"]
    args = "".join(c[0]["function"].get("arguments", "") for c in calls)
    assert problems(json.loads(args), PARAMS[name]) == []
    assert not any(d.get("content") for d in deltas), deltas
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_streamed_tool_calls_with_client(client):
    """The openai client's own stream accumulation sees the same call."""
    stream = client.chat.completions.create(model=MODEL_ID, messages=ASK, tools=TOOLS, tool_choice="required",
                                            parallel_tool_calls=False, max_tokens=120, temperature=0, stream=True)
    name, args, finish = None, "", None
    for chunk in stream:
        for ch in chunk.choices:
            for tc in ch.delta.tool_calls or []:
                name = tc.function.name or name
                args += tc.function.arguments or ""
            finish = ch.finish_reason or finish
    assert finish == "tool_calls" and name in PARAMS
    assert problems(json.loads(args), PARAMS[name]) == []


# ---- refusals ----------------------------------------------------------------------------


def _bad(client, **kw):
    kw.setdefault("messages", ASK)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL_ID, max_tokens=5, **kw)
    return e.value.body


def test_bad_tools_are_400(client):
    cases = [
        (dict(tools=[{"type": "function", "function": {"name": "bad name!"}}]), "tools"),
        (dict(tools=[{"type": "retrieval"}]), "tools"),
        (dict(tools=[WEATHER, WEATHER]), "tools"),
        (dict(tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "string", "pattern": "x"}}}],
              tool_choice="required"), "tools"),
        (dict(tools=TOOLS, tool_choice="always"), "tool_choice"),
        (dict(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}}), "tool_choice"),
        (dict(tool_choice="required"), "tool_choice"),
        (dict(tools=TOOLS, parallel_tool_calls="yes"), "parallel_tool_calls"),
        (dict(tools=TOOLS, response_format={"type": "json_object"}), "response_format"),
        (dict(messages=ASK + [{"role": "tool", "content": "x"}]), "messages"),
        (dict(messages=[{"role": "user", "content": "x", "tool_calls": []}]), "messages"),
        (dict(messages=[{"role": "assistant", "content": None,
                         "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f"}}]}]), "messages"),
    ]
    for kw, param in cases:
        body = _bad(client, **kw)
        assert body["param"] == param, (kw, body)


def test_tools_on_completions_is_400(server):
    r = server.post("/v1/completions", {"model": MODEL_ID, "prompt": "x", "tools": TOOLS})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tools"


# ---- the Llama-3.1 format, end to end on a tiny random model --------------------------

LLAMA3_TEMPLATE = ("{{ '<|begin_of_text|>' }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + "
                   "'<|end_header_id|>\\n\\n' + m['content'] + '<|eot_id|>' }}{% endfor %}")


@pytest.fixture(scope="module")
def llama3(tmp_path_factory):
    """A random 2-layer model whose template is Llama-3's: its output means
    nothing, so whatever call comes back is the grammar's doing."""
    from gguf_craft import tiny_llama
    path = tmp_path_factory.mktemp("llama3") / "tiny-llama3.gguf"
    tiny_llama(path, chat_template=LLAMA3_TEMPLATE, ctx=4096)
    mp = pytest.MonkeyPatch()
    mp.setenv("SQSERVE_TEST_MODEL", str(path))
    try:
        s = start_server()
    finally:
        mp.undo()
    yield s, path.stem
    s.stop()


def test_llama3_forced_call(llama3):
    server, model = llama3
    body = {"model": model, "messages": ASK, "tools": [CLOCK], "tool_choice": "required", "max_tokens": 300,
            "temperature": 0}
    r = server.post("/v1/chat/completions", body)
    assert r.status_code == 200, r.text
    c = r.json()["choices"][0]
    assert c["finish_reason"] == "tool_calls", c
    (tc,) = c["message"]["tool_calls"]
    assert tc["function"]["name"] == "get_time" and tc["id"].startswith("call_")
    assert problems(json.loads(tc["function"]["arguments"]), PARAMS["get_time"]) == []
    # the tools are listed at the top of the first user turn, in Llama-3.1's words
    plain = server.post("/v1/chat/completions", dict(body, tools=None, tool_choice=None, max_tokens=1)).json()
    assert r.json()["usage"]["prompt_tokens"] > plain["usage"]["prompt_tokens"] + 100
    # a second turn: the call and an ipython result are rendered
    hist = ASK + [c["message"], {"role": "tool", "tool_call_id": tc["id"], "content": "12:00"}]
    tok = server.post("/tokenize", {"messages": hist}).json()["tokens"]
    text = server.post("/detokenize", {"tokens": tok}).json()["prompt"]
    assert '<|start_header_id|>assistant<|end_header_id|>\n\n{"name":"get_time","parameters":' in text, text
    assert "<|start_header_id|>ipython<|end_header_id|>\n\n12:00<|eot_id|>" in text, text
