"""Shadow evaluation (engine/runtime/shadow.c): with --shadow-rate 1 every
finished request's prompt is replayed in idle time through the served
format and the reference, and sqserve_shadow_* count what was compared.
Waits on the counters (events), never on the clock."""

from serve_util import MODEL_ID, start_server, wait_until

PROMPT = "The capital of France is Paris and the capital of Spain is"


def test_every_request_is_shadowed_at_rate_1():
    with start_server("--weights", "int8", "--startup-eval", "0", "--shadow-rate", "1") as s:
        n_prompt = len(s.tokenize(PROMPT))
        for _ in range(2):
            r = s.post("/v1/completions", {"model": MODEL_ID, "prompt": PROMPT, "max_tokens": 4})
            assert r.status_code == 200, r.text
        assert wait_until(lambda: s.metrics().value("sqserve_shadow_requests_total", 0) >= 2, 600, 0.2)
        m = s.metrics()
        # every position with a next token is compared: n_prompt - 1 per replay
        assert m.value("sqserve_shadow_tokens_total") == 2 * (n_prompt - 1)
        assert 0 < m.value("sqserve_shadow_kl") < 1
        assert 0.5 <= m.value("sqserve_shadow_top1_agreement") <= 1


def test_no_shadow_without_a_rate():
    with start_server("--weights", "int8", "--startup-eval", "0") as s:
        r = s.post("/v1/completions", {"model": MODEL_ID, "prompt": PROMPT, "max_tokens": 4})
        assert r.status_code == 200, r.text
        assert s.metrics().value("sqserve_shadow_requests_total", 0) == 0
