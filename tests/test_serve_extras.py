"""Issue 17 items 1, 5 and 6: serving defaults (--temp/--top-k/... and
SQSERVE_* env, --default-max-tokens, --max-tokens-limit, progress lines),
/v1/embeddings, CORS, HEAD, OPTIONS, X-Request-Id, cached_tokens, prompt
logprobs with echo, --version, exact status codes in the request counter,
--metrics-compat vllm and the JSON access log. Client-facing features go
through the official `openai` client; headers through raw HTTP.
Contract: docs/api.md.
"""

from __future__ import annotations

import base64
import json
import math
import re
import socket
import struct
import subprocess
import threading

import openai
import pytest

from serve_util import HANG_S, MODEL_ID, binary_path, httpx, start_server, wait_until

ORIGIN = "https://app.example"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
HEX32 = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture(scope="module")
def server():
    # defaults from the environment (greedy) and from flags
    s = start_server("--log-format", "json", "--default-max-tokens", "5", "--max-tokens-limit", "40",
                     "--progress-every", "4", "--cors-origin", ORIGIN, "--metrics-compat", "vllm",
                     "--api-key", "k17", env={"SQSERVE_TEMP": "0"})
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    c = server.openai(api_key="k17")
    yield c
    c.close()


def log_lines(server):
    return [json.loads(x) for x in server.stderr_text(400000).splitlines() if x.startswith("{")]


def access_line(server, rid):
    """The access log line of request `rid` (written once the response has left)."""
    def find():
        return next((x for x in log_lines(server) if x.get("event") == "access" and x.get("request_id") == rid), None)
    line = wait_until(find, HANG_S)
    assert line, f"no access line for {rid}: {server.stderr_text(2000)}"
    return line


AUTH = {"Authorization": "Bearer k17"}

# ---- defaults ------------------------------------------------------------------------


def test_env_default_temperature_and_default_max_tokens(client):
    """SQSERVE_TEMP=0: requests that do not say are greedy (identical, and equal
    to an explicit temperature 0); chat without max_tokens stops at
    --default-max-tokens."""
    msgs = [{"role": "user", "content": "Write a long story about a dragon."}]
    a = client.chat.completions.create(model=MODEL_ID, messages=msgs, extra_body={"ignore_eos": True})
    b = client.chat.completions.create(model=MODEL_ID, messages=msgs, extra_body={"ignore_eos": True}, seed=9)
    g = client.chat.completions.create(model=MODEL_ID, messages=msgs, temperature=0, max_tokens=5)
    assert a.usage.completion_tokens == 5 and a.choices[0].finish_reason == "length"
    assert a.choices[0].message.content == b.choices[0].message.content == g.choices[0].message.content


def test_max_tokens_limit(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL_ID, prompt="x", max_tokens=41)
    assert e.value.body["param"] == "max_tokens" and "--max-tokens-limit" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "x"}],
                                       max_completion_tokens=41)
    assert e.value.body["param"] == "max_completion_tokens"


def test_serve_help_lists_defaults():
    out = subprocess.run([str(binary_path()), "serve", "--help"], capture_output=True, text=True,
                         timeout=HANG_S).stdout
    for flag, default, env in (("--temp", "0.8", "SQSERVE_TEMP"), ("--top-k", "40", "SQSERVE_TOP_K"),
                               ("--top-p", "0.95", "SQSERVE_TOP_P"), ("--min-p", "0.05", "SQSERVE_MIN_P"),
                               ("--request-timeout", "300", "SQSERVE_REQUEST_TIMEOUT"),
                               ("--default-max-tokens", "512", "SQSERVE_DEFAULT_MAX_TOKENS")):
        line = next(x for x in out.splitlines() if flag + " " in x)
        assert f"[{default}]" in line and env in line, line


def test_progress_lines(client, server):
    r = client.with_options(max_retries=0).completions.with_raw_response.create(
        model=MODEL_ID, prompt="Once", max_tokens=12, extra_body={"ignore_eos": True})
    rid = r.headers["x-request-id"]
    access_line(server, rid)
    prog = [x for x in log_lines(server) if x.get("event") == "progress" and x.get("request_id") == rid]
    assert prog, "no progress line"
    for p in prog:
        assert 4 <= p["tokens"] <= 12 and p["tokens_per_s"] > 0 and RFC3339.match(p["ts"]), p


