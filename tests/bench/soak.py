"""make soak: a long mixed streaming load against one `sqserve serve`.

    .venv/bin/python tests/bench/soak.py --bin build/sqserve --model M [--label L]
        [--clients 64] [--seconds 300] [--warmup 120] [--disconnect 0.1] [--kv-mem 512] [--out docs/soak.md]

CLIENTS coroutines stream /v1/completions back to back for SECONDS, each
request with a random prompt and a max_tokens drawn from a mix (8 to 256);
a fraction DISCONNECT of them close their stream after a few chunks. Checked
(exit status 1 when any fails): no request fails except those we cut (a
failure is a non-200 answer, a transport error, a stream without [DONE], or
a finished stream without finish_reason "stop"/"length"); the server's RSS
grows less than 5 % from the end of the warm-up to the end; the running,
waiting and KV-block gauges return to idle afterwards. RSS is compared
between the first sample that ends the warm-up and the last sample under
load. The warm-up ends when at least WARMUP seconds have passed and the
server has computed twice as many tokens as its KV pool holds: the pool is
mapped at start and hands out its least recently used block first, so its
pages are first touched over at least that much work, and the forward
pass's buffers grow to the largest batch seen meanwhile (in the quiet
300 s runs of docs/soak.md RSS levelled off after about 1.3 pools' worth of
tokens). A count, not a time: on a slow machine it takes longer. A run that never gets there cannot tell a leak
from the pool's first use, and fails saying so. A request counts once,
whether it failed by an error event, a status or a stream without a finish
reason. Reported: requests,
tokens, p50/p99 time to first token and inter-token latency, the RSS curve
(one sample every 10 s). A section per label is written into OUT between
<!-- soak:LABEL --> markers (the rest of the file is left alone).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

LENGTHS = [8, 16, 32, 64, 128, 256]
KV_BLOCK = 16  # tokens per KV block (engine/compute/kv.h)
WARM_POOLS = 2  # the warm-up: tokens computed >= this many times the KV pool's tokens
Metrics = None  # serve_util.Metrics, imported once the environment is set
PROMPTS = ["Write a story about a lighthouse keeper.", "Explain how rain forms.",
           "List ten fruits and their colours.", "What is the capital of France?",
           "Describe a busy market in the morning.", "Give me a recipe for pancakes.",
           "Summarise the history of printing.", "Why is the sky blue?"]


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        m = re.search(r"^VmRSS:\s+(\d+)", f.read(), re.M)
    return int(m.group(1)) if m else 0


async def client(i, url, model_id, stop_at, args, st, httpx):
    rnd = random.Random(i)
    async with httpx.AsyncClient(timeout=600) as c:
        while time.monotonic() < stop_at:
            cut = rnd.random() < args.disconnect
            body = {"model": model_id, "prompt": f"{rnd.choice(PROMPTS)} ({i}-{st['sent']})",
                    "max_tokens": rnd.choice(LENGTHS), "temperature": 0.7, "stream": True,
                    "seed": rnd.randrange(1 << 30)}
            st["sent"] += 1
            t0 = time.monotonic()
            last, chunks, done, finish, error = None, 0, False, None, None
            try:
                async with c.stream("POST", url + "/v1/completions", json=body) as r:
                    if r.status_code != 200:
                        st["failed"].append(f"status {r.status_code}: {(await r.aread())[:200]!r}")
                        continue
                    async for line in r.aiter_lines():
                        if not line.startswith("data: "):
                            continue
                        data = line[6:]
                        if data == "[DONE]":
                            done = True
                            break
                        ev = json.loads(data)
                        if "error" in ev:
                            error = ev["error"]
                            continue
                        now = time.monotonic()
                        ch = ev["choices"][0]
                        if ch.get("finish_reason"):
                            finish = ch["finish_reason"]
                        if ch.get("text"):
                            if last is None:
                                st["ttft"].append(now - t0)
                            else:
                                st["itl"].append(now - last)
                            last = now
                            chunks += 1
                            st["tokens"] += 1
                        if cut and chunks >= 1 + rnd.randrange(5):
                            break  # leaving the block closes the stream: a disconnect
            except Exception as e:  # noqa: BLE001 - counted as a failure
                st["failed"].append(repr(e))
                continue
            if error is not None:
                st["failed"].append(f"error event: {error}")
            elif cut and not done:
                st["cut"] += 1
            elif not done or finish not in ("stop", "length"):
                st["failed"].append(f"stream ended done={done} finish={finish}")
            else:
                st["ok"] += 1


async def run(args, server, httpx):
    st = {"sent": 0, "ok": 0, "cut": 0, "tokens": 0, "failed": [], "ttft": [], "itl": []}
    t_start = time.monotonic()
    stop_at = t_start + args.seconds
    rss = []

    async def sampler():  # (seconds, RSS KiB, tokens computed so far)
        async with httpx.AsyncClient(timeout=600) as c:
            while time.monotonic() < stop_at:
                t, k = time.monotonic() - t_start, rss_kib(server.proc.pid)
                m = Metrics((await c.get(server.url("/metrics"))).text)
                rss.append((t, k, m.value("sqserve_prompt_tokens_total") + m.value("sqserve_generation_tokens_total")))
                await asyncio.sleep(10)
    tasks = [asyncio.create_task(client(i, server.base_url, server_model(server), stop_at, args, st, httpx))
             for i in range(args.clients)]
    await asyncio.gather(sampler(), *tasks)
    return st, rss  # samples under load only (after it, freed memory may be returned)


def server_model(server):
    return server.get("/v1/models").json()["data"][0]["id"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--label", default=None)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=300)
    # The KV pool (512 MiB here) is mapped at start and its pages are first
    # touched as blocks are handed out: at 64 clients that takes ~100 s, so
    # the warm-up ends after it (the RSS curve in docs/soak.md shows it).
    ap.add_argument("--warmup", type=float, default=120)
    ap.add_argument("--disconnect", type=float, default=0.1)
    # a smaller pool is cycled through sooner (a slow machine reaches the end of the warm-up)
    ap.add_argument("--kv-mem", type=int, default=512, help="--kv-cache-mem, MiB")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    os.environ["SQSERVE_BIN"] = str(Path(args.bin).resolve())
    os.environ["SQSERVE_TEST_MODEL"] = str(Path(args.model).resolve())
    global Metrics
    from serve_util import Metrics, httpx, start_server, wait_until  # after the environment is set
    label = args.label or Path(args.model).name
    server = start_server("--max-seqs", 64, "--max-queue", 256, "--kv-cache-mem", args.kv_mem)
    problems = []
    try:
        idle_kv = server.metrics().value("sqserve_kv_blocks_used")
        pool_tokens = server.metrics().value("sqserve_kv_blocks_capacity") * KV_BLOCK
        warm_tokens = WARM_POOLS * pool_tokens
        st, rss = asyncio.run(run(args, server, httpx))

        def idle():
            m = server.metrics()
            return (m.value("sqserve_running_sequences") == 0 and m.value("sqserve_waiting_sequences") == 0
                    and m.value("sqserve_kv_blocks_used") == idle_kv) and m
        m = wait_until(idle, 600, 0.5)
        if not m:
            problems.append("the gauges did not return to idle (running, waiting, KV blocks)")
        warm = [(t, k) for t, k, n in rss if t >= args.warmup and n >= warm_tokens]
        warm_t, warm_k = warm[0] if warm else (rss[-1][0], rss[-1][1])
        growth = (rss[-1][1] - warm_k) / warm_k * 100
        if not warm:
            problems.append(f"the warm-up never ended: {rss[-1][2]:.0f} tokens computed of {warm_tokens:.0f} "
                            f"(RSS growth cannot be told from the first use of the KV pool and buffers)")
        elif growth >= 5:
            problems.append(f"RSS grew {growth:.1f} % after the warm-up")
        if st["failed"]:
            problems.append(f"{len(st['failed'])} failed requests, e.g. {st['failed'][:3]}")
    finally:
        rc = server.stop()
    if rc != 0:
        problems.append(f"the server exited {rc} after SIGTERM")
    lines = [f"### {label}: {args.clients} clients, {args.seconds:.0f} s, "
             f"{args.disconnect:.0%} disconnecting mid-stream, {args.kv_mem} MiB KV pool",
             "",
             "| requests | completed | cut by the client | failed | tokens streamed | TTFT p50 / p99 | ITL p50 / p99 | RSS after warm-up -> end |",
             "|---|---|---|---|---|---|---|---|",
             f"| {st['sent']} | {st['ok']} | {st['cut']} | {len(st['failed'])} | {st['tokens']} | "
             f"{pct(st['ttft'], 50) * 1e3:.0f} / {pct(st['ttft'], 99) * 1e3:.0f} ms | "
             f"{pct(st['itl'], 50) * 1e3:.0f} / {pct(st['itl'], 99) * 1e3:.0f} ms | "
             f"{warm_k / 1024:.1f} -> {rss[-1][1] / 1024:.1f} MiB ({growth:+.2f} %) |",
             "",
             "RSS (MiB) every 10 s: " + ", ".join(f"{k / 1024:.1f}" for _, k, _ in rss),
             "",
             f"Warm-up: {'ended at ' + format(warm_t, '.0f') + ' s' if warm else 'never ended'} "
             f"(at least {args.warmup:.0f} s and {warm_tokens:.0f} tokens computed, {WARM_POOLS} x the KV pool); "
             f"{rss[-1][2]:.0f} tokens computed by the last sample.",
             "",
             f"Gauges back to idle after the run: {'yes' if m else 'NO'}. "
             f"Result: {'pass' if not problems else 'FAIL: ' + '; '.join(problems)}.", ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        out = Path(args.out)
        doc = out.read_text() if out.exists() else "# Soak runs (make soak)\n\n"
        begin, end = f"<!-- soak:{label} -->", f"<!-- /soak:{label} -->"
        block = f"{begin}\n{text}\n{end}"
        if begin in doc and end in doc:
            doc = doc[:doc.index(begin)] + block + doc[doc.index(end) + len(end):]
        else:
            doc = doc.rstrip("\n") + "\n\n" + block + "\n"
        out.write_text(doc)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
