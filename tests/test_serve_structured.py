"""Structured output through the official `openai` client: response_format
json_object / json_schema (strict), `client.chat.completions.parse` with a
Pydantic model, the `grammar` extension field (chat and completions), with
streaming, n > 1, stop strings and max_tokens, and the 400s for schemas and
grammars the server cannot honour. Contract: docs/api.md "Structured output".

The default model is tiny: these tests rely on the constraint, not on the
model. Schemas here bound every string and array so that the grammar itself
ends the output (a finite language), whatever tokens the model prefers.
"""

from __future__ import annotations

import json
import re
from enum import Enum
from typing import List, Literal

import openai
import pytest
from pydantic import BaseModel, Field

from schema_check import problems
from serve_util import MODEL_ID, start_server, stream_raw

ASK = [{"role": "user", "content": "Describe a pet as JSON."}]

PET_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 10},
        "age": {"type": "integer"},
        "weight": {"type": "number"},
        "kind": {"enum": ["cat", "dog", "fish"]},
        "owner": {"anyOf": [{"$ref": "#/$defs/person"}, {"type": "null"}]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 3},
        "indoor": {"type": "boolean"},
    },
    "required": ["name", "age", "weight", "kind", "owner", "tags", "indoor"],
    "additionalProperties": False,
    "$defs": {"person": {"type": "object", "properties": {"first": {"type": "string", "maxLength": 8}},
                         "required": ["first"], "additionalProperties": False}},
}


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


def schema_format(schema, name="pet"):
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


# ---- Pydantic through chat.completions.parse -----------------------------------------


class Color(str, Enum):
    red = "red"
    green = "green"
    blue = "blue"


class Pet(BaseModel):
    name: str = Field(max_length=12)
    age: int
    color: Color
    vaccinated: bool
    tags: List[Literal["cute", "loud", "old"]] = Field(max_length=3)


def test_parse_with_pydantic_model(client):
    r = client.chat.completions.parse(model=MODEL_ID, messages=ASK, response_format=Pet,
                                      max_tokens=300, temperature=0)
    c = r.choices[0]
    assert c.finish_reason == "stop", c
    assert isinstance(c.message.parsed, Pet), c.message
    assert c.message.parsed == Pet.model_validate_json(c.message.content)


# ---- json_schema ---------------------------------------------------------------------


def test_json_schema_strict_validates(client):
    """Sampled at temperature 1 with several seeds: every choice validates."""
    r = client.chat.completions.create(model=MODEL_ID, messages=ASK, response_format=schema_format(PET_SCHEMA),
                                       max_tokens=400, temperature=1.0, n=3, seed=7)
    assert len(r.choices) == 3
    for c in r.choices:
        assert c.finish_reason == "stop", c
        value = json.loads(c.message.content)
        assert problems(value, PET_SCHEMA) == [], (c.message.content, problems(value, PET_SCHEMA))


def test_json_schema_streaming(server):
    body = {"model": MODEL_ID, "messages": ASK, "response_format": schema_format(PET_SCHEMA),
            "max_tokens": 400, "temperature": 0.7, "seed": 3, "stream": True}
    chunks, done, resp = stream_raw(server, "/v1/chat/completions", body)
    assert resp.status_code == 200 and done
    text = "".join(ch["choices"][0]["delta"].get("content") or "" for ch in chunks if ch["choices"])
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert problems(json.loads(text), PET_SCHEMA) == [], text


def test_json_schema_cut_short_says_length(client):
    r = client.chat.completions.create(model=MODEL_ID, messages=ASK, response_format=schema_format(PET_SCHEMA),
                                       max_tokens=4, temperature=0)
    c = r.choices[0]
    assert c.finish_reason == "length"
    assert r.usage.completion_tokens == 4
    with pytest.raises(json.JSONDecodeError):
        json.loads(c.message.content)
    assert c.message.content.startswith("{")


