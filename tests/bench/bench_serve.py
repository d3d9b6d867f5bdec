#!/usr/bin/env python3
"""Load generator for `sqserve serve` (make bench-serve).

Standard library only (threads + http.client; no openai package: the
benchmark machine has 2 cores and the client must stay cheap).

Each level runs C concurrent clients; each client sends its share of the
level's requests back to back, one keep-alive connection per client. Every
request is a streamed POST /v1/completions with
    "stream": true, "stream_options": {"include_usage": true},
    "ignore_eos": true, "temperature": 0.7, "seed": <per request>,
    "max_tokens": uniform 16..96
and a prompt of uniform 16..128 words drawn from WORDS below. Each word is a
single token of the SmolLM2 tokenizer (" word" -> 1 token, and the first word
without its space as well), and the server adds no BOS to completions, so a
prompt of k words is k prompt tokens; usage.prompt_tokens is checked against
that and the mean is reported.

Per request it measures
  TTFT: send -> first SSE data frame whose choice text is non-empty;
  ITL:  the gaps between consecutive SSE frames carrying non-empty text;
  output tokens: usage.completion_tokens of the last chunk before [DONE].
A request counts as an error when the status is not 200, the connection
fails, the stream ends without [DONE] or without usage, or completion_tokens
differs from max_tokens (ignore_eos makes them equal).

Per level: requests/s and output tokens/s over the level's wall time (first
send to last [DONE]), TTFT and ITL p50/p99 (linear interpolation between
closest ranks), errors. All randomness comes from random.Random(1234), drawn
in a fixed order, so every run sends the same requests.

Output: a markdown table on stdout (and --markdown FILE), raw figures as JSON
with --json FILE.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import sys
import threading
import time
from typing import Dict, List, Optional, Tuple
from urllib.parse import urlparse

SEED = 1234
PROMPT_WORDS = (16, 128)   # uniform, inclusive; = prompt tokens
OUTPUT_TOKENS = (16, 96)   # uniform, inclusive; max_tokens with ignore_eos
TEMPERATURE = 0.7
# (concurrency, requests per client)
DEFAULT_LEVELS = [(1, 8), (4, 4), (16, 3), (64, 2)]

WORDS = """time year people way day man thing woman life child world school
state family student group country problem hand part place case week company
system program question work government number night point home water room
mother area money story fact month lot right study book eye job word business
issue side kind head house service friend father power hour game line end
member law car city community name president team minute idea kid body
information back parent face others level office door health person art war
history party result change morning reason research girl guy moment air
teacher force education river stone garden window apple table light music road
tree paper color market letter sound voice field island""".split()


def percentile(xs: List[float], p: float) -> Optional[float]:
    if not xs:
        return None
    s = sorted(xs)
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


class Result:
    __slots__ = ("ok", "error", "ttft", "itl", "out_tokens", "prompt_tokens",
                 "t_start", "t_end", "frames", "got_status", "stale")

    def __init__(self) -> None:
        self.ok = False
        self.error = ""
        self.ttft: Optional[float] = None
        self.itl: List[float] = []
        self.out_tokens = 0
        self.prompt_tokens = 0
        self.t_start = 0.0
        self.t_end = 0.0
        self.frames = 0
        self.got_status = False  # a status line came back
        self.stale = False       # failed before any response: see run_level


def make_plan(rng: random.Random, levels: List[Tuple[int, int]]):
    """Every request of every level, drawn in a fixed order from one RNG."""
    plan = []
    for conc, per_client in levels:
        clients = []
        for _ in range(conc):
            reqs = []
            for _ in range(per_client):
                n_words = rng.randint(*PROMPT_WORDS)
                prompt = " ".join(rng.choice(WORDS) for _ in range(n_words))
                reqs.append({
                    "prompt": prompt,
                    "n_words": n_words,
                    "max_tokens": rng.randint(*OUTPUT_TOKENS),
                    "seed": rng.randrange(2**31),
                })
            clients.append(reqs)
        plan.append((conc, per_client, clients))
    return plan


def one_request(conn: http.client.HTTPConnection, model: str, req: dict,
                timeout: float) -> Tuple[Result, bool]:
    """Returns the result and whether the connection is still usable."""
    r = Result()
    body = json.dumps({
        "model": model, "prompt": req["prompt"], "max_tokens": req["max_tokens"],
        "stream": True, "stream_options": {"include_usage": True},
        "ignore_eos": True, "temperature": TEMPERATURE, "seed": req["seed"],
    }).encode()
    r.t_start = time.perf_counter()
    try:
        conn.request("POST", "/v1/completions", body,
                     {"Content-Type": "application/json", "Accept": "text/event-stream"})
        resp = conn.getresponse()
        r.got_status = True
        if resp.status != 200:
            r.error = f"HTTP {resp.status}: {resp.read()[:200]!r}"
            r.t_end = time.perf_counter()
            return r, not resp.will_close
        last_text_t: Optional[float] = None
        usage = None
        done = False
        while True:
            line = resp.readline()
            if not line:
                break
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                done = True
                break
            now = time.perf_counter()
            chunk = json.loads(data)
            r.frames += 1
            if chunk.get("usage"):
                usage = chunk["usage"]
            choices = chunk.get("choices") or []
            if choices and choices[0].get("text"):
                if last_text_t is None:
                    r.ttft = now - r.t_start
                else:
                    r.itl.append(now - last_text_t)
                last_text_t = now
        if done:
            resp.read()  # consume the terminating chunk so the connection is reusable
        r.t_end = time.perf_counter()
        if not done:
            r.error = "stream ended without [DONE]"
        elif usage is None:
            r.error = "no usage chunk"
        else:
            r.out_tokens = int(usage.get("completion_tokens", 0))
            r.prompt_tokens = int(usage.get("prompt_tokens", 0))
            if r.ttft is None:
                r.error = "no text frame"
            elif r.out_tokens != req["max_tokens"]:
                r.error = f"completion_tokens {r.out_tokens} != max_tokens {req['max_tokens']}"
            else:
                r.ok = True
        return r, done and not resp.will_close
    except Exception as e:  # connection reset, timeout, bad JSON...
        r.t_end = time.perf_counter()
        r.error = f"{type(e).__name__}: {e}"
        r.stale = not r.got_status and isinstance(
            e, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError))
        return r, False


def run_level(host: str, port: int, model: str, clients: List[List[dict]],
              timeout: float) -> Tuple[List[Result], float]:
    results: List[List[Result]] = [[] for _ in clients]
    barrier = threading.Barrier(len(clients) + 1)

    def client(i: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        barrier.wait()
        for n, req in enumerate(clients[i]):
            res, reusable = one_request(conn, model, req, timeout)
            if n > 0 and res.stale:
                # a kept-alive connection the server had closed before it read
                # the request (HTTP clients resend then, as urllib3 does):
                # once more on a new connection
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=timeout)
                res, reusable = one_request(conn, model, req, timeout)
            results[i].append(res)
            if not reusable:
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True)
               for i in range(len(clients))]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    t1 = time.perf_counter()
    flat = [r for rs in results for r in rs]
    return flat, t1 - t0


def summarize(conc: int, per_client: int, results: List[Result], wall: float,
              plan_clients: List[List[dict]]) -> dict:
    ok = [r for r in results if r.ok]
    ttft = [r.ttft for r in ok if r.ttft is not None]
    itl = [g for r in ok for g in r.itl]
    out_tokens = sum(r.out_tokens for r in ok)
    reqs = [q for c in plan_clients for q in c]
    prompt_mismatch = sum(1 for r, q in zip(results, reqs)
                          if r.ok and r.prompt_tokens != q["n_words"])
    errors = [r.error for r in results if not r.ok]
    return {
        "concurrency": conc,
        "requests_per_client": per_client,
        "requests": len(results),
        "ok": len(ok),
        "errors": len(errors),
        "error_samples": sorted(set(errors))[:5],
        "wall_s": wall,
        "requests_per_s": len(ok) / wall if wall > 0 else 0.0,
        "output_tokens": out_tokens,
        "output_tokens_per_s": out_tokens / wall if wall > 0 else 0.0,
        "prompt_tokens_mean": (sum(r.prompt_tokens for r in ok) / len(ok)) if ok else 0.0,
        "prompt_tokens_mismatch": prompt_mismatch,
        "text_frames_per_token": (sum(len(r.itl) + 1 for r in ok) / out_tokens) if out_tokens else 0.0,
        "ttft_p50_ms": _ms(percentile(ttft, 50)),
        "ttft_p99_ms": _ms(percentile(ttft, 99)),
        "itl_p50_ms": _ms(percentile(itl, 50)),
        "itl_p99_ms": _ms(percentile(itl, 99)),
        "itl_samples": len(itl),
    }


def _ms(x: Optional[float]) -> Optional[float]:
    return None if x is None else x * 1000.0


def _f(x: Optional[float], nd: int = 1) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def markdown(levels: List[dict], ratio: Optional[float]) -> str:
    rows = ["| clients | requests | requests/s | output tokens/s | TTFT p50 ms | TTFT p99 ms "
            "| ITL p50 ms | ITL p99 ms | errors |",
            "|---|---|---|---|---|---|---|---|---|"]
    for L in levels:
        rows.append(
            f"| {L['concurrency']} | {L['requests']} ({L['requests_per_client']}/client) "
            f"| {_f(L['requests_per_s'], 2)} | {_f(L['output_tokens_per_s'])} "
            f"| {_f(L['ttft_p50_ms'])} | {_f(L['ttft_p99_ms'])} "
            f"| {_f(L['itl_p50_ms'])} | {_f(L['itl_p99_ms'])} | {L['errors']} |")
    out = "\n".join(rows) + "\n"
    if ratio is not None:
        out += f"\nOutput tokens/s at 16 clients vs 1 client: **{ratio:.2f}x**.\n"
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="server base URL, http://127.0.0.1:PORT")
    ap.add_argument("--model", help="served model id (default: the first of GET /v1/models)")
    ap.add_argument("--levels", default=",".join(f"{c}x{n}" for c, n in DEFAULT_LEVELS),
                    help="CONCURRENCYxREQUESTS_PER_CLIENT,... [%(default)s]")
    ap.add_argument("--timeout", type=float, default=300.0, help="per-request socket timeout, s")
    ap.add_argument("--no-warmup", action="store_true")
    ap.add_argument("--json", help="write raw figures here")
    ap.add_argument("--markdown", help="write the table here")
    a = ap.parse_args()

    levels = [tuple(int(x) for x in s.split("x")) for s in a.levels.split(",")]
    u = urlparse(a.url)
    host, port = u.hostname or "127.0.0.1", u.port or 80

    if not a.model:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        conn.request("GET", "/v1/models")
        a.model = json.loads(conn.getresponse().read())["data"][0]["id"]
        conn.close()

    rng = random.Random(SEED)
    plan = make_plan(rng, levels)  # type: ignore[arg-type]

    if not a.no_warmup:  # one short request: page in the weights, not measured
        conn = http.client.HTTPConnection(host, port, timeout=a.timeout)
        r, _ = one_request(conn, a.model, {"prompt": " ".join(WORDS[:32]), "max_tokens": 16,
                                           "seed": 0, "n_words": 32}, a.timeout)
        conn.close()
        if not r.ok:
            print(f"warm-up request failed: {r.error}", file=sys.stderr)
            return 1

    summaries = []
    for conc, per_client, clients in plan:
        results, wall = run_level(host, port, a.model, clients, a.timeout)
        s = summarize(conc, per_client, results, wall, clients)
        summaries.append(s)
        print(f"c={conc:<3} {s['requests']} requests in {wall:.1f} s: "
              f"{s['requests_per_s']:.2f} req/s, {s['output_tokens_per_s']:.1f} out tok/s, "
              f"TTFT p50 {_f(s['ttft_p50_ms'])} ms p99 {_f(s['ttft_p99_ms'])} ms, "
              f"ITL p50 {_f(s['itl_p50_ms'])} ms p99 {_f(s['itl_p99_ms'])} ms, "
              f"errors {s['errors']} {s['error_samples'] if s['errors'] else ''}",
              file=sys.stderr, flush=True)

    by_c = {s["concurrency"]: s for s in summaries}
    ratio = None
    if 1 in by_c and 16 in by_c and by_c[1]["output_tokens_per_s"] > 0:
        ratio = by_c[16]["output_tokens_per_s"] / by_c[1]["output_tokens_per_s"]

    md = markdown(summaries, ratio)
    sys.stdout.write(md)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(md)
    if a.json:
        with open(a.json, "w") as f:
            n_ok = sum(s["ok"] for s in summaries)
            json.dump({"seed": SEED, "prompt_words": PROMPT_WORDS, "output_tokens": OUTPUT_TOKENS,
                       "temperature": TEMPERATURE, "levels": summaries,
                       "levels_desc": ", ".join(f"{s['concurrency']} x {s['requests_per_client']}"
                                                for s in summaries),
                       "prompt_tokens_mean": sum(s["prompt_tokens_mean"] * s["ok"]
                                                 for s in summaries) / max(1, n_ok),
                       "client_cpu_s": sum(os.times()[:2]),
                       "ratio_16_vs_1": ratio}, f, indent=2)
    return 0 if all(s["errors"] == 0 for s in summaries) else 2


if __name__ == "__main__":
    sys.exit(main())
