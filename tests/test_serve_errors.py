"""Malformed and refused requests, sent with httpx: each gets the documented
status and the OpenAI error shape {"error": {"message", "type", "param",
"code"}}, and the server keeps serving afterwards. Also --api-key (401) and a
full queue (429 + Retry-After). Contract: docs/api.md.
"""

from __future__ import annotations

import threading
import time

import pytest

from serve_util import MODEL_ID, check_error_shape, httpx, start_server

C, CC = "/v1/completions", "/v1/chat/completions"
OK_MSG = [{"role": "user", "content": "Hi"}]


def comp(**kw):
    b = {"model": MODEL_ID, "prompt": "Hello", "max_tokens": 4}
    b.update(kw)
    return {k: v for k, v in b.items() if v is not DROP}


def chat(**kw):
    b = {"model": MODEL_ID, "messages": OK_MSG, "max_tokens": 4}
    b.update(kw)
    return {k: v for k, v in b.items() if v is not DROP}


DROP = object()


def msgs_param(p):
    return isinstance(p, str) and p.startswith("messages")


def model_or_none(p):
    return p in ("model", None)  # OpenAI itself answers param null for an unknown model


def prompt_param(p):
    return isinstance(p, str) and p.startswith("prompt")


# (id, method, path, body: dict/list -> JSON, bytes -> raw, None -> none, status, param)
# param: ... = not checked, a value or a predicate on error.param
CASES = [
    ("broken-json", "POST", C, b'{"model": "x", "prompt": ', 400, ...),
    ("json-array", "POST", C, [1, 2, 3], 400, ...),
    ("json-string", "POST", C, "just a string", 400, ...),
    ("json-null", "POST", C, b"null", 400, ...),
    ("empty-body", "POST", C, b"", 400, ...),
    ("missing-model", "POST", C, comp(model=DROP), 400, "model"),
    ("model-int", "POST", C, comp(model=7), 400, "model"),
    ("unknown-model", "POST", C, comp(model="gpt-17"), 404, model_or_none),
    ("unknown-model-chat", "POST", CC, chat(model="gpt-17"), 404, model_or_none),
    ("missing-prompt", "POST", C, comp(prompt=DROP), 400, "prompt"),
    ("prompt-int", "POST", C, comp(prompt=42), 400, prompt_param),
    ("prompt-empty-string", "POST", C, comp(prompt=""), 400, prompt_param),
    ("prompt-empty-list", "POST", C, comp(prompt=[]), 400, prompt_param),
    ("prompt-mixed-list", "POST", C, comp(prompt=[1, "a"]), 400, prompt_param),
    ("prompt-token-negative", "POST", C, comp(prompt=[504, -1]), 400, prompt_param),
    ("prompt-token-huge", "POST", C, comp(prompt=[504, 10**9]), 400, prompt_param),
    ("prompt-token-vocab", "POST", C, comp(prompt=[49152]), 400, prompt_param),
    ("max_tokens-string", "POST", C, comp(max_tokens="10"), 400, "max_tokens"),
    ("max_tokens-negative", "POST", C, comp(max_tokens=-5), 400, "max_tokens"),
    ("max_tokens-float", "POST", C, comp(max_tokens=3.5), 400, "max_tokens"),
    ("max_tokens-over-context", "POST", C, comp(max_tokens=1_000_000), 400, ...),
    ("temperature-string", "POST", C, comp(temperature="hot"), 400, "temperature"),
    ("temperature-negative", "POST", C, comp(temperature=-1), 400, "temperature"),
    ("top_p-2", "POST", C, comp(top_p=2), 400, "top_p"),
    ("n-string", "POST", C, comp(n="2"), 400, "n"),
    ("n-0", "POST", C, comp(n=0), 400, "n"),
    ("n-100", "POST", C, comp(n=100), 400, "n"),
    ("stop-int", "POST", C, comp(stop=5), 400, "stop"),
    ("stop-5-strings", "POST", C, comp(stop=["a", "b", "c", "d", "e"]), 400, "stop"),
    ("logprobs-6", "POST", C, comp(logprobs=6), 400, "logprobs"),
    ("presence_penalty-3", "POST", C, comp(presence_penalty=3), 400, "presence_penalty"),
    ("frequency_penalty-string", "POST", C, comp(frequency_penalty="x"), 400,
     "frequency_penalty"),
    ("seed-string", "POST", C, comp(seed="42"), 400, "seed"),
    ("stream-string", "POST", C, comp(stream="yes"), 400, "stream"),
    ("missing-messages", "POST", CC, chat(messages=DROP), 400, "messages"),
    ("messages-not-list", "POST", CC, chat(messages={"role": "user", "content": "Hi"}), 400,
     msgs_param),
    ("messages-empty", "POST", CC, chat(messages=[]), 400, msgs_param),
    ("message-not-object", "POST", CC, chat(messages=["Hi"]), 400, msgs_param),
    ("message-no-role", "POST", CC, chat(messages=[{"content": "Hi"}]), 400, msgs_param),
    ("message-bad-role", "POST", CC, chat(messages=[{"role": "wizard", "content": "Hi"}]), 400,
     msgs_param),
    ("message-content-int", "POST", CC, chat(messages=[{"role": "user", "content": 5}]), 400,
     msgs_param),
    ("message-no-content", "POST", CC, chat(messages=[{"role": "user"}]), 400, msgs_param),
    ("message-part-bad-type", "POST", CC,
     chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
     400, msgs_param),
    ("chat-max_tokens-string", "POST", CC, chat(max_tokens="8"), 400, "max_tokens"),
    ("chat-max_completion_tokens-negative", "POST", CC, chat(max_completion_tokens=-1), 400,
     "max_completion_tokens"),
    ("chat-temperature-string", "POST", CC, chat(temperature="cold"), 400, "temperature"),
    ("chat-stop-int", "POST", CC, chat(stop=1), 400, "stop"),
    ("chat-n-string", "POST", CC, chat(n="x"), 400, "n"),
    ("chat-logprobs-string", "POST", CC, chat(logprobs="yes"), 400, "logprobs"),
    ("chat-top_logprobs-21", "POST", CC, chat(logprobs=True, top_logprobs=21), 400,
     "top_logprobs"),
    ("tokenize-broken-json", "POST", "/tokenize", b"{", 400, ...),
    ("tokenize-prompt-int", "POST", "/tokenize", {"prompt": 5}, 400, "prompt"),
    ("detokenize-not-list", "POST", "/detokenize", {"tokens": "1 2"}, 400, "tokens"),
    ("detokenize-out-of-vocab", "POST", "/detokenize", {"tokens": [10**9]}, 400, "tokens"),
    ("invalid-utf8", "POST", C,
     b'{"model": "' + MODEL_ID.encode() + b'", "prompt": "caf\xc3\x28 \xff\xfe", "max_tokens": 4}',
     400, ...),
    ("get-completions", "GET", C, None, 405, ...),
    ("get-chat", "GET", CC, None, 405, ...),
    ("post-models", "POST", "/v1/models", {}, 405, ...),
    ("delete-health", "DELETE", "/health", None, 405, ...),
    ("unknown-route", "GET", "/v1/nothing-here", None, 404, ...),
    ("unknown-route-post", "POST", "/v2/completions", comp(), 404, ...),
]


