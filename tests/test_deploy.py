"""The deployment files (deploy/, .dockerignore, README "Deploying"), checked
without Docker: the development and CI machines have no Docker engine, so the
images are never built here. What is checked instead:

- Prometheus: `promtool check config` / `check rules`; a real Prometheus
  (Debian's) loads deploy/prometheus/ as shipped (targets pointed at a test
  server), evaluates the rules without errors and answers every Grafana
  dashboard query with data.
- Grafana dashboard, Prometheus rules, autoscaler adapter rules: every metric,
  label and label value a PromQL expression names is one a running sqserve
  exports (read from its /metrics; tests/promql.py does the parsing, and its
  own tests below show that it catches misspellings).
- Compose file and Kubernetes manifests: they parse; their SQSERVE_* names are
  those `sqserve serve --help` lists; each set of values starts a real server
  (API key enforced) whose probe paths answer 200 on the port the manifests
  use; ports, aliases, mounts, grace periods and selectors agree across files.
- Dockerfiles: their build stages run only make targets CI runs (no compiler
  command of their own), COPY only files the context has, run sqserve as a
  non-root user through an exec-form ENTRYPOINT, check /health; their RUN
  lines and every shell script of the repository pass shellcheck; the runtime
  stage's package list script works on the binary built here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Set

import pytest
import yaml

from promql import Exported, PromQLError, parse, problems
from serve_util import (MODEL_ID, REPO_ROOT, Server, binary_path, httpx, running_prometheus,
                        model_path, require_serve, wait_until)

DEPLOY = REPO_ROOT / "deploy"
PROM_DIR = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "sqserve.json"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "docker-compose.yml"
TARGET_LABELS = {"job", "instance"}      # attached by Prometheus to every scraped series
K8S_LABELS = {"namespace", "pod"}        # attached by Kubernetes service discovery
SYNTHETIC = {"up"}                       # series Prometheus makes itself
WAIT = 30


def _need(tool: str) -> str:
    path = shutil.which(tool)
    assert path, f"{tool} is not installed: `make deps` (deploy/install-deps.sh) installs it"
    return path


def _yaml_docs(path: Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _seconds(v) -> float:
    """'45s', '1m30s', 60 -> seconds."""
    if isinstance(v, (int, float)):
        return float(v)
    total, rest = 0.0, str(v)
    for n, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", rest):
        total += float(n) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}[unit]
    assert total > 0, f"cannot read a duration from {v!r}"
    return total


# ---- what the binary accepts ----------------------------------------------------------

@dataclass
class Help:
    flags: Set[str]
    env: Dict[str, str]        # SQSERVE_X -> flag name
    defaults: Dict[str, str]   # flag name -> default
    lines: Dict[str, str]      # flag name -> its help line


@pytest.fixture(scope="module")
def serve_help() -> Help:
    require_serve()
    p = subprocess.run([str(binary_path()), "serve", "--help"], capture_output=True, text=True,
                       timeout=30, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    flags, env, defaults, lines = set(), {}, {}, {}
    for line in p.stdout.splitlines():
        m = re.match(r"\s*(?:-\w, )?--([a-z0-9-]+)", line)
        if not m:
            continue
        flags.add(m.group(1))
        lines[m.group(1)] = line
        e = re.search(r"\(env (SQSERVE_[A-Z0-9_]+)\)", line)
        if e:
            env[e.group(1)] = m.group(1)
        d = re.search(r"\[([^\]]*)\](?: \(env|$)", line)
        if d:
            defaults[m.group(1)] = d.group(1)
    assert {"host", "port", "model", "api-key", "drain-timeout"} <= flags, p.stdout
    assert env.get("SQSERVE_PORT") == "port" and env.get("SQSERVE_HOST") == "host", p.stdout
    return Help(flags, env, defaults, lines)


# variables for the libraries under sqserve, not for sqserve itself
OTHER_ENV = re.compile(r"(CUDA|NVIDIA|OPENBLAS|OMP)_[A-Z0-9_]+")


def _check_env_names(names, help_: Help, where: str) -> None:
    sq = [n for n in names if n.startswith("SQSERVE_")]
    unknown = sorted(set(sq) - set(help_.env))
    assert not unknown, (f"{where}: {unknown} are not environment variables of `sqserve serve` "
                         f"(it knows {sorted(help_.env)})")
    other = sorted(n for n in set(names) - set(sq) if not OTHER_ENV.fullmatch(n))
    assert not other, f"{where}: {other} are no sqserve variables (misspelt?)"


# ---- a server exporting every metric family --------------------------------------------

@pytest.fixture(scope="module")
def recipe_server():
    """A recipe (int8 weights) with a startup evaluation, so sqserve_model_eval
    is exported too, and every request shadowed."""
    require_serve()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQSERVE_")}
    s = Server([str(binary_path()), "serve", "-m", str(model_path()), "--port", "0",
                "--threads", "2", "--weights", "int8", "--startup-eval", "128",
                "--shadow-rate", "1"], env)
    try:
        assert s._port_found.wait(600) and s.port, s.describe()

        def healthy():  # conversion and evaluation take ~10 s, more on a busy machine
            assert s.alive(), f"server exited while loading\n{s.describe()}"
            try:
                return s.get("/health", timeout=60).status_code == 200
            except httpx.HTTPError:
                return False
        assert wait_until(healthy, 1800, 0.2), f"not ready in 1800 s (a hang guard)\n{s.describe()}"
        _traffic(s)
        yield s
    finally:
        s.stop()


def _traffic(s: Server) -> None:
    c = s.openai()
    c.completions.create(model=MODEL_ID, prompt="The capital of France is", max_tokens=6,
                         temperature=0)
    list(c.chat.completions.create(model=MODEL_ID, max_tokens=6, stream=True,
                                   messages=[{"role": "user", "content": "Hi"}]))
    c.close()
    s.get("/no/such/route")                          # a 404
    s.post("/v1/completions", {"model": MODEL_ID})   # a 400


@pytest.fixture(scope="module")
def exported(recipe_server) -> Exported:
    m = recipe_server.metrics()
    assert "sqserve_model_eval" in m.types, "the recipe server exports no startup evaluation"
    return Exported.from_metrics(m.types, m.samples)


# ---- the PromQL reader itself ----------------------------------------------------------

FAKE = Exported.from_metrics(
    {"sqserve_x_seconds": "histogram", "sqserve_y_total": "counter", "sqserve_eval": "gauge"},
    [("sqserve_x_seconds_bucket", {"le": "0.1"}, 1), ("sqserve_x_seconds_bucket", {"le": "+Inf"}, 1),
     ("sqserve_x_seconds_sum", {}, 0.05), ("sqserve_x_seconds_count", {}, 1),
     ("sqserve_eval", {"metric": "kl", "recipe": "r"}, 0.1)])


def test_promql_reader_finds_names_labels_and_groupings():
    p = parse('histogram_quantile(0.99, sum by (le, instance) (rate('
              'sqserve_x_seconds_bucket{instance=~"$instance", job="sqserve"}[$__rate_interval]'
              '))) > bool 1e3 and on() group_left sqserve_y_total offset 5m '
              '/ ignoring(metric) sqserve_eval{metric="kl"} @ start()')
    assert p.metric_names == {"sqserve_x_seconds_bucket", "sqserve_y_total", "sqserve_eval"}
    assert p.grouping_labels == {"le", "instance", "metric"}
    sel = p.selectors[0]
    assert [(m.label, m.op, m.value) for m in sel.matchers] == [
        ("instance", "=~", "$instance"), ("job", "=", "sqserve")]
    # words inside strings, durations, numbers and Grafana variables are no metrics
    p = parse('label_replace(sqserve_y_total{code!="sqserve_fake"}, "dst", "$1", "src", "(.*)")'
              ' * 1.5e-3 + count_over_time(sqserve_y_total[1h30m:1m]) - ${threshold}')
    assert p.metric_names == {"sqserve_y_total"}
    assert parse('sum without (a) (sqserve_y_total)').grouping_labels == {"a"}
    assert parse('{__name__="sqserve_y_total"}').metric_names == {"sqserve_y_total"}


def test_promql_reader_rejects_malformed_expressions():
    for bad in ('rate(sqserve_y_total[5m]', 'sqserve_y_total{code="200"', 'sqserve_y_total; 1',
                'rat(sqserve_y_total[5m])', 'sum by (le (sqserve_y_total)', 'sqserve_y_total{code}'):
        with pytest.raises(PromQLError):
            parse(bad)


def test_name_check_catches_what_sqserve_does_not_export():
    ok = 'histogram_quantile(0.5, sum by (le) (rate(sqserve_x_seconds_bucket[5m])))'
    assert problems(ok, FAKE, TARGET_LABELS) == []
    assert problems('sqserve_x_seconds_sum / sqserve_x_seconds_count', FAKE, TARGET_LABELS) == []
    assert problems('sqserve_eval{metric="kl", recipe=~".+", instance="a"}', FAKE, TARGET_LABELS) == []
    cases = {
        'rate(sqserve_x_secnods_bucket[5m])': "sqserve_x_secnods_bucket is not exported",
        'rate(sqserve_x_seconds[5m])': "sqserve_x_seconds is not exported",  # a histogram family
        'sqserve_x_seconds_total': "not exported",
        'sqserve_eval{metric="KL"}': "matches nothing",
        'sqserve_eval{metrc="kl"}': "has no label 'metrc'",
        'sum by (code) (sqserve_y_total)': "grouping label 'code'",
        '{job="sqserve"}': "without a metric name",
        'histogram_quantlie(0.5, sqserve_x_seconds_bucket)': "unknown function",
        'up{job="sqserve"} == 0': "up is not exported",
    }
    for expr, want in cases.items():
        found = problems(expr, FAKE, TARGET_LABELS)
        assert any(want in f for f in found), f"{expr!r}: {found}"
    assert problems('up{job="sqserve"} == 0', FAKE, TARGET_LABELS, SYNTHETIC) == []


# ---- Prometheus ------------------------------------------------------------------------

def _prom_config() -> dict:
    return yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())


def _rule_exprs() -> List[str]:
    out = []
    for f in _prom_config().get("rule_files", []):
        for g in yaml.safe_load((PROM_DIR / f).read_text())["groups"]:
            out += [r["expr"] for r in g["rules"]]
    assert out, "no rules in deploy/prometheus"
    return out


def test_promtool_check_config_and_rules():
    promtool = _need("promtool")
    p = subprocess.run([promtool, "check", "config", "prometheus.yml"], cwd=PROM_DIR,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, f"promtool check config:\n{p.stdout}\n{p.stderr}"
    rules = _prom_config().get("rule_files", [])
    assert rules and f"{len(rules)} rule files found" in p.stdout + p.stderr, p.stdout
    p = subprocess.run([promtool, "check", "rules", *rules], cwd=PROM_DIR, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, f"promtool check rules:\n{p.stdout}\n{p.stderr}"


def test_prometheus_rules_use_exported_metrics(exported):
    found = [f for e in _rule_exprs() for f in problems(e, exported, TARGET_LABELS, SYNTHETIC)]
    assert not found, "\n".join(found)


# ---- Grafana ---------------------------------------------------------------------------

def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _panels(d: dict) -> list:
    out = []
    for p in d.get("panels", []):
        out.append(p)
        out += _panels(p)  # panels of collapsed rows
    return out


def _dashboard_exprs() -> List[str]:
    exprs = [t["expr"] for p in _panels(_dashboard()) for t in p.get("targets", [])]
    assert len(exprs) >= 10, exprs
    return exprs


def _template_queries() -> List[str]:
    out = []
    for v in _dashboard()["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            out.append(q)
    return out


def test_dashboard_queries_use_exported_metrics(exported):
    found = [f for e in _dashboard_exprs() for f in problems(e, exported, TARGET_LABELS)]
    for q in _template_queries():  # Grafana's label_values(SELECTOR, LABEL)
        m = re.fullmatch(r"\s*label_values\((.+),\s*([a-zA-Z_]\w*)\s*\)\s*", q)
        assert m, f"unexpected template query {q!r}"
        found += problems(m.group(1), exported, TARGET_LABELS)
        assert m.group(2) in TARGET_LABELS | exported.all_label_names, q
    assert not found, "\n".join(found)


def test_dashboard_shows_what_the_issue_asks_for():
    names = set()
    by_metric: Dict[str, Set[str]] = {}
    for e in _dashboard_exprs():
        for s in parse(e).selectors:
            names.add(s.name)
            for m in s.matchers:
                if m.label == "metric":
                    by_metric.setdefault(s.name, set()).add(m.value)
    want = {
        "request rate": "sqserve_requests_total",
        "output tokens/s": "sqserve_generation_tokens_total",
        "TTFT percentiles": "sqserve_time_to_first_token_seconds_bucket",
        "ITL percentiles": "sqserve_inter_token_latency_seconds_bucket",
        "queue depth": "sqserve_waiting_sequences",
        "running sequences": "sqserve_running_sequences",
        "KV-cache usage": "sqserve_kv_blocks_used",
        "KV-cache size": "sqserve_kv_blocks_capacity",
        "preemptions": "sqserve_preemptions_total",
        "recorded accuracy": "sqserve_model_eval",
        "live shadow KL": "sqserve_shadow_kl",
        "live shadow top-1": "sqserve_shadow_top1_agreement",
    }
    missing = {k: v for k, v in want.items() if v not in names}
    assert not missing, f"the dashboard has no panel for {missing}"
    assert {"ppl", "kl"} <= by_metric.get("sqserve_model_eval", set()), by_metric
    quantiles = [e for e in _dashboard_exprs() if e.startswith("histogram_quantile(")]
    assert {re.match(r"histogram_quantile\(([\d.]+)", e).group(1) for e in quantiles} >= \
        {"0.5", "0.99"}, quantiles


def test_dashboard_structure():
    d = _dashboard()
    assert d["uid"] and d["title"]
    panels = _panels(d)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids {ids}"
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24 and g["h"] > 0, (p["title"], g)
        if p["type"] != "row":
            assert p.get("targets"), f"panel {p['title']!r} has no query"
            assert p["datasource"]["uid"] == "${datasource}", p["title"]
            refs = [t["refId"] for t in p["targets"]]
            assert len(refs) == len(set(refs)) and all(t["expr"].strip() for t in p["targets"])
    ds_var = [v for v in d["templating"]["list"] if v["type"] == "datasource"]
    assert ds_var and ds_var[0]["name"] == "datasource" and ds_var[0]["query"] == "prometheus"
    # the provisioned data source and the dashboard provider agree with compose
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    src = ds["datasources"][0]
    assert src["type"] == "prometheus" and src.get("isDefault")
    assert _seconds(src["jsonData"]["timeInterval"]) == _seconds(
        _prom_config()["global"]["scrape_interval"]), "timeInterval must equal scrape_interval"
    compose = yaml.safe_load(COMPOSE.read_text())["services"]
    host, port = re.fullmatch(r"http://([\w.-]+):(\d+)/?", src["url"]).groups()
    assert host in compose, f"data source host {host!r} is no compose service"
    assert any(str(p).split(":")[-1] == port for p in compose[host].get("ports", [])), port
    prov = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "sqserve.yml").read_text())
    path = prov["providers"][0]["options"]["path"]
    mounts = _mounts(compose["grafana"])
    assert mounts.get(path) == GRAFANA / "dashboards", \
        f"the dashboard provider reads {path}, compose mounts {mounts}"
    assert mounts.get("/etc/grafana/provisioning") == GRAFANA / "provisioning", mounts


def _grafana_expand(expr: str, rate_interval: str) -> str:
    """What Grafana sends for "All" instances and the rate-interval macro."""
    expr = expr.replace("$__rate_interval", rate_interval).replace("${__rate_interval}", rate_interval)
    return re.sub(r"\$\{?instance\}?", ".*", expr)


def test_real_prometheus_runs_dashboard_and_rules(recipe_server, tmp_path: Path):
    """Prometheus 2.x from Debian loads deploy/prometheus/ (scrape target and
    intervals changed for the test), evaluates every rule without an error,
    and answers every dashboard query with at least one series."""
    prom_bin = _need("prometheus")
    cfg = _prom_config()
    cfg["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    jobs = [j for j in cfg["scrape_configs"] if j["job_name"] == "sqserve"]
    assert len(jobs) == 1, cfg["scrape_configs"]
    jobs[0]["static_configs"] = [{"targets": [f"127.0.0.1:{recipe_server.port}"]}]
    cfg["scrape_configs"] = jobs
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    for f in cfg.get("rule_files", []):
        shutil.copy(PROM_DIR / f, tmp_path / f)
    with running_prometheus(prom_bin, tmp_path / "prometheus.yml", tmp_path, WAIT) as (api, prom_log):
        def query(q: str) -> dict:
            return httpx.get(api + "/api/v1/query", params={"query": q}, timeout=5).json()

        _traffic(recipe_server)  # counters move while Prometheus watches

        def scraped():
            r = query('count_over_time(up{job="sqserve"}[1m]) >= 3 and up{job="sqserve"} == 1')
            return r.get("data", {}).get("result")
        assert wait_until(scraped, WAIT, 0.5), \
            f"sqserve never scraped 3 times: {query('up')}\n{prom_log()}"

        pending = {e: _grafana_expand(e, "10s") for e in _dashboard_exprs()}
        answers: Dict[str, dict] = {}

        def all_answered():
            for e, q in list(pending.items()):
                r = answers[e] = query(q)
                assert r.get("status") == "success", f"Prometheus rejected {q!r}: {r}"
                if r["data"]["result"]:
                    del pending[e]
            return not pending
        assert wait_until(all_answered, WAIT, 1), "queries with no data:\n" + "\n".join(
            f"{e}\n  -> {answers.get(e)}" for e in pending)

        def rules_evaluated():
            groups = httpx.get(api + "/api/v1/rules", timeout=5).json()["data"]["groups"]
            rules = [r for g in groups for r in g["rules"]]
            return rules and all(r.get("lastEvaluation", "").startswith("2") and
                                 not r["lastEvaluation"].startswith("0001") for r in rules) and rules
        rules = wait_until(rules_evaluated, WAIT, 0.5)
        assert rules and len(rules) == len(_rule_exprs()), f"rules not evaluated: {rules}"
        bad = [(r["name"], r.get("lastError")) for r in rules if r.get("health") != "ok"]
        assert not bad, f"rules failing in Prometheus: {bad}"


# ---- compose ---------------------------------------------------------------------------

REQUIRED = "<required>"


def _interpolate(v: str) -> str:
    """Compose's ${VAR:-default} / ${VAR-default} / ${VAR} with nothing set;
    ${VAR:?message} (compose refuses to start without VAR) gives REQUIRED."""
    if re.fullmatch(r"\$\{[A-Za-z_]\w*:?\?[^}]*\}", str(v)):
        return REQUIRED
    v = re.sub(r"\$\{[A-Za-z_]\w*:?-([^}]*)\}", r"\1", str(v))
    v = re.sub(r"\$\{[A-Za-z_]\w*\}|\$[A-Za-z_]\w*", "", v)
    return v.replace("$$", "$")


def _env_of(service: dict) -> Dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
    return {k: _interpolate("" if v is None else v) for k, v in env.items()}


def _mounts(service: dict) -> Dict[str, object]:
    """container path -> host Path (bind mounts, relative to deploy/) or volume name."""
    out = {}
    for v in service.get("volumes", []):
        src, dst = v.split(":")[:2]
        out[dst] = (DEPLOY / src).resolve() if src.startswith((".", "/")) else src
    return out


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


SQSERVE_SERVICES = {"sqserve-gpu": ("gpu", "deploy/Dockerfile"),
                    "sqserve-cpu": ("cpu", "deploy/Dockerfile.cpu")}


def test_compose_services(serve_help):
    c = _compose()
    svcs = c["services"]
    assert set(SQSERVE_SERVICES) | {"prometheus", "grafana"} <= set(svcs), list(svcs)
    job = [j for j in _prom_config()["scrape_configs"] if j["job_name"] == "sqserve"][0]
    prom_target = job["static_configs"][0]["targets"][0]
    t_host, t_port = prom_target.rsplit(":", 1)
    for name, (profile, dockerfile) in SQSERVE_SERVICES.items():
        s = svcs[name]
        assert s.get("profiles") == [profile], (name, s.get("profiles"))
        assert (DEPLOY / s["build"]["context"]).resolve() == REPO_ROOT, s["build"]
        assert s["build"]["dockerfile"] == dockerfile and (REPO_ROOT / dockerfile).is_file()
        env = _env_of(s)
        _check_env_names(env, serve_help, f"compose {name}")
        assert env["SQSERVE_HOST"] == "0.0.0.0", f"{name} must listen on all interfaces"
        port = env.get("SQSERVE_PORT", serve_help.defaults["port"])
        assert any(str(p).split(":")[-1] == port for p in s["ports"]), (name, s["ports"])
        drain = float(env.get("SQSERVE_DRAIN_TIMEOUT", serve_help.defaults["drain-timeout"]))
        assert _seconds(s["stop_grace_period"]) > drain, \
            f"{name}: stop_grace_period must exceed the drain timeout ({drain} s)"
        assert t_host in s["networks"]["default"]["aliases"] and t_port == port, \
            f"Prometheus scrapes {prom_target}; {name} is not reachable there"
        devices = s.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices")
        if profile == "gpu":
            assert devices and devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
        else:
            assert not devices, f"{name} reserves devices"
    for name in ("prometheus", "grafana"):
        assert not svcs[name].get("profiles"), f"{name} must run with either profile"
        for dst, src in _mounts(svcs[name]).items():
            if isinstance(src, Path):
                assert src.exists(), f"{name} mounts missing {src}"
    prom = svcs["prometheus"]
    cfg_arg = [a for a in prom["command"] if a.startswith("--config.file=")][0].split("=", 1)[1]
    mounts = _mounts(prom)
    assert mounts.get(cfg_arg) == PROM_DIR / "prometheus.yml", (cfg_arg, mounts)
    for f in _prom_config().get("rule_files", []):
        assert mounts.get(str(Path(cfg_arg).parent / f)) == PROM_DIR / f, (f, mounts)
    assert set(c.get("volumes", {})) >= {v for s in svcs.values() for v in _mounts(s).values()
                                         if isinstance(v, str)}


def test_compose_is_safe_by_default():
    """Nothing reachable without a key: compose refuses to start sqserve
    without SQSERVE_API_KEY, and publishes the API on 127.0.0.1 unless told."""
    svcs = _compose()["services"]
    for name in SQSERVE_SERVICES:
        s = svcs[name]
        assert _env_of(s).get("SQSERVE_API_KEY") == REQUIRED, \
            f"{name}: SQSERVE_API_KEY must be required (${{SQSERVE_API_KEY:?...}})"
        for p in s["ports"]:
            host = _interpolate(str(p)).rsplit(":", 2)
            assert len(host) == 3 and host[0] == "127.0.0.1", f"{name}: publishes {p} beyond localhost"
    for name in ("prometheus", "grafana"):
        for p in svcs[name]["ports"]:
            assert str(p).startswith("127.0.0.1:"), f"{name}: publishes {p} beyond localhost"


# ---- Kubernetes ------------------------------------------------------------------------

def _k8s_objects(base: Path = K8S / "gpu") -> Dict[str, dict]:
    """kind/name -> object, for the resources the kustomization lists."""
    kust = yaml.safe_load((base / "kustomization.yaml").read_text())
    out = {}
    for r in kust["resources"]:
        for d in _yaml_docs(base / r):
            for k in ("apiVersion", "kind", "metadata"):
                assert k in d, f"{r}: object without {k}"
            out[f"{d['kind']}/{d['metadata']['name']}"] = d
    return out


def _json_patch(doc, ops) -> None:
    """RFC 6902 add/remove/replace, enough for the overlay's patches."""
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        last = int(parts[-1]) if isinstance(parent, list) else parts[-1]
        if op["op"] == "remove":
            assert last in parent if isinstance(parent, dict) else True, op["path"]
            del parent[last]
        elif op["op"] in ("replace", "add"):
            if op["op"] == "replace":
                assert last in parent if isinstance(parent, dict) else True, op["path"]
            parent[last] = op["value"]
        else:
            raise AssertionError(f"unsupported patch op {op}")


