"""Graceful shutdown: SIGTERM while streams run lets them finish (finish_reason
and [DONE]), /health answers 503 and new requests get 503 while draining, and
the process exits 0; requests still running when --drain-timeout expires are
cut and say so (an error event in a stream, HTTP 503 otherwise).
Contract: docs/api.md. No assertion depends on the machine's speed: request
lengths are calibrated (serve_util.tokens_for_seconds) and waits are on
events, with hang guards only.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time

from serve_util import (MODEL_ID, check_error_shape, httpx, sse_events, start_server,
                        tokens_for_seconds, wait_until)

HANG = 600  # hang guards only: waiting this long means the server is stuck, not slow


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
                              timeout=HANG) as r:
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

    def errors(self):
        """The error events of the stream (a request cut short says why)."""
        return [ch["error"] for ch in self.chunks if "error" in ch]

    def usage(self):
        return next((ch["usage"] for ch in self.chunks if ch.get("usage")), None)


def _health(s):
    try:
        return s.get("/health", timeout=HANG).status_code
    except httpx.TransportError:
        return None


def test_sigterm_drains_streams_and_exits_0():
    """The drain waits for the streams however slow the machine is: the
    drain timeout is out of reach and the test waits on events (the streams'
    first bytes, /health turning 503, the streams' ends, the exit), never on
    a deadline that a loaded machine could miss."""
    s = start_server("--drain-timeout", HANG)
    try:
        n = tokens_for_seconds(s, 8)  # 3 streams share the engine: each runs far past the checks
        streams = [Stream(s, i, n) for i in range(3)]
        for t in streams:
            t.start()
        for t in streams:
            assert t.first.wait(HANG), "a stream sent nothing"
        assert not any(t.finished.is_set() for t in streams), "streams ended before SIGTERM"
        s.signal(signal.SIGTERM)

        # while draining: /health 503 (the drain has begun), new requests 503
        assert wait_until(lambda: _health(s) == 503 or not s.alive(), HANG, 0.05)
        streams_running = not all(t.finished.is_set() for t in streams)
        assert streams_running and s.alive(), \
            (f"the streams ({n} tokens each, ~8 s of this machine's measured speed) ended "
             f"before /health could be checked while draining")
        assert _health(s) == 503
        try:
            new_req = s.post("/v1/completions", {"model": MODEL_ID, "prompt": "Hi",
                                                 "max_tokens": 2}, timeout=HANG)
        except httpx.TransportError as e:
            raise AssertionError(f"a new request while draining got no HTTP answer ({e!r}); "
                                 f"want 503") from None
        check_error_shape(new_req, 503)
        assert not all(t.finished.is_set() for t in streams), \
            "streams ended too early to be sure the 503 came while draining"

        for t in streams:
            t.join(HANG)
        for t in streams:
            assert t.error is None, f"stream {t.i}: {t.error!r}\n{s.describe()}"
            assert t.status == 200
            assert t.done, f"stream {t.i} did not end with [DONE]"
            assert not t.errors(), f"stream {t.i} was cut: {t.errors()}"
            assert t.finish_reasons() == ["length"], t.finish_reasons()
            text = "".join(c["text"] for ch in t.chunks for c in ch.get("choices", []))
            assert text.strip()
            u = t.usage()
            assert u and u["completion_tokens"] == n, u

        try:
            rc = s.proc.wait(HANG)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running {HANG} s after SIGTERM with every stream "
                                 f"finished\n{s.describe()}") from None
        assert rc == 0, f"exit status {rc} after a clean drain\n{s.describe()}"
        try:
            httpx.get(s.url("/health"), timeout=HANG)
            raise AssertionError("still accepting connections after exit")
        except httpx.TransportError:
            pass
    finally:
        s.stop()


def test_sigterm_when_idle_exits_0_quickly():
    """Idle, SIGTERM exits at once: with a drain timeout out of reach, an exit
    at all proves the server did not wait for it (no wall-clock bound)."""
    s = start_server("--drain-timeout", 10 * HANG)
    try:
        s.signal(signal.SIGTERM)
        try:
            rc = s.proc.wait(HANG)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"idle server still running {HANG} s after SIGTERM\n"
                                 f"{s.describe()}") from None
        assert rc == 0, s.describe()
    finally:
        s.stop()


def test_drain_timeout_cuts_requests_and_says_why():
    """Requests far longer than --drain-timeout are cut when it expires: the
    stream ends with an error event (code 503, no finish_reason: it did not
    stop and did not reach max_tokens) before [DONE], the non-streaming
    request gets an HTTP 503 error, and the process exits 0. Only lower
    bounds on time are asserted (the drain timeout is honoured)."""
    drain = 1
    s = start_server("--drain-timeout", drain)
    try:
        n = tokens_for_seconds(s, 60 * drain)  # far more than the drain allows
        t = Stream(s, 9, n)
        t.start()
        plain = {}

        def non_streaming():
            try:
                plain["r"] = s.post("/v1/completions", {
                    "model": MODEL_ID, "prompt": "Once upon a time", "max_tokens": n,
                    "temperature": 0, "ignore_eos": True}, timeout=HANG)
            except Exception as e:  # noqa: BLE001 - reported below
                plain["r"] = e
        p = threading.Thread(target=non_streaming, daemon=True)
        p.start()
        assert t.first.wait(HANG)
        # the non-streaming request is running once the engine holds 2 sequences
        assert wait_until(lambda: s.metrics().value("sqserve_running_sequences") == 2, HANG, 0.05), \
            s.describe()
        t0 = time.monotonic()
        s.signal(signal.SIGTERM)
        try:
            rc = s.proc.wait(HANG)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running {HANG} s after SIGTERM with --drain-timeout "
                                 f"{drain}\n{s.describe()}") from None
        took = time.monotonic() - t0
        assert took >= drain - 0.1, f"exited after {took:.1f} s, before the {drain} s drain timeout"
        assert rc == 0, s.describe()
        t.join(HANG)
        p.join(HANG)
        assert t.finished.is_set() and not p.is_alive(), "a client hangs after the server exited"
        assert t.error is None and t.status == 200, t.error
        assert t.done, "the cut stream did not end with [DONE]"
        u = t.usage()
        assert u and u["completion_tokens"] < n, u
        assert t.finish_reasons() == [], \
            f"a stream cut after {u['completion_tokens']} of {n} tokens claims {t.finish_reasons()}"
        errs = t.errors()
        assert len(errs) == 1, t.chunks[-3:]
        e = errs[0]
        assert e["code"] == 503 and e["type"] == "server_error" and "drain" in e["message"], e
        assert e["index"] == 0
        r = plain["r"]
        assert isinstance(r, httpx.Response), f"non-streaming request: {r!r}"
        err = check_error_shape(r, 503)
        assert "drain" in err["message"], err
    finally:
        s.stop()