def test_progress_lines_streaming(client, server):
    with client.chat.completions.with_streaming_response.create(
            model=MODEL_ID, messages=[{"role": "user", "content": "Count"}], max_tokens=10, stream=True,
            extra_body={"ignore_eos": True}) as r:
        rid = r.headers["x-request-id"]
        chunks = list(r.iter_lines())
    assert chunks and access_line(server, rid)["status"] == 200
    prog = [x for x in log_lines(server) if x.get("event") == "progress" and x.get("request_id") == rid]
    assert prog and all(4 <= p["tokens"] <= 10 for p in prog), prog


# ---- version -------------------------------------------------------------------------


def test_version_everywhere(server):
    out = subprocess.run([str(binary_path()), "--version"], capture_output=True, text=True, timeout=HANG_S)
    assert out.returncode == 0 and out.stdout.startswith("sqserve ")
    v = out.stdout.split()[1]
    assert server.get("/version").json() == {"version": v}
    assert server.get("/health").json() == {"status": "ok", "version": v}


# ---- HEAD, OPTIONS, CORS, X-Request-Id -------------------------------------------------


@pytest.mark.parametrize("path", ["/health", "/metrics", "/version", "/openapi.json", "/v1/models"])
def test_head_like_get(server, path):
    g = httpx.get(server.url(path), headers=AUTH, timeout=HANG_S)
    h = httpx.head(server.url(path), headers=AUTH, timeout=HANG_S)
    assert g.status_code == h.status_code == 200 and h.content == b""
    assert h.headers["content-type"] == g.headers["content-type"]


def test_preflight_without_key(server):
    r = httpx.options(server.url("/v1/chat/completions"), timeout=HANG_S,
                      headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                               "Access-Control-Request-Headers": "authorization, content-type"})
    assert r.status_code == 204, r.text
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in r.headers["access-control-allow-methods"]
    allow = r.headers["access-control-allow-headers"].lower()
    assert "authorization" in allow and "content-type" in allow


