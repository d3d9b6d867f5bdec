"""GET /metrics: valid Prometheus text (promtool), every documented metric
with its type, counters that add up to the traffic sent, consistent
histograms, and a real Prometheus server scraping it. Contract: docs/api.md.

promtool and prometheus come from Debian's `prometheus` package
(deploy/install-deps.sh installs it; this module tries apt-get itself when
it is missing and skips, saying why, only if that fails).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from serve_util import (MODEL_ID, REPO_ROOT, Metrics, httpx, running_prometheus, start_server,
                        wait_until)

WAIT = 30  # every wait on Prometheus is bounded by this many seconds


def _ensure_prometheus() -> None:
    if shutil.which("promtool") and shutil.which("prometheus"):
        return
    why = "promtool/prometheus not installed (Debian package `prometheus`)"
    if shutil.which("apt-get") is None:
        pytest.skip(f"{why}; no apt-get to install it")
    cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"]
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            pytest.skip(f"{why}; not root and no sudo to install it")
        cmd = ["sudo", "-n", *cmd]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    p = None
    for attempt in range(2):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env,
                               stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            pytest.skip(f"{why}; apt-get install timed out")
        if p.returncode == 0:
            break
        if attempt == 0:  # stale package lists: update once and retry
            subprocess.run(cmd[:cmd.index("apt-get") + 1] + ["update", "-qq"],
                           capture_output=True, timeout=300, env=env)
    if not (shutil.which("promtool") and shutil.which("prometheus")):
        pytest.skip(f"{why}; apt-get install failed: {p.stderr[-500:] if p else ''}")


@pytest.fixture(scope="module")
def server():
    s = start_server()
    yield s
    s.stop()


def _traffic(server, n=2):
    c = server.openai()
    for i in range(n):
        c.completions.create(model=MODEL_ID, prompt=f"Count to {i + 3}:", max_tokens=8,
                             temperature=0)
    list(c.chat.completions.create(model=MODEL_ID, max_tokens=8, stream=True,
                                   messages=[{"role": "user", "content": "Hi"}]))
    server.get("/no/such/route")
    server.post("/v1/completions", {"model": MODEL_ID})  # 400
    c.close()


def _doc_metrics():
    """{name: type} from docs/api.md's Metrics section: the paragraph it is
    listed in gives the type; names after "with counters" are counters."""
    doc = (REPO_ROOT / "docs" / "api.md").read_text()
    sec = doc.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    out = {}
    for kind, typ in (("Counters", "counter"), ("Gauges", "gauge"), ("Histograms", "histogram")):
        part = sec.split(kind + ":", 1)[1]
        part = re.split(r"\n(?:Counters|Gauges|Histograms):", part, maxsplit=1)[0]
        part, _, counters = part.partition("with counters")
        for name in re.findall(r"`(sqserve_[a-z0-9_]+)", part):
            out[name] = typ
        for name in re.findall(r"`(sqserve_[a-z0-9_]+)", counters):
            out[name] = "counter"
    assert len(out) >= 19, out
    return out


# Exported only when the model is served through a quantization recipe with a
# startup evaluation (docs/api.md: "startup evaluation of a quantized model").
RECIPE_ONLY = {"sqserve_model_eval"}


def test_promtool_check_metrics(server):
    _ensure_prometheus()
    _traffic(server)
    text = server.metrics_text()
    p = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0 and not p.stdout.strip() and not p.stderr.strip(), \
        f"promtool check metrics: exit {p.returncode}\n{p.stdout}\n{p.stderr}\n--- metrics ---\n{text}"


def test_content_type(server):
    r = server.get("/metrics")
    ct = r.headers.get("content-type", "")
    assert ct.startswith("text/plain") and "version=0.0.4" in ct, ct


def test_every_documented_metric_is_exported(server):
    _traffic(server, 1)
    m = server.metrics()
    for name, typ in _doc_metrics().items():
        if name in RECIPE_ONLY and name not in m.types:
            continue
        assert m.types.get(name) == typ, f"{name}: # TYPE {m.types.get(name)!r}, want {typ!r}"
        assert f"# HELP {name} " in m.text, f"{name} has no HELP line"
        if typ == "histogram":
            assert m.find(name + "_count") and m.find(name + "_sum"), name
            assert m.find(name + "_bucket", le="+Inf"), name
        else:
            assert m.find(name), f"{name} has no sample"
    info = m.find("sqserve_model_info")
    assert len(info) == 1 and info[0][1] == 1, info
    labels = info[0][0]
    assert labels.get("model") == MODEL_ID, labels
    assert labels.get("recipe") and labels.get("bits_per_weight"), labels
    assert labels.get("device") == "cpu", labels
    float(labels["bits_per_weight"])
    reqs = m.find("sqserve_requests_total")
    assert reqs and all("endpoint" in l and "code" in l for l, _ in reqs), reqs
    codes = {l["code"] for l, _ in reqs}
    assert {"200", "400", "404"} <= codes, codes
    assert m.value("sqserve_kv_blocks_capacity") > 0


def test_histograms_are_consistent(server):
    _traffic(server, 1)
    m = server.metrics()
    hists = [n for n, t in m.types.items() if t == "histogram"]
    assert hists
    for h in hists:
        buckets = sorted(((float(l["le"]), v) for l, v in m.find(h + "_bucket")),
                         key=lambda x: x[0])
        assert buckets and buckets[-1][0] == float("inf"), (h, buckets)
        counts = [v for _, v in buckets]
        assert counts == sorted(counts), f"{h}: buckets not cumulative: {buckets}"
        assert buckets[-1][1] == m.value(h + "_count"), h
        assert m.value(h + "_sum") >= 0, h


def _completions_code_200(m: Metrics) -> float:
    return sum(v for l, v in m.find("sqserve_requests_total", code="200")
               if l.get("endpoint", "").rstrip("/").endswith("completions")
               and "chat" not in l.get("endpoint", ""))


def test_counters_add_up(server):
    c = server.openai()
    before = server.metrics()
    r = c.completions.create(model=MODEL_ID, prompt="The alphabet starts with", max_tokens=6,
                             temperature=0, extra_body={"ignore_eos": True})
    after = server.metrics()
    u = r.usage
    d = lambda name: after.value(name) - before.value(name)  # noqa: E731
    assert d("sqserve_prompt_tokens_total") == u.prompt_tokens
    assert d("sqserve_generation_tokens_total") == u.completion_tokens == 6
    assert _completions_code_200(after) - _completions_code_200(before) == 1
    for h in ("sqserve_e2e_latency_seconds", "sqserve_time_to_first_token_seconds",
              "sqserve_queue_time_seconds", "sqserve_prompt_length_tokens",
              "sqserve_output_length_tokens"):
        assert d(h + "_count") == 1, h
    assert d("sqserve_output_length_tokens_sum") == 6
    assert d("sqserve_prompt_length_tokens_sum") == u.prompt_tokens
    assert d("sqserve_inter_token_latency_seconds_count") == 5  # 6 tokens, 5 gaps
    assert d("sqserve_step_tokens_sum") >= u.prompt_tokens + 5
    assert d("sqserve_engine_steps_total") == d("sqserve_step_tokens_count") >= 6
    assert 0 < d("sqserve_e2e_latency_seconds_sum") < 30
    c.close()


def test_prometheus_scrapes(server, tmp_path: Path):
    _ensure_prometheus()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(f"""global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: sqserve
    metrics_path: /metrics
    static_configs:
      - targets: ["127.0.0.1:{server.port}"]
""")
    with running_prometheus("prometheus", cfg, tmp_path, WAIT) as (api, prom_log):
        _traffic(server, 3)

        def target_up():
            j = httpx.get(api + "/api/v1/targets", timeout=5).json()
            t = j["data"]["activeTargets"]
            return t and t[0]["health"] == "up" and t[0]
        t = wait_until(target_up, WAIT, 0.5)
        assert t, f"target never up: {httpx.get(api + '/api/v1/targets').text}\n{prom_log()}"

        last = {}

        def value():
            nonlocal last
            last = httpx.get(api + "/api/v1/query",
                             params={"query": "sqserve_generation_tokens_total"}, timeout=5).json()
            res = last.get("data", {}).get("result", [])
            return res and float(res[0]["value"][1]) > 0 and res
        res = wait_until(value, WAIT, 0.5)
        assert res, f"query API never returned sqserve_generation_tokens_total > 0: {last}"
        assert res[0]["metric"].get("job") == "sqserve"
        # a histogram query works too
        q = httpx.get(api + "/api/v1/query", timeout=5, params={
            "query": "sqserve_e2e_latency_seconds_count"}).json()
        assert q["status"] == "success" and float(q["data"]["result"][0]["value"][1]) > 0, q