def test_json_schema_recursive_ref(client):
    tree = {"$defs": {"node": {"type": "object", "properties": {
        "v": {"enum": [1, 2]},
        "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 1}},
        "required": ["v", "kids"], "additionalProperties": False}},
        "$ref": "#/$defs/node"}
    r = client.chat.completions.create(model=MODEL_ID, messages=ASK, response_format=schema_format(tree, "tree"),
                                       max_tokens=200, temperature=0)
    c = r.choices[0]
    if c.finish_reason == "stop":
        assert problems(json.loads(c.message.content), tree) == [], c.message.content
    else:  # a deep tree may run out of tokens; what was written is still a prefix of one
        assert c.finish_reason == "length" and c.message.content.startswith("{")


# ---- json_object ---------------------------------------------------------------------


def test_json_object_is_json(client):
    msgs = [{"role": "user", "content": "Reply with a JSON object whose key 'answer' is 'yes'."}]
    r = client.chat.completions.create(model=MODEL_ID, messages=msgs, response_format={"type": "json_object"},
                                       max_tokens=200, temperature=0)
    c = r.choices[0]
    assert c.finish_reason == "stop", c
    assert isinstance(json.loads(c.message.content), dict), c.message.content


def test_json_object_changes_prose_to_json(client):
    """The control: a question the model answers in prose unconstrained is
    answered with a JSON object under json_object (cut by max_tokens here:
    reported as "length")."""
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    free = client.chat.completions.create(model=MODEL_ID, messages=msgs, max_tokens=30, temperature=0)
    assert not free.choices[0].message.content.lstrip().startswith("{"), free.choices[0].message.content
    r = client.chat.completions.create(model=MODEL_ID, messages=msgs, response_format={"type": "json_object"},
                                       max_tokens=30, temperature=0)
    c = r.choices[0]
    assert c.message.content.startswith("{"), c.message.content
    if c.finish_reason == "stop":
        json.loads(c.message.content)
    else:
        assert c.finish_reason == "length" and r.usage.completion_tokens == 30


def test_response_format_text_is_plain(client):
    r = client.chat.completions.create(model=MODEL_ID, messages=ASK, response_format={"type": "text"},
                                       max_tokens=5, temperature=0)
    assert r.choices[0].finish_reason == "length"


# ---- grammar ---------------------------------------------------------------------------


def test_grammar_chat_n_choices(client):
    g = 'root ::= ("yes" | "no" | "maybe") "!" [0-9]{2}\n'
    r = client.chat.completions.create(model=MODEL_ID, messages=ASK, max_tokens=20, temperature=1.0, n=4,
                                       seed=11, extra_body={"grammar": g})
    assert len(r.choices) == 4
    for c in r.choices:
        assert re.fullmatch(r"(yes|no|maybe)![0-9]{2}", c.message.content), c.message.content
        assert c.finish_reason == "stop"


def test_grammar_completions_and_stream(server, client):
    g = 'root ::= "[" digit ("," digit){2} "]"\ndigit ::= [0-9]\n'
    r = client.completions.create(model=MODEL_ID, prompt="Three digits:", max_tokens=20, temperature=0,
                                  extra_body={"grammar": g})
    assert re.fullmatch(r"\[\d(,\d){2}\]", r.choices[0].text), r.choices[0].text
    assert r.choices[0].finish_reason == "stop"
    body = {"model": MODEL_ID, "prompt": "Three digits:", "max_tokens": 20, "temperature": 0, "grammar": g,
            "stream": True}
    chunks, done, resp = stream_raw(server, "/v1/completions", body)
    assert done and "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == r.choices[0].text


def test_grammar_with_stop_string(client):
    g = 'root ::= "abc" "def"\n'
    r = client.completions.create(model=MODEL_ID, prompt="x", max_tokens=20, temperature=0, stop=["d"],
                                  extra_body={"grammar": g})
    assert r.choices[0].text == "abc" and r.choices[0].finish_reason == "stop"


def test_grammar_unicode(client):
    g = 'root ::= "caf" [\\u00e9\\u00e8] " " [\\u4e00-\\u9fff]{2}\n'
    r = client.completions.create(model=MODEL_ID, prompt="Coffee:", max_tokens=30, temperature=0.8, seed=1,
                                  extra_body={"grammar": g})
    assert re.fullmatch(r"caf[éè] [\u4e00-\u9fff]{2}", r.choices[0].text), r.choices[0].text


# ---- refusals ----------------------------------------------------------------------------


def _bad(client, **kw):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL_ID, messages=ASK, max_tokens=5, **kw)
    return e.value.body


@pytest.mark.parametrize("schema,word", [
    ({"type": "string", "pattern": "^a+$"}, "pattern"),
    ({"type": "integer", "minimum": 0}, "minimum"),
    ({"type": "string", "format": "email"}, "format"),
    ({"type": "object", "properties": {"a": {"type": "array", "uniqueItems": True}}}, "uniqueItems"),
    ({"$ref": "#/$defs/nope"}, "does not resolve"),
    ({"type": "object", "required": ["x"], "properties": {}}, "'x'"),
])
def test_unsupported_schema_is_400(client, schema, word):
    body = _bad(client, response_format=schema_format(schema))
    assert body["param"] == "response_format" and word in body["message"], body


@pytest.mark.parametrize("grammar,word", [
    ('root ::= "a\n', "unterminated literal"),
    ("root ::= foo\n", "'foo' is used but not defined"),
    ('start ::= "a"\n', "no 'root'"),
    ('root ::= root "a" | "b"\n', "left-recursive"),
    ('root ::= "a"\nroot ::= "b"\n', "defined twice"),
    ('root ::= "a" {2,1}\n', "grammar line 1"),
    ("", "'grammar'"),
])
def test_bad_grammar_is_400(client, grammar, word):
    body = _bad(client, extra_body={"grammar": grammar})
    assert body["param"] == "grammar" and word in body["message"], body


def test_bad_response_format_is_400(client):
    for rf, word in [({"type": "yaml"}, "type"), ({"type": "json_schema"}, "json_schema"),
                     ({"type": "json_schema", "json_schema": {"schema": {}}}, "name"),
                     ({"type": "json_object", "extra": 1}, "extra"),
                     ("json", "object")]:
        body = _bad(client, response_format=rf)
        assert body["param"] == "response_format" and word in body["message"], (rf, body)
    body = _bad(client, response_format={"type": "json_object"}, extra_body={"grammar": 'root ::= "a"\n'})
    assert "together" in body["message"], body