def test_cors_on_responses(server):
    ok = server.post("/v1/completions", {"model": MODEL_ID, "prompt": "x", "max_tokens": 1},
                     headers={"Origin": ORIGIN, **AUTH})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == ORIGIN
    assert "x-request-id" in ok.headers["access-control-expose-headers"].lower()
    err = server.get("/v1/models", headers={"Origin": ORIGIN})  # 401: browsers must read it too
    assert err.status_code == 401 and err.headers["access-control-allow-origin"] == ORIGIN
    other = server.get("/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_cors_off_by_default_and_star():
    with start_server() as s:
        r = httpx.options(s.url("/v1/completions"), headers={"Origin": ORIGIN}, timeout=HANG_S)
        assert r.status_code == 204 and r.headers["allow"] == "POST, OPTIONS"
        assert "access-control-allow-origin" not in r.headers
        h = s.get("/health", headers={"Origin": ORIGIN, "X-Request-Id": "text-log-17"})
        assert "access-control-allow-origin" not in h.headers
        text_line = re.compile(r"^access \d{4}-\d\d-\d\dT[\d:.]+Z text-log-17 GET /health 200 [\d.]+ms ok$", re.M)
        assert wait_until(lambda: text_line.search(s.stderr_text(100000)), HANG_S), s.stderr_text(2000)
    with start_server("--cors-origin", "*") as s:
        assert s.get("/health", headers={"Origin": ORIGIN}).headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize("given,echoed", [("req-17.a:b_c", True), ("bad id", False), ("x" * 65, False),
                                          ("a\u00e9".encode(), False), ("a\"b<>", False), (None, False)])
def test_request_id(server, given, echoed):
    h = dict(AUTH)
    if given is not None:
        h["X-Request-Id"] = given
    r = server.post("/v1/completions", {"model": MODEL_ID, "prompt": "x", "max_tokens": 2}, headers=h)
    rid = r.headers["x-request-id"]
    assert rid == given if echoed else HEX32.match(rid), rid
    line = access_line(server, rid)
    assert RFC3339.match(line["ts"]) and line["status"] == 200 and line["model"] == MODEL_ID
    assert line["prompt_tokens"] >= 1 and line["completion_tokens"] == 2 and line["cause"] is None, line


# ---- cached tokens, prompt logprobs ---------------------------------------------------------


def test_cached_tokens(client):
    system = "You are a careful assistant. " * 20
    msgs = [{"role": "system", "content": system}, {"role": "user", "content": "Hi"}]
    a = client.chat.completions.create(model=MODEL_ID, messages=msgs, max_tokens=1)
    b = client.chat.completions.create(model=MODEL_ID, messages=msgs, max_tokens=1)
    assert a.usage.prompt_tokens_details.cached_tokens == 0
    c = b.usage.prompt_tokens_details.cached_tokens
    assert 16 <= c < b.usage.prompt_tokens and c % 16 == 0, b.usage


def test_prompt_logprobs_with_echo(client, server):
    """echo + logprobs scores the prompt: the first token's logprob is null, the
    others equal what the model gave those tokens when it generated them."""
    ids = server.tokenize("The quick brown fox")
    g = client.completions.create(model=MODEL_ID, prompt=[ids], max_tokens=8, temperature=0, logprobs=2,
                                  extra_body={"ignore_eos": True})
    gen = g.choices[0].logprobs
    full = ids + [server.tokenize(t)[0] if len(server.tokenize(t)) == 1 else None for t in gen.tokens]
    if None in full:
        pytest.skip("a generated piece does not re-tokenize to one token")
    e = client.completions.create(model=MODEL_ID, prompt=[full], max_tokens=0, echo=True, logprobs=2)
    lp = e.choices[0].logprobs
    assert e.usage.completion_tokens == 0 and e.choices[0].finish_reason == "length"
    assert len(lp.tokens) == len(full) and lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert "".join(lp.tokens) == e.choices[0].text
    for k, (a, b) in enumerate(zip(lp.token_logprobs[len(ids):], gen.token_logprobs)):
        assert math.isclose(a, b, abs_tol=2e-3), (k, a, b)
    assert all(len(t) == 2 for t in lp.top_logprobs[1:])
    # with generation after the prompt: prompt entries first, then the generated ones
    e2 = client.completions.create(model=MODEL_ID, prompt=[ids], max_tokens=3, echo=True, logprobs=0,
                                   temperature=0, extra_body={"ignore_eos": True})
    assert len(e2.choices[0].logprobs.tokens) == len(ids) + 3
    with pytest.raises(openai.BadRequestError) as err:
        list(client.completions.create(model=MODEL_ID, prompt="x", max_tokens=2, echo=True, logprobs=1,
                                       stream=True))
    assert err.value.body["param"] == "echo"


# ---- embeddings -------------------------------------------------------------------------------


def test_embeddings(client, server):
    r = client.embeddings.create(model=MODEL_ID, input=["The cat sat.", "Stock prices fell."])
    assert [d.index for d in r.data] == [0, 1] and r.model == MODEL_ID
    for d in r.data:
        assert len(d.embedding) == 576 and math.isclose(math.fsum(x * x for x in d.embedding), 1, rel_tol=1e-4)
    assert r.data[0].embedding != r.data[1].embedding
    n0 = len(server.tokenize("The cat sat.")) + len(server.tokenize("Stock prices fell."))
    assert r.usage.prompt_tokens == r.usage.total_tokens == n0
    one = client.embeddings.create(model=MODEL_ID, input="The cat sat.")
    ids = client.embeddings.create(model=MODEL_ID, input=server.tokenize("The cat sat."), dimensions=576)
    for a, b, c in zip(one.data[0].embedding, r.data[0].embedding, ids.data[0].embedding):
        assert math.isclose(a, b, abs_tol=1e-5) and a == c
    raw = server.post("/v1/embeddings", {"model": MODEL_ID, "input": "The cat sat.", "encoding_format": "base64"},
                      headers=AUTH).json()
    floats = struct.unpack("<576f", base64.b64decode(raw["data"][0]["embedding"]))
    assert all(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-7) for a, b in zip(floats, one.data[0].embedding))