def _cpu_overlay() -> Dict[str, dict]:
    kust = yaml.safe_load((K8S / "cpu" / "kustomization.yaml").read_text())
    assert kust["resources"] == ["../gpu"], kust["resources"]
    objs = _k8s_objects()
    for p in kust["patches"]:
        key = f"{p['target']['kind']}/{p['target']['name']}"
        assert key in objs, f"the CPU overlay patches {key}, which deploy/k8s/gpu lacks"
        _json_patch(objs[key], yaml.safe_load(p["patch"]))
    return objs


def _deployment(objs) -> dict:
    deps = [o for o in objs.values() if o["kind"] == "Deployment"]
    assert len(deps) == 1, list(objs)
    return deps[0]


def _container(dep) -> dict:
    return dep["spec"]["template"]["spec"]["containers"][0]


def _k8s_env(objs) -> Dict[str, str]:
    """The container's environment: its ConfigMap plus literal/secret entries."""
    c = _container(_deployment(objs))
    env = {}
    for ef in c.get("envFrom", []):
        name = ef["configMapRef"]["name"]
        assert f"ConfigMap/{name}" in objs, f"envFrom names ConfigMap {name}, not in the manifests"
        env.update({k: str(v) for k, v in objs[f"ConfigMap/{name}"]["data"].items()})
    for e in c.get("env", []):
        env[e["name"]] = str(e.get("value", "<from " + json.dumps(e.get("valueFrom")) + ">"))
    return env


