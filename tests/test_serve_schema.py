"""schemathesis against the real server, from the spec the server serves.

The server's own GET /openapi.json (server/openapi.json, embedded in the
binary) is fetched, and schemathesis (tests/requirements.txt) generates
requests from it, valid and invalid, for every operation, then checks each
response against the same spec:

  not_a_server_error            no 5xx, whatever the request
  status_code_conformance       every status is one the operation documents
  content_type_conformance      every Content-Type is one it documents
  response_schema_conformance   every JSON body validates against its schema

One substitution is made in the fetched spec before the run: the `model`
field of the completion and chat requests becomes an enum holding the served
model id. The published spec cannot know that id (it is the model file's name
or --model-name); without it nearly every generated request is a 404 for an
unknown model and the generation, sampling and streaming paths are never
reached. The 404 itself stays covered: the negative phase sends other ids.

Bounded and deterministic: --generation-deterministic (schemathesis's
derandomized mode: the same cases every run), at most MAX_EXAMPLES cases per
operation in the fuzzing phase plus the coverage and stateful phases, one
worker. The server runs with --ctx 64 so a generated request costs at most
64 tokens per sequence (longer ones get the documented 400). About 1-2
minutes on 2 quiet cores; no assertion depends on time (the request timeout
below is a hang guard).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from serve_util import HANG_S, MODEL_ID, httpx, start_server

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
MAX_EXAMPLES = 25
ST = Path(sys.executable).with_name("st")
SUMMARY_RE = re.compile(r"^\s*(\d+) generated, (.*)$", re.M)


def with_served_model(spec: dict) -> dict:
    """The spec with request `model` fields limited to the served id (see the module doc)."""
    schemas = spec["components"]["schemas"]
    n = 0
    for name in ("CompletionRequest", "ChatRequest"):
        for part in schemas[name]["allOf"]:
            props = part.get("properties", {})
            if "model" in props:
                props["model"] = {"type": "string", "enum": [MODEL_ID]}
                n += 1
    assert n == 2, "the request schemas no longer have the shape this test patches"
    return spec


@pytest.fixture(scope="module")
def server():
    if not ST.is_file():
        pytest.fail(f"{ST} is missing: schemathesis is in tests/requirements.txt (make deps)")
    s = start_server("--ctx", "64", "--startup-eval", "0")
    yield s
    s.stop()


def test_spec_served_is_the_repository_spec(server):
    r = server.get("/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    repo = json.loads((Path(__file__).resolve().parent.parent / "server" / "openapi.json").read_text())
    assert r.json() == repo


def test_schemathesis_finds_no_violation(server, tmp_path):
    spec = with_served_model(server.get("/openapi.json").json())
    spec_file = tmp_path / "openapi.json"
    spec_file.write_text(json.dumps(spec))
    argv = [str(ST), "run", str(spec_file), "--url", server.base_url,
            "--checks", CHECKS, "--max-examples", str(MAX_EXAMPLES),
            "--generation-deterministic", "--workers", "1",
            "--request-timeout", str(HANG_S), "--no-color", "--output-truncate", "false",
            "--report", "junit", "--report-dir", str(tmp_path / "report")]
    p = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=4 * HANG_S)
    out = p.stdout + p.stderr
    m = SUMMARY_RE.search(out)
    # the summary line, e.g. "1234 generated, 1234 passed", shows in the test log
    print(m.group(0).strip() if m else "(no summary line)")
    assert p.returncode == 0, out[-12000:] + "\n" + server.stderr_text()
    assert m and int(m.group(1)) > 0, out[-4000:]
    assert server.alive(), server.describe()
    assert server.get("/health").status_code == 200