@pytest.fixture(scope="module")
def server():
    s = start_server()
    yield s
    s.stop()


def _send(server, method, path, body, headers=None, timeout=600):
    h = dict(headers or {})
    if body is None:
        return httpx.request(method, server.url(path), headers=h, timeout=timeout)
    if isinstance(body, bytes):
        h.setdefault("Content-Type", "application/json")
        return httpx.request(method, server.url(path), content=body, headers=h, timeout=timeout)
    return httpx.request(method, server.url(path), json=body, headers=h, timeout=timeout)


def test_at_least_30_cases():
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_malformed_request(server, case):
    _id, method, path, body, status, param = case
    r = _send(server, method, path, body)
    check_error_shape(r, status, param)
    if status == 405:  # RFC 9110: a 405 names the allowed methods
        assert r.headers.get("allow"), f"405 without an Allow header: {dict(r.headers)}"


def test_body_over_max_body_is_413(server):
    big = b'{"model": "' + MODEL_ID.encode() + b'", "prompt": "' + b"a" * (10 * 1024 * 1024) + b'"}'
    try:
        r = _send(server, "POST", C, big)
    except httpx.TransportError as e:
        pytest.fail(f"10 MB body: no HTTP answer, the connection failed ({e!r}); "
                    f"expected 413\n{server.describe()}")
    check_error_shape(r, 413)