def test_k8s_manifests(serve_help):
    for f in sorted(K8S.rglob("*.yaml")):
        assert _yaml_docs(f), f"{f} is empty"
    objs = _k8s_objects()
    kinds = {k.split("/")[0] for k in objs}
    assert {"Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler"} <= kinds, kinds
    dep = _deployment(objs)
    pod = dep["spec"]["template"]
    c = _container(dep)
    env = _k8s_env(objs)
    _check_env_names(env, serve_help, "k8s Deployment")
    assert env["SQSERVE_HOST"] == "0.0.0.0"
    port = int(env.get("SQSERVE_PORT", serve_help.defaults["port"]))
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert port in ports.values(), (port, ports)
    key = [e for e in c["env"] if e["name"] == "SQSERVE_API_KEY"]
    assert key and "secretKeyRef" in key[0]["valueFrom"], "the API key must come from a Secret"
    assert int(c["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()

    def probe_port(pr):
        p = pr["httpGet"]["port"]
        return ports[p] if isinstance(p, str) else p
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert kind in c and probe_port(c[kind]) == port, (kind, c.get(kind))
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"
    assert c["startupProbe"]["httpGet"]["path"] == "/health"
    drain = float(env.get("SQSERVE_DRAIN_TIMEOUT", serve_help.defaults["drain-timeout"]))
    pre = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pre_s = float(pre[1]) if pre[:1] == ["sleep"] else 0
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    assert grace > drain + pre_s, f"grace period {grace} s <= drain {drain} s + preStop {pre_s} s"
    ann = pod["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and int(ann["prometheus.io/port"]) == port
    assert ann["prometheus.io/path"] == "/metrics"
    sec = pod["spec"]["securityContext"]
    assert sec["runAsNonRoot"] and sec["runAsUser"] == _image_uid(REPO_ROOT / "deploy/Dockerfile")
    threads = int(env.get("SQSERVE_THREADS", "0"))
    assert 0 < threads <= float(c["resources"]["requests"]["cpu"]), \
        "set SQSERVE_THREADS to the CPU request (the default is every core of the node)"
    # Service and ServiceMonitor find the pods and the port
    svc = objs["Service/" + dep["metadata"]["name"]]
    assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    sp = svc["spec"]["ports"][0]
    assert sp["targetPort"] in ports or sp["targetPort"] == port, sp
    sm = _yaml_docs(K8S / "servicemonitor.yaml")[0]
    assert sm["kind"] == "ServiceMonitor"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    ep = sm["spec"]["endpoints"][0]
    assert ep["port"] in {p["name"] for p in svc["spec"]["ports"]} and ep["path"] == "/metrics"


def test_k8s_autoscaler_metric_is_exported(exported):
    objs = _k8s_objects()
    hpa = [o for o in objs.values() if o["kind"] == "HorizontalPodAutoscaler"][0]
    assert hpa["apiVersion"] == "autoscaling/v2"
    dep = _deployment(objs)
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["kind"], ref["name"]) == ("Deployment", dep["metadata"]["name"])
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    adapter = yaml.safe_load((K8S / "prometheus-adapter-values.yaml").read_text())
    served = {}
    for rule in adapter["rules"]["custom"]:
        found = problems(rule["seriesQuery"], exported, TARGET_LABELS | K8S_LABELS)
        assert not found, found
        series = parse(rule["seriesQuery"]).metric_names
        assert len(series) == 1, rule["seriesQuery"]
        (s,) = series
        assert re.search(rule["name"]["matches"], s), rule["name"]
        assert set(rule["resources"]["overrides"]) == K8S_LABELS, rule["resources"]
        served[rule["name"].get("as") or s] = s
    names = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert names, "the autoscaler uses no sqserve metric"
    for n in names:
        assert n in served, f"HPA metric {n} is served by no adapter rule ({sorted(served)})"


def _k8s_rendered(overlay: str) -> tuple:
    """The objects `kubectl apply -k deploy/k8s/OVERLAY` would send: rendered
    by `kubectl kustomize` where kubectl is installed; otherwise (CI has no
    kubectl) the raw manifests with this file's reading of the kustomization
    (resources, JSON patches and the images: list). Returns (objects, how)."""
    kubectl = shutil.which("kubectl")
    if kubectl:
        r = subprocess.run([kubectl, "kustomize", str(K8S / overlay)], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, f"kubectl kustomize deploy/k8s/{overlay}: {r.stderr}"
        return [d for d in yaml.safe_load_all(r.stdout) if d], "kubectl kustomize"
    objs = _k8s_objects() if overlay == "gpu" else _cpu_overlay()
    kust = yaml.safe_load((K8S / overlay / "kustomization.yaml").read_text())
    for img in kust.get("images", []):
        for c in _deployment(objs)["spec"]["template"]["spec"]["containers"]:
            if c["image"].split(":")[0] == img["name"]:
                c["image"] = f"{img.get('newName', img['name'])}:{img['newTag']}"
    return list(objs.values()), "raw manifests (no kubectl)"


@pytest.mark.parametrize("overlay", ["gpu", "cpu"])
def test_k8s_manifests_pass_kubernetes_validate(overlay, tmp_path: Path):
    """Every rendered object against the Kubernetes API schemas, strictly
    (an unknown or misspelt field fails), with kubernetes-validate (PyPI)."""
    kv = shutil.which("kubernetes-validate") or str(Path(os.sys.executable).parent / "kubernetes-validate")
    assert Path(kv).exists(), "kubernetes-validate is missing: `make deps` installs tests/requirements.txt"
    objs, how = _k8s_rendered(overlay)
    assert {o["kind"] for o in objs} == {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler"}, how
    f = tmp_path / f"{overlay}.yaml"
    f.write_text(yaml.safe_dump_all(objs))
    r = subprocess.run([kv, "--strict", str(f)], capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    passed = re.findall(r"^INFO .* passed for resource (\S+)", out, re.M)
    assert r.returncode == 0 and len(passed) == len(objs), f"deploy/k8s/{overlay} ({how}):\n{out}"
    assert not re.search(r"^(WARN|ERROR)", out, re.M), f"deploy/k8s/{overlay} ({how}):\n{out}"
    if overlay == "cpu":
        dep = [o for o in objs if o["kind"] == "Deployment"][0]
        assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "sqserve:cpu", how


def test_k8s_servicemonitor_is_well_formed():
    """The ServiceMonitor is a Prometheus Operator CRD: kubernetes-validate has
    no schema for it, so check its shape against the Service it selects."""
    sm = _yaml_docs(K8S / "servicemonitor.yaml")
    assert len(sm) == 1 and sm[0]["apiVersion"] == "monitoring.coreos.com/v1" and sm[0]["kind"] == "ServiceMonitor"
    svc = [o for o in _k8s_objects().values() if o["kind"] == "Service"][0]
    sel = sm[0]["spec"]["selector"]["matchLabels"]
    assert all(svc["metadata"]["labels"].get(k) == v for k, v in sel.items()), (sel, svc["metadata"])
    ports = {p["name"] for p in svc["spec"]["ports"]}
    assert {e["port"] for e in sm[0]["spec"]["endpoints"]} <= ports, ports


def test_k8s_cpu_overlay():
    objs = _cpu_overlay()
    c = _container(_deployment(objs))
    assert "nvidia.com/gpu" not in c["resources"].get("limits", {})
    assert not _deployment(objs)["spec"]["template"]["spec"].get("tolerations")
    env = _k8s_env(objs)
    assert 0 < int(env["SQSERVE_THREADS"]) <= float(c["resources"]["requests"]["cpu"])
    kust = yaml.safe_load((K8S / "cpu" / "kustomization.yaml").read_text())
    assert [i["newTag"] for i in kust["images"]] == ["cpu"]


# ---- each configuration starts a real server ------------------------------------------

def _config_sources() -> Dict[str, Dict[str, str]]:
    out = {}
    for f in ("Dockerfile", "Dockerfile.cpu"):
        out[f] = _image_env(DEPLOY / f)
    for name in SQSERVE_SERVICES:
        out[f"compose:{name}"] = _env_of(_compose()["services"][name])
    out["k8s"] = _k8s_env(_k8s_objects())
    out["k8s/cpu"] = _k8s_env(_cpu_overlay())
    return out


@pytest.mark.parametrize("source", ["Dockerfile", "Dockerfile.cpu", "compose:sqserve-gpu",
                                    "compose:sqserve-cpu", "k8s", "k8s/cpu"])
def test_configuration_starts_server(source, serve_help):
    """The values each deployment sets are accepted by sqserve: it starts with
    them (address, port and model path swapped for this machine's), enforces
    the API key when one is given, and the probe paths answer 200."""
    sources = _config_sources()
    assert set(sources) == {"Dockerfile", "Dockerfile.cpu", "k8s", "k8s/cpu"} | {
        f"compose:{n}" for n in SQSERVE_SERVICES}
    env = dict(sources[source])
    _check_env_names(env, serve_help, source)
    model = env.get("SQSERVE_MODEL", serve_help.defaults["model"])
    assert model.startswith("/models/") and Path(model).name == model_path().name, \
        f"{source}: SQSERVE_MODEL={model}: not the model `make model` bakes in at /models"
    dev = env.get("SQSERVE_DEVICE", "cpu")
    if dev != "cpu":  # no GPU here: the value must be one --device names; start on the CPU
        assert re.match(r"cuda(:\d+)?$", dev) and "cuda" in serve_help.lines["device"], dev
        env["SQSERVE_DEVICE"] = "cpu"
    key = "test-key-123" if "SQSERVE_API_KEY" in env else None
    env.update(SQSERVE_HOST="127.0.0.1", SQSERVE_PORT="0", SQSERVE_MODEL=str(model_path()))
    if key:
        env["SQSERVE_API_KEY"] = key
    # the flags must not be needed: an image runs `sqserve serve` with nothing else
    base = {k: v for k, v in os.environ.items() if not k.startswith("SQSERVE_")}
    s = Server([str(binary_path()), "serve"], {**base, **env})
    try:
        s.wait_ready(60)
        paths = {"/health", "/metrics"}
        if source.startswith("k8s"):
            c = _container(_deployment(_k8s_objects()))
            paths = {c[k]["httpGet"]["path"] for k in ("startupProbe", "readinessProbe", "livenessProbe")}
        for p in paths:
            r = s.get(p)
            assert r.status_code == 200, f"probe path {p}: {r.status_code} {r.text[:200]}"
        if key:
            assert s.get("/v1/models").status_code == 401
            r = s.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 200, r.text
    finally:
        rc = s.stop()
    assert rc == 0, f"{source}: sqserve exited {rc} on SIGTERM\n{s.describe()}"


def test_gpu_configurations_select_the_gpu(serve_help):
    """The CUDA image, the compose GPU service and the base Kubernetes
    Deployment run the model on the GPU; the CPU ones on the CPU."""
    src = _config_sources()
    gpu = ("Dockerfile", "compose:sqserve-gpu", "k8s")
    if "device" not in serve_help.flags:  # a binary from before `serve --device`
        assert not [k for k, e in src.items() if "SQSERVE_DEVICE" in e]
        return
    for k, e in src.items():
        dev = e.get("SQSERVE_DEVICE", serve_help.defaults.get("device", "cpu"))
        assert dev.startswith("cuda") == (k in gpu), f"{k}: SQSERVE_DEVICE={dev}"


# ---- Dockerfiles -----------------------------------------------------------------------

@dataclass
class Instr:
    cmd: str
    args: str
    stage: int   # -1: before the first FROM
    line: int


def _dockerfile(path: Path) -> List[Instr]:
    out, buf, start, stage = [], "", 0, -1
    for no, raw in enumerate(path.read_text().splitlines(), 1):
        s = raw.strip()
        if s.startswith("#") or (not s and not buf):
            continue
        if not buf:
            start = no
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        buf += s
        cmd, _, args = buf.partition(" ")
        if cmd.upper() == "FROM":
            stage += 1
        out.append(Instr(cmd.upper(), args.strip(), stage, start))
        buf = ""
    return out


def _stages(instrs: List[Instr]) -> List[dict]:
    args = {}
    for i in instrs:
        if i.stage == -1 and i.cmd == "ARG":
            k, _, v = i.args.partition("=")
            args[k] = v
    stages = []
    for i in instrs:
        if i.cmd == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", i.args, re.I)
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda x: args[x.group(1) or x.group(2)], m.group(1))
            stages.append({"image": image, "name": m.group(2), "instrs": []})
        elif i.stage >= 0:
            stages[i.stage]["instrs"].append(i)
    return stages


def _image_env(path: Path) -> Dict[str, str]:
    env = {}
    for i in _stages(_dockerfile(path))[-1]["instrs"]:
        if i.cmd == "ENV":
            for tok in shlex.split(i.args):
                k, _, v = tok.partition("=")
                env[k] = v
    return env


def _image_uid(path: Path) -> int:
    users = [i.args for i in _stages(_dockerfile(path))[-1]["instrs"] if i.cmd == "USER"]
    assert users, f"{path.name}: the runtime stage sets no USER (it would run as root)"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, \
        f"{path.name}: USER {users[-1]}: use a numeric non-root uid (Kubernetes runAsNonRoot checks it)"
    return int(uid)


def _simple_commands(sh: str) -> List[List[str]]:
    out = []
    for part in re.split(r"&&|\|\||;|\||\n|\b(?:if|then|else|elif|fi|do|done)\b", sh):
        if not part.strip():
            continue
        try:
            words = shlex.split(part, comments=True)
        except ValueError:
            words = part.split()
        while words and re.fullmatch(r"[A-Za-z_]\w*=.*", words[0]):
            words = words[1:]  # VAR=value prefixes
        if words:
            out.append(words)
    return out


def _makefile_rules() -> Dict[str, tuple]:
    rules: Dict[str, tuple] = {}
    cur: List[str] = []
    for line in (REPO_ROOT / "Makefile").read_text().splitlines():
        if line.startswith("\t"):
            for t in cur:
                rules[t][1].append(line.strip())
            continue
        m = re.match(r"^([^\s#=:][^=:]*?)\s*:(?![=:])(.*)$", line)
        if m and not line.startswith("."):
            cur = m.group(1).split()
            for t in cur:
                rules.setdefault(t, (m.group(2).split(), []))
        elif line.strip() and not line.startswith("#"):
            cur = []
    return rules


def _make_args(words: List[str]):
    """(targets, variables) of one make command line."""
    targets, variables = [], {}
    for w in words[1:]:
        if w.startswith("-"):
            continue
        if "=" in w:
            k, _, v = w.partition("=")
            variables[k] = v
        else:
            targets.append(w)
    return targets, variables


def _ci_targets() -> Set[str]:
    """Every make target `bash .ci/run` reaches: its make commands, their
    prerequisites and the targets of their recursive $(MAKE) calls."""
    rules = _makefile_rules()
    todo = []
    for words in _simple_commands((REPO_ROOT / ".ci" / "run").read_text()):
        if words[0] == "make":
            todo += _make_args(words)[0] or ["all"]
    assert todo, ".ci/run runs no make target"
    seen = set()
    while todo:
        t = todo.pop()
        if t in seen or "$" in t or "%" in t:
            continue
        seen.add(t)
        prereqs, recipe = rules.get(t, ([], []))
        todo += prereqs
        for line in recipe:
            if "$(MAKE)" in line:
                todo += [w for w in line.split("$(MAKE)", 1)[1].split()
                         if not w.startswith(("-", "$")) and "=" not in w]
    return seen


DOCKERFILES = {"Dockerfile.cpu": {}, "Dockerfile": {"CUDA": "1"}}  # make variables allowed
COMPILERS = {"gcc", "cc", "g++", "c++", "clang", "nvcc", "ld", "ar", "as", "cmake", "ninja"}


def _dockerignored(rel: str, patterns: List[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matches a path
    or any of its parent directories; ** spans directories."""
    def rx(p):
        p = p.strip("/")
        out = ""
        i = 0
        while i < len(p):
            if p.startswith("**/", i):
                out += "(?:.*/)?"
                i += 3
            elif p.startswith("**", i):
                out += ".*"
                i += 2
            elif p[i] == "*":
                out += "[^/]*"
                i += 1
            elif p[i] == "?":
                out += "[^/]"
                i += 1
            else:
                out += re.escape(p[i])
                i += 1
        return re.compile(out + "(?:/.*)?$")
    ignored = False
    for p in patterns:
        neg = p.startswith("!")
        if rx(p[1:] if neg else p).match(rel):
            ignored = not neg
    return ignored


def _dockerignore() -> List[str]:
    return [l.strip() for l in (REPO_ROOT / ".dockerignore").read_text().splitlines()
            if l.strip() and not l.strip().startswith("#")]


def test_dockerignore():
    pats = _dockerignore()
    for out in ("models/SmolLM2-135M-Instruct.Q4_1.gguf", "models/x.sqm", "build/sqserve",
                "build/obj/engine/model/model.o", ".venv/bin/python", ".git/HEAD", ".gpu/bin.tar.xz",
                "tests/__pycache__/serve_util.cpython-311.pyc", "engine/model.o"):
        assert _dockerignored(out, pats), f"{out} would be sent in the build context"
    # what the build and `make test` (RUN_TESTS=1) read, this suite included
    for src in ("Makefile", "server/main.c", "engine/model/model.c", "kernels/cpu/k_ops.c",
                "kernels/cuda/kc.h", "models/fetch-model.sh", "deploy/install-deps.sh",
                "deploy/runtime-deps.sh", "tests/requirements.txt", "tests/run-tests.sh",
                "server/openapi.json", ".ci/run", ".dockerignore", "deploy/docker-compose.yml",
                "deploy/prometheus/prometheus.yml", "deploy/grafana/dashboards/sqserve.json",
                "deploy/k8s/gpu/deployment.yaml", "tests/fixtures/tokenizer.json", "docs/api.md"):
        assert not _dockerignored(src, pats), f"{src} is kept out of the build context"


@pytest.mark.parametrize("name", list(DOCKERFILES))
def test_dockerfile(name, serve_help):
    path = DEPLOY / name
    stages = _stages(_dockerfile(path))
    assert len(stages) >= 2, f"{name}: not multi-stage"
    build, run = stages[0], stages[-1]
    # fully qualified: buildah and podman refuse a short name such as
    # nvidia/cuda:... unless a registries.conf alias resolves it
    for st in stages:
        assert re.fullmatch(r"[a-z0-9.-]+\.[a-z]+/[a-z0-9._/-]+:[\w.-]+", st["image"]), \
            f"{name}: FROM {st['image']} is not a fully qualified image name (docker.io/...)"
    if name == "Dockerfile":
        m = re.fullmatch(r"docker\.io/nvidia/cuda:(13\.0\.\d+)-devel-ubuntu24\.04", build["image"])
        assert m, build["image"]
        assert run["image"] == f"docker.io/nvidia/cuda:{m.group(1)}-runtime-ubuntu24.04", run["image"]
    else:
        assert build["image"] == run["image"] == "docker.io/library/debian:bookworm-slim", (build, run)
    assert build["name"] == "build"

    # the build stage runs what CI runs, and nothing that compiles on its own
    ci = _ci_targets()
    rules = _makefile_rules()
    assert "deploy/install-deps.sh" in " ".join(rules["deps"][1]), "make deps changed"
    runs = [i.args for i in build["instrs"] if i.cmd == "RUN"]
    made, ran_deps = set(), False
    for words in (w for r in runs for w in _simple_commands(r)):
        prog = words[0]
        assert Path(prog).name not in COMPILERS, f"{name}: a compile command of its own: {words}"
        if prog == "make":
            targets, variables = _make_args(words)
            assert set(targets) <= ci, f"{name}: make {targets}: not targets CI runs ({sorted(ci)})"
            assert variables == {k: v for k, v in DOCKERFILES[name].items() if k in variables}, \
                f"{name}: make variables {variables} change the build CI tests"
            made |= set(targets)
        ran_deps |= prog in ("deploy/install-deps.sh", "./deploy/install-deps.sh") or \
            (prog == "make" and "deps" in words)
    assert ran_deps and {"all", "model"} <= made, (ran_deps, made)
    for k in DOCKERFILES[name]:
        if k == "CUDA" and "CUDA" not in (REPO_ROOT / "Makefile").read_text():
            continue  # the Makefile's CUDA switch has not landed yet
        assert re.search(rf"\b{k}\b", (REPO_ROOT / "Makefile").read_text()), \
            f"{name}: make {k}=...: the Makefile has no such switch"

    # every file copied from the context is there and not ignored
    workdir = [i.args for i in build["instrs"] if i.cmd == "WORKDIR"][-1].rstrip("/")
    ignore = _dockerignore()
    copied = {}
    for st in stages:
        for i in st["instrs"]:
            if i.cmd not in ("COPY", "ADD"):
                continue
            words = i.args.split()
            frm = [w.split("=", 1)[1] for w in words if w.startswith("--from=")]
            srcs, dst = [w for w in words if not w.startswith("--")][:-1], words[-1]
            for s in srcs:
                if frm:
                    copied[s] = dst
                    rel = s[len(workdir) + 1:] if s.startswith(workdir + "/") else None
                    if rel and not rel.startswith("build/"):  # a source file, copied from the context
                        assert (REPO_ROOT / rel).exists(), f"{name}:{i.line}: {s}: no such file"
                elif s != ".":
                    assert (REPO_ROOT / s).exists(), f"{name}:{i.line}: COPY {s}: no such file"
                    assert not _dockerignored(s.rstrip("/"), ignore), f"{name}: {s} is dockerignored"
    assert any(i.cmd == "COPY" and i.args.split()[0] == "." for i in build["instrs"])
    binary = f"{workdir}/build/sqserve"   # what `make all` makes (Makefile: BUILD ?= build)
    assert rules.get("all") and "$(BUILD)/sqserve" in rules["all"][0], rules.get("all")
    assert binary in copied, f"{name}: the runtime stage does not copy {binary} ({copied})"
    build_text = " ".join(runs)
    for s in copied:
        if s.startswith("/out/"):
            assert s.rstrip("/") in build_text, f"{name}: nothing in the build stage writes {s}"

    # runtime stage: non-root, exec-form entrypoint running `serve`, health check, env
    instrs = run["instrs"]
    _image_uid(path)
    ep = [i.args for i in instrs if i.cmd == "ENTRYPOINT"]
    assert ep, f"{name}: no ENTRYPOINT"
    try:
        entry = json.loads(ep[-1])
    except ValueError:
        raise AssertionError(f"{name}: ENTRYPOINT {ep[-1]} is shell form: SIGTERM would go to sh")
    assert entry[0] == copied[binary] and entry[1:] == ["serve"], entry
    assert not [i for i in instrs if i.cmd == "CMD" and not i.args.startswith("[")]
    hc = [i.args for i in instrs if i.cmd == "HEALTHCHECK"]
    assert hc and re.search(r"127\.0\.0\.1:\$\{SQSERVE_PORT(:-(\d+))?\}/health\b", hc[0]), hc
    fallback = re.search(r"\$\{SQSERVE_PORT:-(\d+)\}", hc[0])
    assert not fallback or fallback.group(1) == serve_help.defaults["port"], hc
    env = _image_env(path)
    _check_env_names(env, serve_help, name)
    assert env["SQSERVE_HOST"] == "0.0.0.0"
    exposed = [i.args for i in instrs if i.cmd == "EXPOSE"]
    assert exposed == [env.get("SQSERVE_PORT", serve_help.defaults["port"])], exposed
    assert copied.get("/out/models/") == "/models/" and env["SQSERVE_MODEL"].startswith("/models/")


@pytest.mark.parametrize("name", list(DOCKERFILES))
def test_dockerfile_shell_passes_shellcheck(name, tmp_path: Path):
    """RUN and HEALTHCHECK CMD lines run under /bin/sh: shellcheck them as such."""
    sc = _need("shellcheck")
    snippets = []
    for i in _dockerfile(DEPLOY / name):
        if i.cmd == "RUN" and not i.args.startswith("["):
            snippets.append((i.line, i.args))
        elif i.cmd == "HEALTHCHECK":
            snippets.append((i.line, i.args.split(" CMD ", 1)[1]))
    assert snippets
    for line, sh in snippets:
        f = tmp_path / f"line{line}.sh"
        f.write_text("#!/bin/sh\n" + sh + "\n")
        p = subprocess.run([sc, "-s", "sh", "-e", "SC2154", str(f)], capture_output=True,
                           text=True, timeout=60)
        assert p.returncode == 0, f"{name}:{line}: shellcheck:\n{p.stdout}{p.stderr}"


def test_runtime_deps_script():
    """deploy/runtime-deps.sh lists the runtime packages of a binary (here the
    one built on this Debian 12 machine): installed, not -dev packages, and
    covering the libraries the Makefile links."""
    require_serve()
    p = subprocess.run([str(DEPLOY / "runtime-deps.sh"), "list", str(binary_path())],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    pkgs = p.stdout.split()
    assert pkgs == sorted(set(pkgs)) and not [x for x in pkgs if x.endswith("-dev")], pkgs
    for want in ("libmicrohttpd", "libjansson", "libuv1", "libpcre2-8", "libxxhash", "libopenblas",
                 "liblapacke", "libc6"):
        assert any(x.startswith(want) for x in pkgs), f"no package for {want}: {pkgs}"
    for x in pkgs:
        q = subprocess.run(["dpkg-query", "-W", "-f=${Status}", x], capture_output=True, text=True)
        assert "install ok installed" in q.stdout, x
    bad = subprocess.run([str(DEPLOY / "runtime-deps.sh"), "list", "/nonexistent"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0 and "runtime-deps:" in bad.stderr


def test_runtime_deps_script_skips_unowned_libraries_and_installs_nothing_present(tmp_path):
    """A library no package owns (as the CUDA driver, injected at run time) is
    left out with a note; `install` with everything present does nothing."""
    require_serve()
    ldd = subprocess.run(["ldd", str(binary_path())], capture_output=True, text=True).stdout
    jansson = re.search(r"libjansson\.so\.\d+ => (\S+)", ldd).group(1)
    shutil.copy(jansson, tmp_path / Path(jansson).name)
    env = dict(os.environ, LD_LIBRARY_PATH=str(tmp_path))
    p = subprocess.run([str(DEPLOY / "runtime-deps.sh"), "list", str(binary_path())],
                       capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 0, p.stderr
    assert "libjansson" not in p.stdout and "libmicrohttpd" in p.stdout, p.stdout
    assert f"no package owns {tmp_path}" in p.stderr, p.stderr
    (tmp_path / "debs.txt").write_text(p.stdout)
    stub = tmp_path / "bin" / "apt-get"  # must not be called: everything is installed
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\necho apt-get called >&2\nexit 1\n")
    stub.chmod(0o755)
    p = subprocess.run([str(DEPLOY / "runtime-deps.sh"), "install", str(tmp_path / "debs.txt"),
                        "bash"], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PATH=f"{stub.parent}:{os.environ['PATH']}"))
    assert p.returncode == 0 and not p.stdout and not p.stderr, (p.stdout, p.stderr)
    (tmp_path / "more.txt").write_text("no-such-package-sqserve\n")
    p = subprocess.run([str(DEPLOY / "runtime-deps.sh"), "install", str(tmp_path / "more.txt")],
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PATH=f"{stub.parent}:{os.environ['PATH']}"))
    assert p.returncode != 0 and "apt-get called" in p.stderr, "a missing package is not installed"


# ---- shell scripts ---------------------------------------------------------------------

def _repo_files() -> List[Path]:
    """The repository's files: tracked, plus new ones git does not ignore
    (build outputs, venvs, models and device bundles stay out)."""
    try:
        p = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO_ROOT, capture_output=True, timeout=60)
        if p.returncode == 0:
            return [REPO_ROOT / f for f in sorted(set(p.stdout.decode().split("\0"))) if f]
    except OSError:
        pass
    # no git (a Docker build context has no .git): every file but outputs and environments
    out = []
    for root, dirs, files in os.walk(REPO_ROOT):
        dirs[:] = sorted(d for d in dirs if d not in {".git", "build", "models", "__pycache__"}
                         and not d.startswith((".venv", ".gpu", ".pytest")))
        out += [Path(root, f) for f in sorted(files)]
    return out + sorted((REPO_ROOT / "models").glob("*.sh"))


def _shell_scripts() -> List[Path]:
    out = []
    for p in _repo_files():
        if not p.is_file():  # deleted in the work tree
            continue
        if p.name.endswith(".sh"):
            out.append(p)
            continue
        try:
            with open(p, "rb") as fh:
                head = fh.read(64).split(b"\n", 1)[0]
        except OSError:
            continue
        if re.match(rb"#!\s*(/usr)?/bin/(env\s+)?(ba|da)?sh\b", head):
            out.append(p)
    return out


def test_shellcheck_every_shell_script():
    sc = _need("shellcheck")
    scripts = _shell_scripts()
    rel = {str(p.relative_to(REPO_ROOT)) for p in scripts}
    assert {".ci/run", "deploy/install-deps.sh", "deploy/runtime-deps.sh", "models/fetch-model.sh",
            "tests/run-tests.sh"} <= rel, sorted(rel)
    p = subprocess.run([sc, *map(str, scripts)], capture_output=True, text=True, timeout=120,
                       cwd=REPO_ROOT)
    assert p.returncode == 0, f"shellcheck:\n{p.stdout}{p.stderr}"


# ---- README ----------------------------------------------------------------------------

def test_readme_deploying_section():
    text = (REPO_ROOT / "README.md").read_text()
    m = re.search(r"^## Deploying\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert m, 'README.md has no "## Deploying" section'
    sec = m.group(1)
    for want in ("--profile gpu", "--profile cpu", "kubectl apply -k deploy/k8s/gpu",
                 "kubectl apply -k deploy/k8s/cpu", "make test"):
        assert want in sec, f"README Deploying section does not mention {want!r}"
    # the CPU image is built and run by make image-test; say how, how long, and what is not
    assert "make image-test" in sec and "buildah" in sec and "podman" in sec, \
        "say how the images are built and run here"
    assert re.search(r"took\s+[\d.]+(\s+(and|to)\s+[\d.]+)?\s+minutes", sec), "say how long make image-test takes"
    assert re.search(r"CUDA image\s+\(`deploy/Dockerfile`\) is not built here", sec), \
        "say that the CUDA image is not built here"
    for path in set(re.findall(r"\b((?:deploy|tests)/[\w./-]*\w)", sec)):
        assert (REPO_ROOT / path).exists(), f"README Deploying names {path}, which does not exist"
