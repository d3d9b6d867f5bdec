"""The serve flags of docs/api.md that change behaviour a client can see:
--model-name (given as the environment variable SQSERVE_MODEL_NAME), --ctx,
--max-batch-tokens (chunked prefill must not change the output), --max-body,
--log-format json (one server carries all of these) and --request-timeout.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from serve_util import (HANG_S, MODEL_ID, REPO_ROOT, binary_path, check_error_shape, model_path,
                        start_server, stream_raw, wait_until)

NAME = "tiny-llm"
CTX = 256
TIMEOUT = 1
LONG = ("The history of the printing press begins in the fifteenth century, when "
        "Johannes Gutenberg combined movable metal type, oil-based inks and a wooden "
        "press adapted from those used for wine. Within decades, printing shops "
        "spread across Europe, and books became cheaper, more numerous and more "
        "uniform than manuscripts had ever been. Scholars argue about its effects, ")


@pytest.fixture(scope="module")
def server():
    s = start_server("--ctx", CTX, "--max-batch-tokens", 16, "--max-body", 4000,
                     "--log-format", "json", env={"SQSERVE_MODEL_NAME": NAME})
    yield s
    s.stop()


def test_model_name_from_environment(server):
    ids = [m["id"] for m in server.get("/v1/models").json()["data"]]
    assert ids == [NAME], ids
    assert server.get(f"/v1/models/{NAME}").status_code == 200
    r = server.post("/v1/completions", {"model": MODEL_ID, "prompt": "Hi", "max_tokens": 2})
    check_error_shape(r, 404)
    r = server.openai().completions.create(model=NAME, prompt="Hi", max_tokens=2)
    assert r.model == NAME


def test_context_limit(server):
    n = len(server.tokenize(LONG))
    assert 40 < n < CTX - 20, n
    ok = server.post("/v1/completions", {"model": NAME, "prompt": LONG, "max_tokens": CTX - n,
                                         "temperature": 0, "ignore_eos": True})
    assert ok.status_code == 200, ok.text
    assert ok.json()["usage"]["total_tokens"] == CTX
    over = server.post("/v1/completions", {"model": NAME, "prompt": LONG,
                                           "max_tokens": CTX - n + 1})
    check_error_shape(over, 400, "max_tokens")
    too_long = server.post("/v1/completions", {"model": NAME, "prompt": LONG * 6,
                                               "max_tokens": 1})
    check_error_shape(too_long, 400, "prompt")
    chat = server.post("/v1/chat/completions", {"model": NAME, "max_tokens": 1, "messages": [
        {"role": "user", "content": LONG * 6}]})
    check_error_shape(chat, 400, lambda p: isinstance(p, str) and p.startswith("messages"))


def test_chunked_prefill_gives_the_same_text(server):
    """--max-batch-tokens 16 splits the prompt over several steps; the greedy
    text must equal the CLI's, which processes the prompt in one pass."""
    n = len(server.tokenize(LONG))
    assert n > 3 * 16
    r = server.openai().completions.create(model=NAME, prompt=LONG, max_tokens=24,
                                           temperature=0, extra_body={"ignore_eos": True})
    p = subprocess.run([str(binary_path()), "generate", "-m", str(model_path()), "-t", "2",
                        "-p", LONG, "-n", "24", "--temp", "0", "--ignore-eos"],
                       capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    assert p.returncode == 0, p.stderr
    cli = p.stdout[:-1] if p.stdout.endswith("\n") else p.stdout
    assert r.choices[0].text == cli, f"chunked prefill {r.choices[0].text!r}\nCLI {cli!r}"
    m = server.metrics()
    assert m.bucket("sqserve_step_tokens", "16") == m.value("sqserve_step_tokens_count"), \
        "a step ran more than --max-batch-tokens 16 tokens"


def test_max_body(server):
    # the size is in a field that does not reach the model: only the body counts
    r = server.post("/v1/completions", {"model": NAME, "prompt": "Hi", "max_tokens": 1,
                                        "user": "u" * 3000})  # ~3.1 kB
    assert r.status_code == 200, r.text
    big = {"model": NAME, "prompt": "Hi", "max_tokens": 1, "user": "u" * 5000}  # ~5.1 kB
    check_error_shape(server.post("/v1/completions", big), 413)


def _json_lines(lines):
    recs = []
    for l in lines:
        try:
            recs.append(json.loads(l))
        except ValueError:
            pytest.fail(f"--log-format json, but this stderr line is not JSON: {l!r}")
    return recs


def test_json_access_log(server):
    server.post("/v1/completions", {"model": NAME, "prompt": "Hi", "max_tokens": 1})
    server.get("/no/such/path")

    def seen_both():  # the access lines are written as each request completes: wait for them
        lines = [l for l in server.lines if l != server.startup_line and l.strip()]
        seen = {(r.get("method"), r.get("path"), r.get("status")) for r in _json_lines(lines)}
        return (("POST", "/v1/completions", 200) in seen and
                (("GET", "/no/such/path", 404) in seen or ("GET", "other", 404) in seen))
    wait_until(seen_both, HANG_S, 0.05)
    lines = [l for l in server.lines if l != server.startup_line and l.strip()]
    assert lines, "no access log lines"
    recs = _json_lines(lines)
    seen = {(r.get("method"), r.get("path"), r.get("status")) for r in recs}
    assert ("POST", "/v1/completions", 200) in seen, recs[-5:]
    # unknown paths may be logged as "other" (what the metrics' endpoint label uses)
    assert (("GET", "/no/such/path", 404) in seen or ("GET", "other", 404) in seen), recs[-5:]


def test_json_log_when_client_disconnects(server):
    """Every stderr line stays JSON when a client goes away mid-stream: nothing
    else (e.g. the HTTP library's own error messages) writes plain text."""
    start = len(server.lines)
    st = server.openai().completions.create(model=NAME, prompt="Hi", max_tokens=100,
                                            stream=True, extra_body={"ignore_eos": True})
    chunks = iter(st)
    next(chunks), next(chunks)
    st.close()
    assert wait_until(lambda: server.metrics().value("sqserve_running_sequences") == 0, 600)
    # the stream's access line comes when the server sees the connection gone: wait for it
    wait_until(lambda: any(r.get("path") == "/v1/completions"
                           for r in _json_lines([l for l in server.lines[start:] if l.strip()])), HANG_S, 0.05)
    recs = _json_lines([l for l in server.lines[start:] if l.strip()])
    assert any(r.get("path") == "/v1/completions" for r in recs), recs


@pytest.fixture(scope="module")
def timeout_server():
    s = start_server("--request-timeout", TIMEOUT)
    yield s
    s.stop()


# Far more tokens than any CPU generates in TIMEOUT seconds with this model,
# so the timeout, not max_tokens, ends the request on any machine; the
# assertions count tokens and check only lower bounds on time.
MANY = 3800


def test_request_timeout(timeout_server):
    server = timeout_server
    t0 = time.monotonic()
    r = server.post("/v1/completions", {"model": MODEL_ID, "prompt": "Hi", "max_tokens": MANY,
                                        "ignore_eos": True}, timeout=600)
    took = time.monotonic() - t0
    assert took > TIMEOUT - 0.2, f"answered after {took:.1f} s, before --request-timeout {TIMEOUT}"
    e = check_error_shape(r, 504)  # cancelled: no 200 with half a completion
    assert e["type"] == "timeout_error" and "request-timeout" in e["message"], e
    assert wait_until(lambda: server.metrics().value("sqserve_running_sequences") == 0, 600)


def test_request_timeout_streaming(timeout_server):
    """A stream cut by --request-timeout says so: an error event (code 504)
    before [DONE], and no finish_reason (it neither stopped nor reached
    max_tokens)."""
    server = timeout_server
    t0 = time.monotonic()
    chunks, done, r = stream_raw(server, "/v1/completions", {
        "model": MODEL_ID, "prompt": "Hi", "max_tokens": MANY, "ignore_eos": True, "stream": True,
        "stream_options": {"include_usage": True}}, timeout=600)
    took = time.monotonic() - t0
    assert r.status_code == 200
    assert took > TIMEOUT - 0.2, f"stream ended after {took:.1f} s, before the timeout"
    assert done, "no [DONE] after the cut"
    reasons = [c["finish_reason"] for ch in chunks for c in ch.get("choices", [])
               if c.get("finish_reason")]
    usage = next((ch["usage"] for ch in chunks if ch.get("usage")), None)
    assert usage and usage["completion_tokens"] < MANY, usage
    assert reasons == [], f"a stream cut by --request-timeout claims {reasons}"
    errs = [ch["error"] for ch in chunks if "error" in ch]
    assert len(errs) == 1, chunks[-3:]
    assert errs[0]["code"] == 504 and errs[0]["type"] == "timeout_error", errs
    assert chunks[-1].get("usage") and "error" in chunks[-2], "the error event comes last, before usage"
