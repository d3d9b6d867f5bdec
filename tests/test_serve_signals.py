"""Graceful shutdown: SIGTERM while streams run lets them finish (finish_reason
and [DONE]), /health answers 503 and new requests get 503 while draining, and
the process exits 0 within --drain-timeout. Contract: docs/api.md.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time

from serve_util import MODEL_ID, check_error_shape, httpx, sse_events, start_server

DRAIN = 20


class Stream(threading.Thread):
    """One streaming completion read to its end on its own thread."""

    def __init__(self, server, i, max_tokens):
        super().__init__(daemon=True)
        self.server, self.i, self.max_tokens = server, i, max_tokens
        self.first = threading.Event()
        self.finished = threading.Event()
        self.chunks, self.done, self.error, self.status = [], False, None, None

    def run(self):
        body = {"model": MODEL_ID, "prompt": f"Chapter {self.i + 1}. The journey began",
                "max_tokens": self.max_tokens, "temperature": 0, "stream": True,
                "ignore_eos": True, "stream_options": {"include_usage": True}}
        try:
            with httpx.stream("POST", self.server.url("/v1/completions"), json=body,
                              timeout=DRAIN + 30) as r:
                self.status = r.status_code
                for ev in sse_events(r):
                    if ev == "[DONE]":
                        self.done = True
                    else:
                        self.chunks.append(json.loads(ev))
                    self.first.set()
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e
        finally:
            self.first.set()
            self.finished.set()

    def finish_reasons(self):
        return [c["finish_reason"] for ch in self.chunks for c in ch.get("choices", [])
                if c.get("finish_reason")]

    def usage(self):
        return next((ch["usage"] for ch in self.chunks if ch.get("usage")), None)


def test_sigterm_drains_streams_and_exits_0():
    s = start_server("--drain-timeout", DRAIN)
    try:
        streams = [Stream(s, i, 200) for i in range(3)]
        for t in streams:
            t.start()
        for t in streams:
            assert t.first.wait(60), "a stream sent nothing within 60 s"
        assert not any(t.finished.is_set() for t in streams), "streams ended before SIGTERM"
        t_sig = time.monotonic()
        s.signal(signal.SIGTERM)

        # while draining: /health 503, new requests 503
        h, deadline = None, time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                h = s.get("/health", timeout=5)
            except httpx.TransportError as e:
                h = e
            if isinstance(h, httpx.Response) and h.status_code == 503:
                break
            if not s.alive():
                break
            time.sleep(0.05)
        streams_running = not all(t.finished.is_set() for t in streams)
        assert streams_running and s.alive(), \
            "the streams (200 tokens each) ended before /health could be checked while draining"
        assert isinstance(h, httpx.Response) and h.status_code == 503, \
            f"/health during the drain: {h!r} {getattr(h, 'text', '')!r}, want 503"
        try:
            new_req = s.post("/v1/completions", {"model": MODEL_ID, "prompt": "Hi",
                                                 "max_tokens": 2}, timeout=10)
        except httpx.TransportError as e:
            raise AssertionError(f"a new request while draining got no HTTP answer ({e!r}); "
                                 f"want 503") from None
        check_error_shape(new_req, 503)
        assert not all(t.finished.is_set() for t in streams), \
            "streams ended too early to be sure the 503 came while draining"

        for t in streams:
            t.join(DRAIN + 15)
        for t in streams:
            assert t.error is None, f"stream {t.i}: {t.error!r}\n{s.describe()}"
            assert t.status == 200
            assert t.done, f"stream {t.i} did not end with [DONE]"
            assert t.finish_reasons() == ["length"], t.finish_reasons()
            text = "".join(c["text"] for ch in t.chunks for c in ch.get("choices", []))
            assert text.strip()
            u = t.usage()
            assert u and u["completion_tokens"] == 200, u

        try:
            rc = s.proc.wait(max(1.0, DRAIN + 2 - (time.monotonic() - t_sig)))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running {DRAIN + 2} s after SIGTERM "
                                 f"(--drain-timeout {DRAIN})\n{s.describe()}") from None
        assert rc == 0, f"exit status {rc} after a clean drain\n{s.describe()}"
        try:
            httpx.get(s.url("/health"), timeout=2)
            raise AssertionError("still accepting connections after exit")
        except httpx.TransportError:
            pass
    finally:
        s.stop()


def test_sigterm_when_idle_exits_0_quickly():
    s = start_server()
    try:
        t0 = time.monotonic()
        s.signal(signal.SIGTERM)
        rc = s.proc.wait(10)
        assert rc == 0, s.describe()
        assert time.monotonic() - t0 < 5
    finally:
        s.stop()


def test_drain_timeout_bounds_shutdown():
    """A request far longer than --drain-timeout is cut off: the process still
    exits within the drain timeout (plus a little slack), and the client's
    stream ends instead of hanging."""
    s = start_server("--drain-timeout", 2)
    try:
        t = Stream(s, 9, 3000)  # ~20 s of generation at this model's speed
        t.start()
        assert t.first.wait(60)
        t0 = time.monotonic()
        s.signal(signal.SIGTERM)
        try:
            rc = s.proc.wait(2 + 6)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running 8 s after SIGTERM with --drain-timeout 2\n"
                                 f"{s.describe()}") from None
        took = time.monotonic() - t0
        assert took >= 1.5, f"exited after {took:.1f} s, before the 2 s drain timeout"
        t.join(10)
        assert t.finished.is_set(), "the client's stream hangs after the server exited"
        print(f"\nexit status {rc} after {took:.1f} s; stream done={t.done} "
              f"finish={t.finish_reasons()} usage={t.usage()} error={t.error!r}")
        # a cut-off stream may end any way, but must not claim it hit max_tokens
        if "length" in t.finish_reasons():
            u = t.usage()
            assert u is not None and u["completion_tokens"] == 3000, \
                (f"stream cut by the drain timeout reports finish_reason 'length' after "
                 f"{u and u['completion_tokens']} of max_tokens 3000 tokens")
    finally:
        s.stop()
