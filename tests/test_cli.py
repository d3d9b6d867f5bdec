"""CLI behaviour of sqserve on the real model (SmolLM2-135M-Instruct Q4_1).

Skipped when the model file is absent. Every run uses 2 threads so that
greedy outputs are reproducible between runs of one test.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from conftest import REPO_ROOT, run_sqserve, sanitizer_report

TIMEOUT = 600  # a hang guard: a loaded machine is slow, never this slow
THREADS = ["-t", "2"]

_model = REPO_ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
pytestmark = pytest.mark.skipif(not _model.is_file(),
                                reason=f"model {_model} not found (fetch it with `make model`)")

GEN_STATS = re.compile(r"generation: (\d+) tokens, [\d.]+ tokens/s")


@pytest.fixture(scope="module")
def sq(sqserve_bin, model_path):
    def run(*args, model=True, **kw):
        argv = [str(a) for a in args]
        if model:
            argv[1:1] = ["-m", str(model_path)]
        return run_sqserve(sqserve_bin, argv, timeout=kw.pop("timeout", TIMEOUT), **kw)
    return run


def ok(r):
    assert not r.timed_out, r.describe()
    assert sanitizer_report(r.stderr) is None, r.describe()
    assert r.returncode == 0, r.describe()
    return r


def one_error(r, status):
    assert not r.timed_out, r.describe()
    assert r.returncode == status, f"expected exit status {status}\n{r.describe()}"
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and lines[0][7:].strip(), \
        f"expected exactly one 'error: ' line on stderr\n{r.describe()}"
    return lines[0]


def gen_count(r) -> int:
    m = GEN_STATS.search(r.stderr)
    assert m, f"no 'generation: N tokens' stats line\n{r.describe()}"
    return int(m.group(1))


def generated_text(r) -> str:
    assert r.stdout.endswith("\n"), r.describe()  # generate ends the text with a newline
    return r.stdout[:-1]


# ---- inspect -------------------------------------------------------------------------


def test_inspect_prints_metadata(sq, model_path):
    r = ok(sq("inspect"))
    info = dict(line.split(": ", 1) for line in r.stdout.splitlines())
    want = {"n_layer": "30", "dim": "576", "n_head": "9", "n_head_kv": "3", "head_dim": "64",
            "ffn_dim": "1536", "n_vocab": "49152", "n_ctx_train": "8192", "rope_dim": "64",
            "rope_base": "100000", "gguf_version": "3", "tied_output": "yes",
            "chat_template": "GGUF Jinja (tokenizer.chat_template, 368 bytes)", "bos": "1", "eos": "2"}
    for k, v in want.items():
        assert info.get(k) == v, f"{k}: got {info.get(k)!r}, want {v!r}\n{r.describe()}"
    # and the same numbers as an independent reader finds in the metadata
    gguf = pytest.importorskip("gguf")
    f = gguf.GGUFReader(str(model_path)).fields
    for key, field in [("llama.block_count", "n_layer"), ("llama.embedding_length", "dim"),
                       ("llama.attention.head_count", "n_head"),
                       ("llama.attention.head_count_kv", "n_head_kv"),
                       ("llama.feed_forward_length", "ffn_dim"),
                       ("llama.context_length", "n_ctx_train")]:
        assert int(f[key].contents()) == int(info[field]), key
    assert len(f["tokenizer.ggml.tokens"].contents()) == int(info["n_vocab"])
    assert int(info["metadata"]) == len(f) - 3  # the reader adds GGUF.version/tensor/kv count
    assert int(info["tensors"]) == 272


# ---- help and usage errors ------------------------------------------------------------------


def test_generate_help(sq):
    r = ok(sq("generate", "--help", model=False))
    for opt in ("--temp", "--top-p", "--seed", "--stop", "--n-predict", "--chat"):
        assert opt in r.stdout, f"{opt} not listed\n{r.describe()}"


@pytest.mark.parametrize("cmd", ["inspect", "tokenize", "eval", "bench"])
def test_subcommand_help(sq, cmd):
    r = ok(sq(cmd, "-h", model=False))
    assert r.stdout.startswith(f"usage: sqserve {cmd}"), r.describe()
    assert "--model" in r.stdout


def test_top_level_usage(sq):
    r = ok(sq("--help", model=False))
    assert "commands:" in r.stdout and "generate" in r.stdout
    r = sq(model=False)
    assert r.returncode == 2 and "usage:" in r.stderr, r.describe()


@pytest.mark.parametrize("args", [
    ["generate", "--bogus", "-p", "x"],
    ["generate", "-x", "-p", "x"],
    ["inspect", "--temp", "0"],          # an option of another command
    ["tokenize", "-n", "5", "-p", "x"],
    ["generate", "--chat=1", "-p", "x"],  # a flag takes no value
    ["generate", "-p"],                   # missing value
    ["nosuchcommand"],
], ids=["unknown_long", "unknown_short", "other_command_option", "tokenize_n",
        "flag_with_value", "missing_value", "unknown_command"])
def test_usage_error_exit_2(sq, args):
    r = sq(*args, model=False)
    assert not r.timed_out and r.returncode == 2, r.describe()
    assert r.stderr.startswith("error: "), r.describe()
    assert r.stdout == "", r.describe()


@pytest.mark.parametrize("args", [
    ["--temp", "abc"], ["--top-p", "2"], ["-n", "-1"], ["--temp", "nan"], ["--temp", "-0.5"],
    ["--seed", "1.5"], ["--top-k", "1e30"], ["-n", "12abc"], ["--temp", ""],
    [a for i in range(9) for a in ("--stop", f"s{i}")],
], ids=["temp_abc", "top_p_2", "n_negative", "temp_nan", "temp_negative", "seed_fraction",
        "top_k_huge", "n_trailing_garbage", "temp_empty", "nine_stops"])
def test_bad_values_exit_2(sq, args):
    r = sq("generate", "-p", "x", *args)
    line = one_error(r, 2)
    assert r.stdout == "", r.describe()
    assert "--" in line, r.describe()  # names the option


def test_bad_env_value_exit_2(sq):
    r = sq("generate", "-p", "x", env={"SQSERVE_THREADS": "many"})
    one_error(r, 2)


@pytest.mark.parametrize("cmd", [["inspect"], ["generate", "-p", "hi"], ["tokenize", "-p", "hi"]])
def test_missing_model_file(sq, tmp_path, cmd):
    missing = tmp_path / "no-such-model.gguf"
    r = sq(cmd[0], "-m", missing, *cmd[1:], model=False)
    line = one_error(r, 1)
    assert str(missing) in line, r.describe()
    assert r.stdout == ""


def test_generate_without_prompt(sq):
    one_error(sq("generate"), 1)


def test_prompt_longer_than_context(sq):
    r = sq("generate", *THREADS, "-p", "one two three four five six", "--ctx", "8", "-n", "16")
    line = one_error(r, 1)
    assert "context" in line, r.describe()


# ---- generation ------------------------------------------------------------------------------


def test_chat_knows_paris(sq):
    # the FP32 model's answer: below AVX-512 the default 8-bit block
    # activations flip it (docs/accuracy.md; test_int_acts.py bounds that path)
    r = ok(sq("generate", *THREADS, "--chat", "-p", "What is the capital of France?",
              "-n", "32", "--temp", "0", "--exact-fp32"))
    assert "Paris" in r.stdout, r.describe()
    assert "tokens/s" in r.stderr, r.describe()
    assert 1 <= gen_count(r) <= 32


def test_seed_reproducible(sq):
    args = ["generate", *THREADS, "-p", "Once upon a time", "--temp", "0.9", "-n", "24"]
    a = ok(sq(*args, "--seed", "42"))
    b = ok(sq(*args, "--seed", "42"))
    assert a.stdout == b.stdout, f"same seed, different text:\n{a.stdout!r}\n{b.stdout!r}"
    assert generated_text(a).strip(), a.describe()
    others = [ok(sq(*args, "--seed", s)).stdout for s in ("43", "7")]
    assert any(o != a.stdout for o in others), \
        f"seeds 42, 43 and 7 all gave the same text: {a.stdout!r}"


def test_stop_string_truncates(sq):
    args = ["generate", *THREADS, "--chat", "-p", "Write a short story about a cat.",
            "--temp", "0", "-n", "40"]
    full = generated_text(ok(sq(*args)))
    # a word from the middle of the greedy text that does not start it
    words = [w for w in re.findall(r"[A-Za-z]{4,}", full) if full.index(w) > 0]
    assert words, f"greedy output has no usable word: {full!r}"
    word = words[len(words) // 2]
    r = ok(sq(*args, "--stop", word))
    got = generated_text(r)
    assert word not in got, r.describe()
    assert got == full[:full.index(word)], f"stop at {word!r}:\n{got!r}\nvs full\n{full!r}"
    assert "finish: stop" in r.stderr, r.describe()
    # two stop strings: the earliest match in the text wins
    first = words[0]
    r2 = ok(sq(*args, "--stop", word, "--stop", first))
    assert generated_text(r2) == full[:min(full.index(word), full.index(first))], r2.describe()


def test_n_predict_limits_tokens(sq):
    r = ok(sq("generate", *THREADS, "-p", "The weather today is", "-n", "5", "--temp", "0"))
    assert gen_count(r) <= 5, r.describe()
    r = ok(sq("generate", *THREADS, "-p", "The weather today is", "-n", "5", "--temp", "0",
              "--ignore-eos"))
    assert gen_count(r) == 5, r.describe()
    assert "finish: length" in r.stderr, r.describe()


def test_n_predict_zero(sq):
    r = ok(sq("generate", *THREADS, "-p", "Hello", "-n", "0", "--temp", "0"))
    assert gen_count(r) == 0 and r.stdout == "\n", r.describe()


# ---- tokenize -----------------------------------------------------------------------------------

_FIXTURE = REPO_ROOT / "tests" / "fixtures" / "tokenizer.json"


def _fixture_ids(model_path: Path):
    """name -> (text bytes, ids) from the golden fixture, if made from this model."""
    if not _FIXTURE.is_file():
        return None
    fx = json.loads(_FIXTURE.read_text())
    h = hashlib.sha256()
    with open(model_path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if fx.get("model_sha256") != h.hexdigest():
        return None
    return {c["name"]: (bytes.fromhex(c["hex"]), c["ids"]) for c in fx["cases"]}


@pytest.fixture(scope="module")
def fixture_ids(model_path):
    return _fixture_ids(model_path)


def parse_ids(r):
    ids = json.loads(r.stdout)
    assert isinstance(ids, list) and all(isinstance(i, int) for i in ids), r.describe()
    return ids


@pytest.mark.parametrize("text", ["Hello world", "Hello, world!", "  hello world  "])
def test_tokenize_matches_fixture(sq, fixture_ids, text):
    r = ok(sq("tokenize", "-p", text))
    ids = parse_ids(r)
    assert ids and all(0 <= i < 49152 for i in ids), r.describe()
    if fixture_ids is None:
        pytest.skip("tests/fixtures/tokenizer.json absent or made from another model "
                    "(checked only that the output is a JSON list of ids)")
    want = [v for t, v in fixture_ids.values() if t == text.encode()]
    assert want, f"{text!r} not in the fixture"
    assert ids == want[0], f"{text!r}: got {ids}, want {want[0]}"


def test_tokenize_hello_world(sq, fixture_ids):
    ids = parse_ids(ok(sq("tokenize", "-p", "Hello world")))
    if fixture_ids is not None:
        assert ids == fixture_ids["prose_hello"][1]
    else:
        assert len(ids) >= 2


def test_tokenize_stdin_and_special(sq):
    a = parse_ids(ok(sq("tokenize", "-p", "<|im_start|>user\nHi")))
    b = parse_ids(ok(sq("tokenize", input="<|im_start|>user\nHi")))
    assert a == b
    assert a[0] == 1  # <|im_start|> is control token 1 in SmolLM2
    c = parse_ids(ok(sq("tokenize", "--no-special", "-p", "<|im_start|>user\nHi")))
    assert 1 not in c and len(c) > len(a)


def test_tokenize_empty(sq):
    assert parse_ids(ok(sq("tokenize", "-p", ""))) == []


# ---- --device (no GPU on the CI machines: the GPU path itself runs in tests/gpu/run.sh) ----

@pytest.mark.parametrize("cmd", [["generate", "-p", "Hi", "-n", "2"], ["eval", "--ppl", "/dev/null"],
                                 ["bench", "--pp", "8", "--tg", "2", "-r", "1"]])
def test_bad_device_is_refused(sq, cmd):
    line = one_error(sq(*cmd, "--device", "tpu", *THREADS), 1)
    assert "bad device 'tpu'" in line


def test_bench_depth_needs_synthetic(sq):
    """--depth (decode at a filled context) belongs to bench --synthetic; with a
    model it would be ignored, so it is refused."""
    line = one_error(sq("bench", "--pp", "8", "--tg", "2", "-r", "1", "--depth", "16", *THREADS), 1)
    assert "--depth" in line and "--synthetic" in line


def test_bench_synthetic_weights_needs_synthetic(sq):
    """--synthetic-weights picks the format of a synthetic model; with a real
    model it would be ignored, so it is refused."""
    line = one_error(sq("bench", "--pp", "8", "--tg", "2", "-r", "1", "--synthetic-weights", "int4:g64", *THREADS), 1)
    assert "--synthetic-weights" in line and "--synthetic" in line


def test_bench_synthetic_unknown_weights(sq):
    """An unknown format is named in the error, before any device is touched."""
    line = one_error(sq("bench", "--synthetic", "llama3-8b", "--synthetic-weights", "int5", "--device", "cuda",
                        *THREADS, model=False), 1)
    assert "unknown synthetic weights 'int5'" in line and "int4:g64" in line


def test_bench_synthetic_acts_checked(sq):
    """Static SQ activations of a synthetic model run on the integer kernels
    only; an SQ-weight model or an unknown recipe is refused by name, and the
    option is refused without --synthetic."""
    line = one_error(sq("bench", "--synthetic", "llama3-8b", "--synthetic-acts", "sq:8/4:b64:s0.875:static",
                        "--device", "cuda", *THREADS, model=False), 1)
    assert "int4:g64 or int8" in line
    line = one_error(sq("bench", "--synthetic", "llama3-8b", "--synthetic-acts", "int4", "--device", "cuda",
                        *THREADS, model=False), 1)
    assert "--synthetic-acts" in line
    line = one_error(sq("bench", "--pp", "8", "--tg", "2", "-r", "1", "--synthetic-acts", "int8", *THREADS), 1)
    assert "--synthetic-acts" in line and "--synthetic" in line


def test_cuda_without_gpu_is_a_clear_error(sq):
    """A CUDA build on a machine without a usable GPU, or a build without
    CUDA, refuses --device cuda with one line saying which; never a crash."""
    line = one_error(sq("generate", "-p", "Hi", "-n", "2", "--device", "cuda", *THREADS), 1)
    assert re.search(r"built without CUDA|no usable CUDA device|no CUDA device|compute capability", line), line


def test_synthetic_bench_needs_a_gpu(sq):
    line = one_error(sq("bench", "--synthetic", "llama3-8b", *THREADS, model=False), 1)
    assert "--device cuda" in line
    line = one_error(sq("bench", "--synthetic", "llama3-8b", "--device", "cuda", *THREADS, model=False), 1)
    assert re.search(r"built without CUDA|no usable CUDA device|no CUDA device|compute capability", line), line


def test_device_env_variable(sq):
    r = sq("generate", "-p", "Hi", "-n", "2", *THREADS, env={"SQSERVE_DEVICE": "tpu"})
    assert "bad device 'tpu'" in one_error(r, 1)