def test_embeddings_batched_with_generation(client, server):
    """An embedding computed while a completion decodes in the same steps
    equals the one computed alone."""
    alone = client.embeddings.create(model=MODEL_ID, input="Batching must not change the vector.").data[0].embedding
    t = threading.Thread(target=lambda: client.completions.create(
        model=MODEL_ID, prompt="Count:", max_tokens=30, extra_body={"ignore_eos": True}))
    t.start()
    try:
        mixed = client.embeddings.create(model=MODEL_ID, input=["Batching must not change the vector."] * 3)
    finally:
        t.join(HANG_S)
    for d in mixed.data:
        assert all(math.isclose(a, b, abs_tol=1e-4) for a, b in zip(alone, d.embedding))


@pytest.mark.parametrize("body,param", [
    ({"input": ""}, "input"), ({"input": []}, "input"), ({"input": [[]]}, "input"), ({"input": [1, -2]}, "input"),
    ({"input": 5}, "input"), ({}, "input"), ({"input": "x", "dimensions": 64}, "dimensions"),
    ({"input": "x", "encoding_format": "int8"}, "encoding_format"), ({"input": "x", "user": 3}, "user"),
    ({"input": "x" * 30000}, "input"),
])
def test_embeddings_refusals(server, body, param):
    r = server.post("/v1/embeddings", {"model": MODEL_ID, **body}, headers=AUTH)
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


# ---- status codes, disconnects, vLLM names ------------------------------------------------------


def test_client_disconnect_is_logged_as_such(server):
    body = json.dumps({"model": MODEL_ID, "prompt": "Go", "max_tokens": 30, "temperature": 0,
                       "ignore_eos": True}).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=HANG_S) as c:
        c.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-Request-Id: leaver-17\r\n"
                  b"Authorization: Bearer k17\r\nContent-Type: application/json\r\n"
                  b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    line = access_line(server, "leaver-17")
    assert line["status"] == 499 and line["cause"] == "client_disconnect", line
    assert wait_until(lambda: server.metrics().value("sqserve_requests_total", 0, endpoint="/v1/completions",
                                                      code="499") >= 1, HANG_S)


def test_exact_codes_counted(server):
    server.get("/nope")
    httpx.options(server.url("/health"), timeout=HANG_S)
    m = server.metrics()
    assert m.value("sqserve_requests_total", 0, endpoint="other", code="404") >= 1
    assert m.value("sqserve_requests_total", 0, endpoint="/health", code="204") >= 1


def test_timeout_counted_as_504():
    with start_server("--request-timeout", "0.5", "--log-format", "json") as s:
        r = s.post("/v1/completions", {"model": MODEL_ID, "prompt": "Go", "max_tokens": 4000, "ignore_eos": True},
                   headers={"X-Request-Id": "slow-17"})
        assert r.status_code == 504, r.text
        assert access_line(s, "slow-17")["cause"] == "timeout"
        assert wait_until(lambda: s.metrics().value("sqserve_requests_total", 0, endpoint="/v1/completions",
                                                     code="504") == 1, HANG_S)
        assert s.metrics().value("sqserve_requests_total", 0, code="500") == 0


def test_vllm_metric_names(client, server):
    client.completions.create(model=MODEL_ID, prompt="Hello", max_tokens=3, extra_body={"ignore_eos": True})
    m = server.metrics()
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                 "vllm:prompt_tokens_total", "vllm:generation_tokens_total"):
        assert m.find(name, model_name=MODEL_ID), name
    assert m.value("vllm:generation_tokens_total", model_name=MODEL_ID) == m.value("sqserve_generation_tokens_total")
    assert m.value("vllm:prompt_tokens_total", model_name=MODEL_ID) == \
        m.value("sqserve_prompt_tokens_total") + m.value("sqserve_prefix_cache_hit_tokens_total")
    for h, ours in (("vllm:time_to_first_token_seconds", "sqserve_time_to_first_token_seconds"),
                    ("vllm:e2e_request_latency_seconds", "sqserve_e2e_latency_seconds"),
                    ("vllm:time_per_output_token_seconds", "sqserve_inter_token_latency_seconds")):
        assert m.value(h + "_count", model_name=MODEL_ID) == m.value(ours + "_count") > 0, h
    done = sum(v for _, v in m.find("vllm:request_success_total"))
    assert done >= 1 and m.find("vllm:request_success_total", finished_reason="length")


def test_vllm_names_off_by_default():
    with start_server() as s:
        assert "vllm:" not in s.metrics_text()
