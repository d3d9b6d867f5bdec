"""/health while the engine is being prepared: the server listens at once and
answers 503 "loading" (every other route 503 too) until the model is ready.

A weights recipe makes loading long enough to observe: int8 conversion plus
the startup evaluation against FP32 take several seconds on 2 cores.
"""
import os
import time

import pytest

from serve_util import Server, binary_path, model_path, require_serve, httpx


def test_health_503_while_loading_then_200():
    require_serve()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQSERVE_")}
    argv = [str(binary_path()), "serve", "-m", str(model_path()), "--port", "0", "--threads", "2",
            "--weights", "int8", "--startup-eval", "512"]
    s = Server(argv, env)
    try:
        assert s._port_found.wait(60) and s.port, s.describe()
        base = f"http://127.0.0.1:{s.port}"
        seen_loading = False
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            r = httpx.get(base + "/health", timeout=5)
            if r.status_code == 503:
                assert r.json().get("status") == "loading", r.text
                m = httpx.get(base + "/v1/models", timeout=5)
                assert m.status_code in (503, 200), m.text  # it may turn ready in between
                if m.status_code == 503:
                    assert m.json()["error"]["code"] == 503
                seen_loading = True
            elif r.status_code == 200:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"never became ready\n{s.describe()}")
        assert seen_loading, "the server answered 200 at once: no loading state was observable"
        r = httpx.post(base + "/v1/completions", json={"model": "SmolLM2-135M-Instruct.Q4_1",
                                                      "prompt": "Hello", "max_tokens": 4}, timeout=60)
        assert r.status_code == 200, r.text
        mt = httpx.get(base + "/metrics", timeout=5).text
        assert ('sqserve_model_eval{recipe="weights=int8 acts=fp32",'
                'reference="SmolLM2-135M-Instruct.Q4_1.gguf",metric="kl"}') in mt
    finally:
        s.stop(10)
