"""/health while the engine is being prepared: the server listens at once and
answers 503 "loading" (every other route 503 too) until the model is ready.

The loading state is held open by an event, not by the machine being slow:
the recipe (int8 weights, static SQ activations) needs calibration text,
and --calib names a FIFO that the test writes only after it has seen the
503s. No deadline depends on the machine's speed: after the calibration
text goes in, the test waits for /health to turn 200 or the process to
exit (a hang guard of HANG seconds only).
"""
import os
import threading

from serve_util import MODEL_ID, Server, binary_path, model_path, require_serve, httpx, wait_until

HANG = 1800  # hang guard: a loaded 2-core machine may be slow, never stuck this long

CALIB_TEXT = ("The quick brown fox jumps over the lazy dog. " * 40 +
              "Rivers carve valleys over thousands of years, and the sea returns the rain. " * 20)


def test_health_503_while_loading_then_200(tmp_path):
    require_serve()
    fifo = tmp_path / "calib.fifo"
    os.mkfifo(fifo)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQSERVE_")}
    argv = [str(binary_path()), "serve", "-m", str(model_path()), "--port", "0", "--threads", "2",
            "--weights", "int8", "--acts", "sq:8/4:b64:s0.875:static", "--calib", str(fifo),
            "--calib-tokens", "256", "--startup-eval", "128"]
    s = Server(argv, env)
    writer = None
    try:
        assert s._port_found.wait(HANG) and s.port, s.describe()
        base = f"http://127.0.0.1:{s.port}"
        # the engine waits for calibration text: loading, for as long as we like
        for _ in range(3):
            r = httpx.get(base + "/health", timeout=HANG)
            assert r.status_code == 503 and r.json().get("status") == "loading", r.text
            m = httpx.get(base + "/v1/models", timeout=HANG)
            assert m.status_code == 503 and m.json()["error"]["code"] == 503, m.text
            c = httpx.post(base + "/v1/completions", json={"model": MODEL_ID, "prompt": "Hi",
                                                           "max_tokens": 2}, timeout=HANG)
            assert c.status_code == 503 and "loading" in c.json()["error"]["message"], c.text

        def feed():  # open() blocks until the server opens its end
            with open(fifo, "w") as f:
                f.write(CALIB_TEXT)
        writer = threading.Thread(target=feed, daemon=True)
        writer.start()

        def ready_or_dead():
            if not s.alive():
                return "exited"
            return httpx.get(base + "/health", timeout=HANG).status_code == 200
        state = wait_until(ready_or_dead, HANG, 0.1)
        assert state is True, f"never became ready ({state})\n{s.describe()}"
        r = httpx.post(base + "/v1/completions", json={"model": MODEL_ID, "prompt": "Hello",
                                                      "max_tokens": 4}, timeout=HANG)
        assert r.status_code == 200, r.text
        mt = httpx.get(base + "/metrics", timeout=HANG).text
        assert ('sqserve_model_eval{recipe="weights=int8 acts=sq:8/4:b64:s0.875:static",'
                'reference="SmolLM2-135M-Instruct.Q4_1.gguf",metric="kl"}') in mt, mt[-2000:]
    finally:
        if writer is not None and writer.is_alive():  # unblock the writer if the server died
            try:
                fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
                os.close(fd)
            except OSError:
                pass
        s.stop(30)