def test_server_survives_malformed_requests(server):
    """Runs after the cases above (file order): still healthy and serving."""
    assert server.alive(), server.describe()
    assert server.get("/health").status_code == 200
    r = server.post(C, comp(max_tokens=5, temperature=0))
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["choices"][0]["text"] and j["usage"]["completion_tokens"] <= 5
    m = server.metrics()
    codes = {l.get("code") for l, _ in m.find("sqserve_requests_total")}
    assert {"400", "404", "405", "413"} <= codes, codes


# ---- --api-key ----------------------------------------------------------------------


def test_api_key():
    with start_server("--api-key", "secret") as s:
        body = comp(max_tokens=2)
        e = check_error_shape(_send(s, "POST", C, body), 401)
        check_error_shape(_send(s, "POST", C, body, {"Authorization": "Bearer wrong"}), 401)
        check_error_shape(_send(s, "POST", C, body, {"Authorization": "secret"}), 401)
        check_error_shape(_send(s, "POST", C, body, {"Authorization": "Bearer secretX"}), 401)
        check_error_shape(_send(s, "GET", "/v1/models", None), 401)
        r = _send(s, "POST", C, body, {"Authorization": "Bearer secret"})
        assert r.status_code == 200, r.text
        assert _send(s, "GET", "/v1/models", None,
                     {"Authorization": "Bearer secret"}).status_code == 200
        assert e["message"]
        # only /v1/* is protected (docs/api.md)
        assert s.get("/health").status_code == 200
        assert s.get("/metrics").status_code == 200
        # and the official client with the right and a wrong key
        import openai
        ok = s.openai(api_key="secret").completions.create(model=MODEL_ID, prompt="Hi",
                                                          max_tokens=2)
        assert ok.choices[0].text is not None
        with pytest.raises(openai.AuthenticationError):
            s.openai(api_key="nope").completions.create(model=MODEL_ID, prompt="Hi", max_tokens=2)


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Bearer secre", "Bearer secretsecret",
                                    "Bearer SECRET", "Bearer  secret", "Basic c2VjcmV0", "Bearer s\u00e9cret",
                                    "Bearer secret\t"])
def test_api_key_variants_refused(key_server, header):
    """Prefixes, repetitions, case and whitespace of the key: all refused
    (the comparison runs over what the client sent, in constant time).
    Sent raw: httpx refuses some of these header values itself."""
    import socket
    req = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    if header is not None:
        req += b"Authorization: " + header.encode("utf-8") + b"\r\n"
    with socket.create_connection(("127.0.0.1", key_server.port), timeout=600) as c:
        c.sendall(req + b"\r\n")
        data = b""
        while chunk := c.recv(65536):
            data += chunk
    status = data.split(b"\r\n", 1)[0]
    assert status.startswith(b"HTTP/1.1 401"), (header, data[:300])
    assert b'"authentication_error"' in data, data[:500]


def test_api_key_scheme_is_case_insensitive(key_server):
    for scheme in ("Bearer", "bearer", "BEARER"):
        r = _send(key_server, "GET", "/v1/models", None, {"Authorization": f"{scheme} secret"})
        assert r.status_code == 200, (scheme, r.text)


def test_open_endpoints_with_api_key(key_server):
    """docs/api.md: with --api-key, /health, /metrics, /openapi.json,
    /tokenize and /detokenize stay open by default."""
    s = key_server
    assert s.get("/health").status_code == 200
    assert s.get("/metrics").status_code == 200
    assert s.get("/openapi.json").status_code == 200
    assert s.post("/tokenize", {"prompt": "hi"}).status_code == 200
    assert s.post("/detokenize", {"tokens": [1]}).status_code == 200


