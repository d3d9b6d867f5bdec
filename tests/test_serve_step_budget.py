"""--step-budget-ms: a long prompt arriving while another stream decodes is
cut into chunks, so the decoding stream never waits on a whole prompt's
prefill in one step. Counted in engine steps and rows per step (the
sqserve_step_tokens histogram), never in seconds: with a budget no step can
meet (1 us), every step that carries a decode row takes the minimum chunk of
16 prompt tokens, on any machine; with the cut off, the whole prompt goes
into one step. Contract: docs/api.md (--step-budget-ms).
"""

from __future__ import annotations

import json
import threading

from serve_util import HANG_S, MODEL_ID, httpx, sse_events, start_server

LONG_PROMPT = "the cat sat on the mat and " * 45  # ~315 tokens


def _decoding_stream(server, started: threading.Event, done: threading.Event, result: dict) -> None:
    """Streams 400 tokens, or fewer: it stops reading (closing the stream)
    once `done` is set, so the test never waits for the whole stream, which
    on a slow machine could take longer than any fixed wait."""
    body = {"model": MODEL_ID, "prompt": "Once upon a time", "max_tokens": 400, "ignore_eos": True,
            "temperature": 0, "stream": True}
    n = 0
    with httpx.stream("POST", server.url("/v1/completions"), json=body, timeout=HANG_S) as r:
        result["status"] = r.status_code
        for ev in sse_events(r):
            if ev == "[DONE]" or done.is_set():
                break
            ev = json.loads(ev)
            if "error" in ev:  # recorded, so the test reports it instead of the thread dying
                result["error"] = ev["error"]
                break
            if ev["choices"][0].get("text"):
                n += 1
                started.set()
    result["frames"] = n
    started.set()


def _rows_per_step_during_prompt(budget_ms: str):
    # --request-timeout 0: on a starved machine the default 600 s can cut the
    # 400-token stream before the prompt is measured (seen pinned to one
    # busy core); what is counted here is steps, so no timeout applies
    with start_server("--step-budget-ms", budget_ms, "--max-batch-tokens", "512",
                      "--request-timeout", "0") as s:
        n_prompt = len(s.tokenize(LONG_PROMPT))
        assert n_prompt > 256
        started, done, result = threading.Event(), threading.Event(), {}
        t = threading.Thread(target=_decoding_stream, args=(s, started, done, result))
        t.start()
        assert started.wait(HANG_S), "the decoding stream produced nothing"
        m0 = s.metrics()
        r = s.post("/v1/completions", {"model": MODEL_ID, "prompt": LONG_PROMPT, "max_tokens": 1,
                                       "temperature": 0}, timeout=HANG_S)
        assert r.status_code == 200, r.text
        m1 = s.metrics()
        done.set()  # measured: the stream need not run to its end
        t.join(HANG_S)
        assert not t.is_alive(), "the decoding stream did not stop"
        assert result.get("status") == 200 and result.get("frames", 0) > 0 and "error" not in result, result
        steps = m1.value("sqserve_engine_steps_total") - m0.value("sqserve_engine_steps_total")
        big = lambda m: m.bucket("sqserve_step_tokens", "+Inf") - m.bucket("sqserve_step_tokens", "32")
        return n_prompt, steps, big(m1) - big(m0)


def test_long_prompt_is_chunked_while_a_stream_decodes():
    n_prompt, steps, big_steps = _rows_per_step_during_prompt("0.001")
    # 400 decode steps outlast the prompt: every step of the prompt carries a
    # decode row, so each takes 16 prompt tokens + 1 decode row
    assert big_steps == 0, f"{big_steps} steps of more than 32 rows while a stream decoded"
    assert steps >= n_prompt // 16, f"the {n_prompt}-token prompt took only {steps} steps"


def test_without_a_budget_the_prompt_goes_in_one_step():
    """The control: the cut is what splits the prompt."""
    n_prompt, steps, big_steps = _rows_per_step_during_prompt("0")
    assert big_steps >= 1
