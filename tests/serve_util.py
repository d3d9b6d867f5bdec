"""Helpers for the `sqserve serve` tests: start a real server on a free port,
wait until it is ready, talk to it, read its metrics, stop it.

The server is started as
    build/sqserve serve -m MODEL --port 0 --threads 2 [flags]
With --port 0 it binds a free port and prints one startup line on stderr that
contains http://127.0.0.1:PORT; we read stderr until that line appears (60 s
at most), then poll GET /health until it answers 200. A background thread keeps
draining stderr afterwards (the access log must never fill the pipe and block
the server) and keeps the lines for failure messages.

Binary: $SQSERVE_BIN (default build/sqserve); model: $SQSERVE_TEST_MODEL
(default models/SmolLM2-135M-Instruct.Q4_1.gguf), as in conftest.py.

Sanitized runs: with $SQSERVE_TEST_SANITIZE=1 (tests/run-tests.sh sets it
when it runs API suites against build/sanitize/sqserve) every server gets
conftest.SAN_ENV (the first report aborts the process, leaks are errors),
and stop() fails the test when the server's stderr holds a sanitizer report
or the process did not exit 0 after SIGTERM - so a report anywhere in a
server's life, including LeakSanitizer's at exit, fails the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import pytest

from conftest import SAN_ENV, sanitizer_report

try:  # openai>=3 ships its HTTP client as `httpx2` (same API as httpx)
    import httpx2 as httpx
except ImportError:  # pragma: no cover - older openai releases use httpx
    import httpx  # type: ignore[no-redef]

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = "models/SmolLM2-135M-Instruct.Q4_1.gguf"
# Hang guards, not deadlines: a loaded 2-core machine (or the ASan build) may be
# many times slower than a quiet one; these only end a wait that is really stuck.
HANG_S = 600.0
STARTUP_TIMEOUT = HANG_S
HEALTH_TIMEOUT = HANG_S
THREADS = 2

_URL_RE = re.compile(r"http://127\.0\.0\.1:(\d+)")


def _resolve(env_var: str, default: str) -> Path:
    p = Path(os.environ.get(env_var) or default)
    return p if p.is_absolute() else REPO_ROOT / p


def binary_path() -> Path:
    return _resolve("SQSERVE_BIN", "build/sqserve")


def sanitized() -> bool:
    """True when the suite drives the ASan/UBSan server (see the module doc)."""
    return os.environ.get("SQSERVE_TEST_SANITIZE") == "1"


def model_path() -> Path:
    return _resolve("SQSERVE_TEST_MODEL", DEFAULT_MODEL)


def model_id() -> str:
    """The served model id: the model file name without its extension."""
    return model_path().stem


MODEL_ID = model_id()

_serve_checked: Optional[str] = None  # None: not checked; "": available; else skip reason


def require_serve() -> None:
    """Skips the calling test when the binary, the model or the `serve`
    command itself does not exist yet. Any other failure of `serve --help` is
    a real failure, not a skip."""
    global _serve_checked
    if _serve_checked is None:
        b, m = binary_path(), model_path()
        if not b.is_file():
            _serve_checked = f"sqserve binary {b} not found (build it with `make -j2`)"
        elif not m.is_file():
            _serve_checked = f"model {m} not found (fetch it with `make model`)"
        else:
            p = subprocess.run([str(b), "serve", "--help"], capture_output=True, text=True,
                               timeout=HANG_S, cwd=REPO_ROOT, stdin=subprocess.DEVNULL)
            if p.returncode != 0 and "unknown command" in (p.stderr + p.stdout):
                _serve_checked = f"{b} has no `serve` command yet"
            else:
                assert p.returncode == 0, \
                    f"`sqserve serve --help` exited {p.returncode}\n{p.stdout}\n{p.stderr}"
                _serve_checked = ""
    if _serve_checked:
        pytest.skip(_serve_checked)


def free_port() -> int:
    """A TCP port that was free a moment ago (for helper processes such as
    Prometheus; sqserve itself is started with --port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One running `sqserve serve` process."""

    def __init__(self, argv: List[str], env: Dict[str, str]):
        self.argv = argv
        self.sanitized = sanitized()
        if self.sanitized:
            env = {**env, **SAN_ENV}
        self.proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.lines: List[str] = []
        self._lock = threading.Lock()
        self._port_found = threading.Event()
        self.port: Optional[int] = None
        self.startup_line: Optional[str] = None
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    # -- stderr ------------------------------------------------------------------
    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._lock:
                self.lines.append(line)
            if self.port is None:
                m = _URL_RE.search(line)
                if m:
                    self.port = int(m.group(1))
                    self.startup_line = line
                    self._port_found.set()
        self._port_found.set()  # EOF: wake a waiter up

    def stderr_text(self, tail: int = 4000) -> str:
        with self._lock:
            return "\n".join(self.lines)[-tail:]

    def describe(self) -> str:
        rc = self.proc.poll()
        return (f"$ {' '.join(self.argv)}\nprocess: "
                f"{'running' if rc is None else f'exited {rc}'}\n"
                f"--- server stderr (tail) ---\n{self.stderr_text()}")

    # -- start-up ----------------------------------------------------------------
    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        if not self._port_found.wait(timeout) or self.port is None:
            raise AssertionError(f"no startup line with http://127.0.0.1:PORT on stderr "
                                 f"within {timeout:.0f} s\n{self.describe()}")
        last = None
        deadline = time.monotonic() + HEALTH_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited during start-up\n{self.describe()}")
            try:
                r = httpx.get(self.url("/health"), timeout=HANG_S)
                if r.status_code == 200:
                    return
                last = f"{r.status_code} {r.text[:200]}"
            except httpx.HTTPError as e:
                last = repr(e)
            time.sleep(0.1)
        raise AssertionError(f"GET /health never answered 200 within {HEALTH_TIMEOUT:.0f} s "
                             f"(last: {last})\n{self.describe()}")

    # -- addresses ---------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def v1(self) -> str:
        return self.base_url + "/v1"

    def url(self, path: str) -> str:
        return self.base_url + path

    # -- clients -----------------------------------------------------------------
    def openai(self, **kw):
        import openai
        kw.setdefault("api_key", "x")
        kw.setdefault("max_retries", 0)  # a retry would hide the server's first answer
        kw.setdefault("timeout", HANG_S)
        return openai.OpenAI(base_url=self.v1, **kw)

    def async_openai(self, **kw):
        import openai
        kw.setdefault("api_key", "x")
        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", HANG_S)
        return openai.AsyncOpenAI(base_url=self.v1, **kw)

    def http(self, timeout: float = HANG_S) -> "httpx.Client":
        return httpx.Client(base_url=self.base_url, timeout=timeout)

    def post(self, path: str, body=None, timeout: float = HANG_S, **kw):
        if body is not None:
            kw["json"] = body
        return httpx.post(self.url(path), timeout=timeout, **kw)

    def get(self, path: str, timeout: float = HANG_S, **kw):
        return httpx.get(self.url(path), timeout=timeout, **kw)

    # -- helpers on the API ------------------------------------------------------
    def tokenize(self, prompt=None, messages=None, **extra) -> List[int]:
        body = dict(extra)
        if prompt is not None:
            body["prompt"] = prompt
        if messages is not None:
            body["messages"] = messages
        r = self.post("/tokenize", body)
        assert r.status_code == 200, f"POST /tokenize {body!r}: {r.status_code} {r.text}"
        j = r.json()
        assert j["count"] == len(j["tokens"]), j
        return j["tokens"]

    def detokenize(self, tokens: Sequence[int]) -> str:
        r = self.post("/detokenize", {"tokens": list(tokens)})
        assert r.status_code == 200, f"POST /detokenize: {r.status_code} {r.text}"
        return r.json()["prompt"]

    def metrics_text(self) -> str:
        r = self.get("/metrics")
        assert r.status_code == 200, f"GET /metrics: {r.status_code} {r.text[:500]}"
        return r.text

    def metrics(self) -> "Metrics":
        return Metrics(self.metrics_text())

    # -- shutdown ----------------------------------------------------------------
    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 15) -> Optional[int]:
        """SIGTERM, wait, then SIGKILL. Returns the exit status. A sanitized
        server must also exit 0 with no sanitizer report (LeakSanitizer
        runs at exit, so the check comes after the wait)."""
        if self.sanitized:
            timeout = max(timeout, 60)  # LeakSanitizer's scan at exit takes a while
        was_running = self.proc.poll() is None
        if was_running:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reader.join(5)
        if self.sanitized and not getattr(self, "_san_checked", False):
            self._san_checked = True
            rep = sanitizer_report(self.stderr_text(tail=1 << 30))
            if rep:
                raise AssertionError(f"sanitizer report ({rep}) from the server\n"
                                     f"{self.describe_full()}")
            if was_running and self.proc.returncode != 0:
                raise AssertionError(f"sanitized server exited {self.proc.returncode} after "
                                     f"SIGTERM\n{self.describe_full()}")
        return self.proc.returncode

    def describe_full(self) -> str:
        """describe() with the sanitizer report (which can be long) in full."""
        text = self.stderr_text(tail=1 << 30)
        i = min((text.find(m) for m in ("==ERROR", "runtime error:", "LeakSanitizer")
                 if m in text), default=-1)
        return self.describe() + ("" if i < 0 else "\n--- from the report ---\n" + text[max(0, i - 2000):i + 12000])

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_server(*flags, env: Optional[Dict[str, str]] = None, threads: int = THREADS,
                 timeout: float = STARTUP_TIMEOUT) -> Server:
    """Starts `sqserve serve` with the test model on a free port and waits for
    GET /health to answer 200. The caller must stop() it (or use `with`)."""
    require_serve()
    e = {k: v for k, v in os.environ.items() if not k.startswith("SQSERVE_")}
    if env:
        e.update(env)
    argv = [str(binary_path()), "serve", "-m", str(model_path()), "--port", "0",
            "--threads", str(threads), *map(str, flags)]
    s = Server(argv, e)
    try:
        s.wait_ready(timeout)
    except BaseException:
        s.stop(5)
        raise
    return s


# ---- Server-Sent Events -------------------------------------------------------------


def sse_events(response) -> Iterator[str]:
    """The `data:` payloads of an SSE response (httpx streaming response),
    including the final "[DONE]"."""
    data: List[str] = []
    for line in response.iter_lines():
        if line == "":
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        if line.startswith("data:"):
            v = line[5:]
            data.append(v[1:] if v.startswith(" ") else v)
    if data:
        yield "\n".join(data)


def stream_raw(server: Server, path: str, body: dict, timeout: float = HANG_S) -> Tuple[List[dict], bool, "httpx.Response"]:
    """POSTs a streaming request, reads it to the end. Returns (chunks, saw_done, response)."""
    chunks: List[dict] = []
    done = False
    with httpx.stream("POST", server.url(path), json=body, timeout=timeout) as r:
        if r.status_code != 200:
            r.read()
            return [], False, r
        for ev in sse_events(r):
            if ev == "[DONE]":
                done = True
                continue
            assert not done, f"data after [DONE]: {ev!r}"
            chunks.append(json.loads(ev))
    return chunks, done, r


# ---- Prometheus text format ---------------------------------------------------------

_SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\S+)?$')
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class Metrics:
    """A small parser of the Prometheus text format: samples and # TYPE lines."""

    def __init__(self, text: str):
        self.text = text
        self.types: Dict[str, str] = {}
        self.samples: List[Tuple[str, Dict[str, str], float]] = []
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                parts = line.split()
                if len(parts) >= 4:
                    self.types[parts[2]] = parts[3]
                continue
            if not line.strip() or line.startswith("#"):
                continue
            m = _SAMPLE_RE.match(line)
            if not m:
                raise AssertionError(f"unparsable metrics line: {line!r}")
            labels = dict(_LABEL_RE.findall(m.group(3) or ""))
            self.samples.append((m.group(1), labels, float(m.group(4))))

    def find(self, name: str, **labels) -> List[Tuple[Dict[str, str], float]]:
        return [(l, v) for n, l, v in self.samples
                if n == name and all(l.get(k) == str(x) for k, x in labels.items())]

    def value(self, name: str, default: Optional[float] = None, **labels) -> float:
        """Sum of the samples of `name` that carry the given labels."""
        found = self.find(name, **labels)
        if not found:
            if default is not None:
                return default
            raise AssertionError(f"metric {name}{labels or ''} not found in /metrics:\n"
                                 f"{self.text[:3000]}")
        return sum(v for _, v in found)

    def bucket(self, hist: str, le: str) -> float:
        found = [(l, v) for l, v in self.find(hist + "_bucket") if _same_le(l.get("le"), le)]
        if not found:
            raise AssertionError(f"no {hist}_bucket{{le=\"{le}\"}} in /metrics:\n"
                                 f"{self.text[:3000]}")
        return sum(v for _, v in found)


def _same_le(a: Optional[str], b: str) -> bool:
    if a is None:
        return False
    try:
        return float(a) == float(b)
    except ValueError:
        return a == b


def explain_greedy_diff(prompt, alone, batched) -> str:
    """Explains why two greedy completions (requested with logprobs>=2) of the
    same prompt differ: where, and whether it was a near tie (rounding) or not."""
    a, b = alone.choices[0], batched.choices[0]
    ta, tb = a.logprobs.tokens, b.logprobs.tokens
    k = next((i for i in range(min(len(ta), len(tb))) if ta[i] != tb[i]), None)
    if k is None:
        return f"{prompt!r}: texts differ but tokens agree?\n alone   {a.text!r}\n batched {b.text!r}"
    top_a = sorted(a.logprobs.top_logprobs[k].items(), key=lambda kv: -kv[1])
    top_b = sorted(b.logprobs.top_logprobs[k].items(), key=lambda kv: -kv[1])
    gap = top_a[0][1] - top_a[1][1] if len(top_a) > 1 else float("nan")
    drift = max((abs(x - y) for x, y in zip(a.logprobs.token_logprobs[:k],
                                           b.logprobs.token_logprobs[:k])), default=0.0)
    kind = ("a near tie between the top two tokens, so float rounding differences between "
            "the batched and single-row paths flipped it" if gap < 1e-3 else
            "not a near tie: the batched computation is wrong (KV/position/slot mix-up?)")
    return (f"{prompt!r}: first differing token #{k}: alone {ta[k]!r} vs batched {tb[k]!r}; "
            f"alone top-2 {top_a[:2]} (gap {gap:.2e}), batched top-2 {top_b[:2]}; max |logprob "
            f"drift| over the {k} equal tokens before it: {drift:.2e} -> {kind}\n"
            f"  alone   {a.text!r}\n  batched {b.text!r}")


def tokens_for_seconds(server: "Server", seconds: float, cap: int = 3800) -> int:
    """Calibration for tests that need a request to still be running while
    they do something else: measures this machine's decode speed now (one
    greedy 32-token request) and returns how many tokens take about
    `seconds` at that speed (at least 64, at most `cap`). A slow or loaded
    machine gets fewer tokens, a fast one more, so the test's window does not
    depend on the machine."""
    t0 = time.monotonic()
    r = server.post("/v1/completions", {"model": MODEL_ID, "prompt": "Count: one, two,",
                                        "max_tokens": 32, "temperature": 0, "ignore_eos": True},
                    timeout=None)
    took = time.monotonic() - t0
    assert r.status_code == 200, r.text
    n = int(r.json()["usage"]["completion_tokens"] / max(took, 1e-3) * seconds)
    return max(64, min(cap, n))


def wait_until(pred, timeout: float = 10, interval: float = 0.1):
    """Polls pred() until it returns something truthy; returns its last value."""
    deadline = time.monotonic() + timeout
    v = pred()
    while not v and time.monotonic() < deadline:
        time.sleep(interval)
        v = pred()
    return v


@contextlib.contextmanager
def running_prometheus(binary: str, config: Path, workdir: Path, timeout: float):
    """A Prometheus server on a free port reading `config` (TSDB and log in
    workdir), ready to answer. Yields (API URL, a function giving the tail of
    its log); stopped (TERM, then KILL) on exit."""
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    log = open(workdir / "prometheus.log", "w")
    prom = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            cwd=workdir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def prom_log() -> str:
        log.flush()
        return (workdir / "prometheus.log").read_text()[-3000:]

    try:
        def ready():
            if prom.poll() is not None:
                pytest.fail(f"prometheus exited {prom.returncode}\n{prom_log()}")
            try:
                return httpx.get(api + "/-/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False
        assert wait_until(ready, timeout, 0.2), f"prometheus not ready in {timeout} s\n{prom_log()}"
        yield api, prom_log
    finally:
        prom.terminate()
        try:
            prom.wait(15)
        except subprocess.TimeoutExpired:
            prom.kill()
            prom.wait(5)
        log.close()


def check_error_shape(r, status: int, param: object = ...) -> dict:
    """Asserts the response has `status` and the OpenAI error shape
    {"error": {"message", "type", "param", "code"}}; `param`, when given, is
    the expected value of error.param (a callable predicate is allowed)."""
    ctx = f"{r.request.method} {r.request.url.path} -> {r.status_code} {r.text[:500]!r}"
    assert r.status_code == status, f"expected status {status}: {ctx}"
    try:
        j = r.json()
    except ValueError:
        raise AssertionError(f"error body is not JSON: {ctx}") from None
    assert isinstance(j, dict) and isinstance(j.get("error"), dict), f"no error object: {ctx}"
    e = j["error"]
    for k in ("message", "type", "param", "code"):
        assert k in e, f"error object lacks {k!r}: {ctx}"
    assert isinstance(e["message"], str) and e["message"].strip(), f"empty error.message: {ctx}"
    assert isinstance(e["type"], str) and e["type"], f"error.type not a non-empty string: {ctx}"
    assert e["param"] is None or isinstance(e["param"], str), f"error.param: {ctx}"
    assert e["code"] is None or isinstance(e["code"], (str, int)), f"error.code: {ctx}"
    if param is not ...:
        if callable(param):
            assert param(e["param"]), f"unexpected error.param {e['param']!r}: {ctx}"
        else:
            assert e["param"] == param, f"error.param should be {param!r}: {ctx}"
    ct = r.headers.get("content-type", "")
    assert "application/json" in ct, f"error content-type {ct!r}: {ctx}"
    return e
