"""Chat templates end to end on the real model (SmolLM2-135M-Instruct, whose
GGUF carries a Jinja ChatML template): the server's chat prompt is the
jinja2 rendering of the GGUF's template, --chat-template / SQSERVE_CHAT_TEMPLATE
replace it, and a broken or failing template fails chat requests only
(400 when the template rejects the conversation, 500 when it fails) while
inspect, plain generate and /v1/completions keep working.
"""

from __future__ import annotations

import pytest

from conftest import REPO_ROOT, run_sqserve as _run, sanitizer_report
from serve_util import model_id, start_server
from test_chat_templates import CONVERSATIONS, TEMPLATES, reference, smollm2_template

TIMEOUT = 600  # hang guard only

CHATS = ["user", "system", "multi", "multi_nosys", "unicode"]


def rendered_ids(server, src: str, msgs, bos="<|im_start|>", eos="<|im_end|>"):
    kind, text = reference(src, {"messages": msgs, "tools": None, "add_generation_prompt": True,
                                 "bos_token": bos, "eos_token": eos})
    assert kind == "ok", text
    return server.tokenize(prompt=text)


def run_sqserve(binary, args, **kw):
    r = _run(binary, args, **kw)
    assert not r.timed_out and sanitizer_report(r.stdout + r.stderr) is None, r.describe()
    assert r.returncode is not None and r.returncode >= 0, r.describe()  # not killed by a signal
    return r


def chat(server, msgs):
    return server.post("/v1/chat/completions", {"model": model_id(), "messages": msgs, "max_tokens": 2})


def complete(server):
    return server.post("/v1/completions", {"model": model_id(), "prompt": "Hello", "max_tokens": 2})


def test_inspect_names_the_template(sqserve_bin, model_path, tmp_path):
    r = run_sqserve(sqserve_bin, ["inspect", "-m", model_path], timeout=TIMEOUT)
    assert r.returncode == 0, r.describe()
    assert "chat_template: GGUF Jinja (tokenizer.chat_template" in r.stdout
    r = run_sqserve(sqserve_bin, ["inspect", "-m", model_path, "--chat-template", "llama3"], timeout=TIMEOUT)
    assert r.returncode == 0 and "chat_template: built-in llama3 (--chat-template)" in r.stdout, r.describe()
    f = tmp_path / "t.jinja"
    f.write_text("{{ messages[0].content }}")
    r = run_sqserve(sqserve_bin, ["inspect", "-m", model_path], env={"SQSERVE_CHAT_TEMPLATE": str(f)},
                    timeout=TIMEOUT)
    assert r.returncode == 0 and f"chat_template: Jinja file {f} (--chat-template)" in r.stdout, r.describe()


@pytest.mark.parametrize("spec,needle", [
    ("no-such-template", "neither a built-in (chatml, llama3) nor a readable file"),
    ("{bad}", "does not parse"),
])
def test_bad_template_blocks_only_chat(sqserve_bin, model_path, tmp_path, spec, needle):
    if spec == "{bad}":
        f = tmp_path / "bad.jinja"
        f.write_text("line one\n{% for m in messages %}\n{{ m.content | nosuchfilter }}\n")
        spec = str(f)
    r = run_sqserve(sqserve_bin, ["inspect", "-m", model_path, "--chat-template", spec], timeout=TIMEOUT)
    assert r.returncode == 0 and "chat_template_error: " in r.stdout and needle in r.stdout, r.describe()
    r = run_sqserve(sqserve_bin, ["generate", "-m", model_path, "-t", "2", "-n", "2", "-p", "Hello",
                                  "--chat-template", spec], timeout=TIMEOUT)
    assert r.returncode == 0 and needle in r.stderr, r.describe()  # a warning, then it generates
    r = run_sqserve(sqserve_bin, ["generate", "-m", model_path, "-t", "2", "-n", "2", "-p", "Hello", "--chat",
                                  "--chat-template", spec], timeout=TIMEOUT)
    assert r.returncode != 0 and needle in r.stderr, r.describe()


def test_server_prompt_is_the_jinja2_rendering():
    src = smollm2_template()
    with start_server() as s:
        for name in CHATS:
            msgs, _ = CONVERSATIONS[name]
            assert s.tokenize(messages=msgs) == rendered_ids(s, src, msgs), name
        # "developer" is read as "system", text parts are joined
        dev = [{"role": "developer", "content": "Be brief."},
               {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]}]
        want = rendered_ids(s, src, [{"role": "system", "content": "Be brief."},
                                     {"role": "user", "content": "Hi there"}])
        assert s.tokenize(messages=dev) == want
        # an assistant turn with null content (and no tool calls) is the empty string
        u, a = {"role": "user", "content": "Hi"}, {"role": "assistant", "content": None}
        assert s.tokenize(messages=[u, a, u]) == rendered_ids(s, src, [u, dict(a, content=""), u])


def test_override_file_and_env():
    src = (TEMPLATES / "qwen25.jinja").read_text()
    path = str(TEMPLATES / "qwen25.jinja")
    with start_server("--chat-template", path) as s:
        for name in CHATS:
            msgs, _ = CONVERSATIONS[name]
            assert s.tokenize(messages=msgs) == rendered_ids(s, src, msgs), name
        assert "chat template: Jinja file" in s.stderr_text()
    with start_server(env={"SQSERVE_CHAT_TEMPLATE": "llama3"}) as s:
        text = s.detokenize(s.tokenize(messages=[{"role": "user", "content": "Hi"}]))
        assert text.endswith("<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                              "<|start_header_id|>assistant<|end_header_id|>\n\n"), text


def test_failing_templates_fail_chat_requests_only(tmp_path):
    strict = tmp_path / "strict.jinja"
    strict.write_text("{% for m in messages %}{% if m.role == 'system' %}"
                      "{{ raise_exception('System role not supported') }}{% endif %}"
                      "{{ m.role }}: {{ m.content }}\n{% endfor %}")
    with start_server("--chat-template", strict) as s:
        r = chat(s, [{"role": "system", "content": "x"}, {"role": "user", "content": "Hi"}])
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["param"] == "messages" and "System role not supported" in err["message"], err
        r = chat(s, [{"role": "user", "content": "Hi"}])
        assert r.status_code == 200, r.text
        r = complete(s)
        assert r.status_code == 200, r.text
    broken = tmp_path / "broken.jinja"
    broken.write_text("{{ messages[0].content.nope.deeper }}")
    with start_server("--chat-template", broken) as s:
        r = chat(s, [{"role": "user", "content": "Hi"}])
        assert r.status_code == 500, r.text
        msg = r.json()["error"]["message"]
        assert "chat template (Jinja file" in msg and "line 1: 'nope' is undefined" in msg, msg
        r = complete(s)
        assert r.status_code == 200, r.text
    with start_server("--chat-template", REPO_ROOT / "no" / "such.jinja") as s:
        assert "chat requests will fail" in s.stderr_text()
        r = chat(s, [{"role": "user", "content": "Hi"}])
        assert r.status_code == 500 and "such.jinja" in r.json()["error"]["message"], r.text
        assert complete(s).status_code == 200