@pytest.fixture(scope="module")
def key_server():
    with start_server("--api-key", "secret") as s:
        yield s


@pytest.mark.parametrize("how", ["flag", "env"])
def test_protect_metrics(how):
    flags = ["--api-key", "secret"] + (["--protect-metrics"] if how == "flag" else [])
    env = {"SQSERVE_PROTECT_METRICS": "true"} if how == "env" else None
    with start_server(*flags, env=env) as s:
        check_error_shape(s.get("/metrics"), 401)
        check_error_shape(s.get("/metrics", headers={"Authorization": "Bearer wrong"}), 401)
        r = s.get("/metrics", headers={"Authorization": "Bearer secret"})
        assert r.status_code == 200 and "sqserve_requests_total" in r.text, r.text[:300]
        assert s.get("/health").status_code == 200  # probes never need the key


@pytest.mark.parametrize("args,env,msg", [
    (["--protect-metrics"], {}, "--protect-metrics needs --api-key"),
    (["--api-key", "k"], {"SQSERVE_PROTECT_METRICS": "maybe"}, "SQSERVE_PROTECT_METRICS: 'maybe' is not a boolean"),
])
def test_protect_metrics_misuse_is_refused(args, env, msg):
    import os
    import subprocess
    from serve_util import REPO_ROOT, binary_path, model_path, require_serve
    require_serve()
    e = {k: v for k, v in os.environ.items() if not k.startswith("SQSERVE_")}
    e.update(env)
    p = subprocess.run([str(binary_path()), "serve", "-m", str(model_path()), "--port", "0", *args],
                       cwd=REPO_ROOT, env=e, capture_output=True, text=True, timeout=600,
                       stdin=subprocess.DEVNULL)
    assert p.returncode != 0 and msg in p.stderr, p.stderr[-2000:]


def test_protect_metrics_off_by_env():
    """SQSERVE_PROTECT_METRICS=0 means off (not 'set, so on')."""
    with start_server("--api-key", "secret", env={"SQSERVE_PROTECT_METRICS": "0"}) as s:
        assert s.get("/metrics").status_code == 200


# ---- queue full -----------------------------------------------------------------------


def test_queue_full_gives_429():
    """--max-seqs 1 --max-queue 1: one request running and one waiting fill
    the server, so the next four get 429 (with Retry-After) and the first two
    complete. Each step waits for the engine's gauges (events), and the
    running request is long enough at this machine's measured speed that it
    cannot finish while the others are sent."""
    from serve_util import tokens_for_seconds, wait_until
    with start_server("--max-seqs", 1, "--max-queue", 1) as s:
        n = tokens_for_seconds(s, 5)
        results = [None] * 2

        def slow(i):
            try:
                results[i] = _send(s, "POST", C, comp(prompt=f"Story number {i}:", max_tokens=n,
                                                      temperature=0, ignore_eos=True), timeout=600)
            except Exception as e:  # noqa: BLE001
                results[i] = e

        def gauges():
            m = s.metrics()
            return m.value("sqserve_running_sequences"), m.value("sqserve_waiting_sequences")
        ts = [threading.Thread(target=slow, args=(i,)) for i in range(2)]
        ts[0].start()
        assert wait_until(lambda: gauges() == (1, 0), 600, 0.02), gauges()
        ts[1].start()
        assert wait_until(lambda: gauges() == (1, 1), 600, 0.02), gauges()
        full = [_send(s, "POST", C, comp(prompt=f"Extra {i}", max_tokens=4)) for i in range(4)]
        assert gauges()[0] == 1, "the first request ended before the queue could be seen full"
        for r in full:
            check_error_shape(r, 429)
            ra = r.headers.get("retry-after")
            assert ra is not None, f"429 without Retry-After: {dict(r.headers)}"
            assert ra.strip().isdigit() and int(ra) >= 1, f"Retry-After {ra!r}"
        for t in ts:
            t.join(600)
        for r in results:
            assert isinstance(r, httpx.Response), r
            assert r.status_code == 200, r.text
            assert r.json()["usage"]["completion_tokens"] == n
        assert s.get("/health").status_code == 200
