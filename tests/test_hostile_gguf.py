"""Hostile GGUF files: every malformed model must be rejected cleanly.

Each file is generated at test time (tests/gguf_craft.py) from a valid tiny
Llama, changed in exactly one place, and loaded with `sqserve inspect -m FILE`
by both the release build and the ASan+UBSan build. A rejection means: exit
status 1, nothing on stdout, exactly one line on stderr starting "error: ",
no sanitizer report, and no hang. Where it matters the error line must also
name the problem (so a case cannot pass by failing for an unrelated reason).

Positive controls (the unmodified tiny model and valid variants of it) prove
that the generator writes files sqserve accepts.
"""

from __future__ import annotations

import os
import re
import struct

import numpy as np
import pytest

import gguf_craft as gc
from conftest import run_sqserve, sanitizer_report

TIMEOUT = 120  # a hang guard per run (a real hang costs this much), not a speed bound

U64_MAX = 2**64 - 1


@pytest.fixture(params=["release", "sanitize"])
def sq(request):
    """(binary, sanitized) for each build; the sanitize one skips if absent."""
    if request.param == "release":
        return request.getfixturevalue("sqserve_bin"), False
    return request.getfixturevalue("san_bin"), True


def base(**kw) -> gc.GGUFFile:
    return gc.tiny_llama_file(**kw)


def kv_index(g: gc.GGUFFile, key: str) -> int:
    return [kv.key for kv in g.kvs].index(key)


def ti_index(g: gc.GGUFFile, name: str) -> int:
    return [t.name for t in g.tensors].index(name)


def run_inspect(sq, path, timeout=TIMEOUT):
    binary, sanitized = sq
    return run_sqserve(binary, ["inspect", "-m", str(path)], timeout=timeout,
                       sanitizer=sanitized)


def assert_clean(r):
    assert not r.timed_out, f"sqserve hung (killed after the timeout)\n{r.describe()}"
    rep = sanitizer_report(r.stdout + r.stderr)
    assert rep is None, f"sanitizer report ({rep})\n{r.describe()}"
    assert r.returncode is not None and r.returncode >= 0, \
        f"killed by signal {-r.returncode}\n{r.describe()}"


def assert_one_error_line(r, expect=None):
    assert_clean(r)
    assert r.returncode == 1, f"expected exit status 1\n{r.describe()}"
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and r.stderr.endswith("\n"), \
        f"stderr must be exactly one line\n{r.describe()}"
    assert lines[0].startswith("error: ") and lines[0][len("error: "):].strip(), \
        f"the line must start with 'error: ' and say something\n{r.describe()}"
    if expect:
        assert re.search(expect, lines[0], re.I), \
            f"error line does not match /{expect}/\n{r.describe()}"


def assert_rejected(sq, path, expect=None):
    r = run_inspect(sq, path)
    assert_one_error_line(r, expect)
    assert r.stdout == "", f"nothing may be printed on stdout\n{r.describe()}"
    return r


# ---- positive controls ---------------------------------------------------------


def _every_value_type(g: gc.GGUFFile) -> None:
    """Adds an unused key of every metadata type (the file stays valid)."""
    g.add("test.u8", gc.U8, 255)
    g.add("test.i8", gc.I8, -128)
    g.add("test.u16", gc.U16, 65535)
    g.add("test.i16", gc.I16, -32768)
    g.add("test.u32", gc.U32, 2**32 - 1)
    g.add("test.i32", gc.I32, -2**31)
    g.add("test.f32", gc.F32, 1.5)
    g.add("test.bool_true", gc.BOOL, True)
    g.add("test.bool_false", gc.BOOL, False)
    g.add("test.string", gc.STRING, "héllo \x00 wörld")
    g.add("test.empty_string", gc.STRING, "")
    g.add("test.u64", gc.U64, U64_MAX)
    g.add("test.i64", gc.I64, -2**63)
    g.add("test.f64", gc.F64, -2.5e300)
    for vt, items in [(gc.U8, [0, 255]), (gc.I8, [-1, 1]), (gc.U16, [1, 2]),
                      (gc.I16, [-3]), (gc.U32, [7] * 5), (gc.I32, [-7]), (gc.F32, [0.5, -0.25]),
                      (gc.BOOL, [0, 1, 1]), (gc.STRING, ["a", "", "ccc"]), (gc.U64, [U64_MAX]),
                      (gc.I64, [-5, 5]), (gc.F64, [3.25]), (gc.U32, [])]:
        g.add(f"test.array_{gc.VTYPE_NAMES[vt]}_{len(items)}", gc.ARRAY, gc.Arr(vt, items))
    g.add("test.array_empty_strings", gc.ARRAY, gc.Arr(gc.STRING, []))
    g.add("test.array_of_arrays", gc.ARRAY,
          gc.Arr(gc.ARRAY, [gc.Arr(gc.U8, [1, 2]), gc.Arr(gc.STRING, ["x"]), gc.Arr(gc.I64, [])]))


def _nest(depth: int, leaf=None) -> gc.Arr:
    """depth levels of arrays: depth 1 = a plain array of u32."""
    v = leaf if leaf is not None else gc.Arr(gc.U32, [1, 2, 3])
    for _ in range(depth - 1):
        v = gc.Arr(gc.ARRAY, [v])
    return v


def _valid_variant(name: str) -> gc.GGUFFile:
    if name == "default":
        return base()
    if name == "gguf_v2":
        return base(version=2)
    if name == "tied_output":
        return base(tied=True)
    if name == "alignment_8":
        return base(alignment=8)
    if name == "alignment_64":
        return base(alignment=64)
    if name == "alignment_4096":
        return base(alignment=4096)
    if name == "no_chat_template_no_vocab_size":
        return base(chat_template=None, meta={"llama.vocab_size": None})
    if name == "three_layers_q4_1":
        return base(n_layer=3)
    if name == "every_value_type":
        g = base()
        _every_value_type(g)
        return g
    if name == "arrays_nested_4_deep":
        g = base()
        g.add("test.nested", gc.ARRAY, _nest(4))
        return g
    if name == "unused_q2_k_tensor":
        g = base()
        g.add_tensor("extra.q2k", [256, 2], gc.T_Q2_K,
                     gc.random_blocks(gc.T_Q2_K, 512, np.random.default_rng(5)))
        return g
    raise KeyError(name)


VALID_VARIANTS = ["default", "gguf_v2", "tied_output", "alignment_8", "alignment_64",
                  "alignment_4096", "no_chat_template_no_vocab_size", "three_layers_q4_1",
                  "every_value_type", "arrays_nested_4_deep", "unused_q2_k_tensor"]


@pytest.mark.parametrize("variant", VALID_VARIANTS)
def test_valid_model_loads(sq, tmp_path, variant):
    g = _valid_variant(variant)
    path = tmp_path / f"{variant}.gguf"
    g.write(path)
    r = run_inspect(sq, path)
    assert_clean(r)
    assert r.returncode == 0, r.describe()
    assert r.stderr == "", r.describe()
    info = dict(line.split(": ", 1) for line in r.stdout.splitlines())
    n_layer = 3 if variant == "three_layers_q4_1" else 2
    want = {"name": "tiny-llama-test", "gguf_version": str(g.version), "n_layer": str(n_layer),
            "dim": "64", "n_head": "4", "n_head_kv": "2", "head_dim": "16", "ffn_dim": "128",
            "n_vocab": "273", "n_ctx_train": "256", "rope_dim": "16",
            "tensors": str(len(g.tensors)), "metadata": str(len(g.kvs)),
            "tied_output": "yes" if variant == "tied_output" else "no",
            "bos": "271", "eos": "272",
            "chat_template": "built-in chatml (the GGUF has no chat template)"
            if variant == "no_chat_template_no_vocab_size" else
            f"GGUF Jinja (tokenizer.chat_template, {len(gc.CHATML_TEMPLATE)} bytes)"}
    for k, v in want.items():
        assert info.get(k) == v, f"{k}: got {info.get(k)!r}, want {v!r}\n{r.describe()}"


@pytest.mark.parametrize("n_head_kv", [1, 2])
def test_tiny_gqa_any_thread_count(sq, tmp_path, n_head_kv):
    """Grouped-query attention with groups of 8 and 4 query heads (the CPU
    takes at most four through K and V at once, so 8 is two rounds; one
    thread's scores scratch must not reach the next's): the same greedy
    text at 1, 2 and 3 threads, and clean under the sanitizers."""
    path = tmp_path / "gqa.gguf"
    gc.tiny_llama(path, n_head=8, n_head_kv=n_head_kv)
    binary, sanitized = sq
    outs = []
    for t in ("1", "2", "3"):
        r = run_sqserve(binary, ["generate", "-m", path, "-p", "hello the world hello the world", "-n", "6",
                                 "--temp", "0", "--ignore-eos", "-t", t], timeout=TIMEOUT * 2, sanitizer=sanitized)
        assert_clean(r)
        assert r.returncode == 0, r.describe()
        outs.append(r.stdout)
    assert outs[0] == outs[1] == outs[2], outs


def test_valid_tiny_generate(sq, tmp_path):
    path = tmp_path / "tiny.gguf"
    gc.tiny_llama(path)
    binary, sanitized = sq
    r = run_sqserve(binary, ["generate", "-m", path, "-p", "hello", "-n", "8", "--temp", "0",
                             "--ignore-eos", "-t", "2"], timeout=TIMEOUT * 2, sanitizer=sanitized)
    assert_clean(r)
    assert r.returncode == 0, r.describe()
    assert "generation: 8 tokens" in r.stderr and "tokens/s" in r.stderr, r.describe()
    r2 = run_sqserve(binary, ["generate", "-m", path, "--chat", "-p", "hello the world", "-n", "8",
                              "--temp", "0.9", "--seed", "3", "-t", "1"],
                     timeout=TIMEOUT * 2, sanitizer=sanitized)
    assert_clean(r2)
    assert r2.returncode == 0, r2.describe()


@pytest.mark.parametrize("template", ["{% if %}", "{{ messages[0]['content'] }}{% for %}",
                                      "{{ raise_exception('no') }}", "{{ '{' * 99999999999 }}"])
def test_unusable_chat_template_still_loads(sq, tmp_path, template):
    """A template that does not parse or render blocks chats only (issue 18):
    inspect and plain generate work, generate --chat fails with its error."""
    path = tmp_path / "tmpl.gguf"
    base(chat_template=template).write(path)
    binary, sanitized = sq
    r = run_inspect(sq, path)
    assert_clean(r)
    assert r.returncode == 0 and "chat_template: GGUF Jinja" in r.stdout, r.describe()
    parses = "%}" not in template
    assert ("chat_template_error: " in r.stdout) != parses, r.describe()
    r = run_sqserve(binary, ["generate", "-m", path, "-p", "hello", "-n", "2", "-t", "1"],
                    timeout=TIMEOUT, sanitizer=sanitized)
    assert_clean(r)
    assert r.returncode == 0, r.describe()
    r = run_sqserve(binary, ["generate", "-m", path, "--chat", "-p", "hello", "-n", "2", "-t", "1"],
                    timeout=TIMEOUT, sanitizer=sanitized)
    assert_clean(r)
    assert r.returncode != 0 and "chat template" in r.stderr and "\n" not in r.stderr.strip(), r.describe()


def test_valid_tiny_tokenize(sq, tmp_path):
    """The merges really are applied (so the vocabulary is written right)."""
    path = tmp_path / "tiny.gguf"
    gc.tiny_llama(path)
    tokens, _, _ = gc.tiny_vocab()
    binary, sanitized = sq
    r = run_sqserve(binary, ["tokenize", "-m", path, "-p", "hello the world<|im_end|>!"],
                    timeout=TIMEOUT, sanitizer=sanitized)
    assert_clean(r)
    assert r.returncode == 0, r.describe()
    want = [tokens.index(t) for t in ["hello", "Ġthe", "Ġworld", "<|im_end|>", "!"]]
    assert [int(x) for x in r.stdout.strip().strip("[]").split(",")] == want, r.describe()


def test_generator_matches_gguf_reader(tmp_path):
    """Cross-check the writer with the independent `gguf` package reader."""
    gguf = pytest.importorskip("gguf")
    g = base(n_layer=3)
    _every_value_type(g)
    path = tmp_path / "tiny.gguf"
    g.write(path)
    r = gguf.GGUFReader(str(path))
    assert [t.name for t in r.tensors] == [t.name for t in g.tensors]
    for t, rt in zip(g.tensors, r.tensors):
        assert [int(x) for x in rt.shape] == t.ne, t.name
        assert int(rt.tensor_type) == t.ttype, t.name
        want = gc.dequantize(t.data, t.ttype)
        got = gguf.quants.dequantize(rt.data, rt.tensor_type).reshape(-1)
        np.testing.assert_array_equal(got, want, err_msg=t.name)
    f = r.fields
    assert f["general.architecture"].contents() == "llama"
    assert f["llama.block_count"].contents() == 3
    assert f["tokenizer.ggml.merges"].contents()[:2] == ["h e", "l l"]
    assert f["test.i64"].contents() == -2**63
    assert f["test.array_string_3"].contents() == ["a", "", "ccc"]
    # quantization is sane: values close to what was quantized
    rng = np.random.default_rng(1)
    x = rng.standard_normal(256).astype(np.float32)
    for tt, tol in [(gc.T_F16, 1e-3), (gc.T_Q8_0, 0.03), (gc.T_Q4_0, 0.5), (gc.T_Q4_1, 0.5)]:
        y = gguf.quants.dequantize(np.frombuffer(gc.quantize(x, tt), np.uint8),
                                   gguf.GGMLQuantizationType(tt)).reshape(-1)
        assert np.max(np.abs(y - x)) < tol, gc.TYPE_NAMES[tt]


# ---- malformed files ---------------------------------------------------------------

CASES = {}


def case(name, expect=None):
    """Registers a builder returning the file's bytes (or a GGUFFile)."""
    def deco(fn):
        assert name not in CASES
        CASES[name] = (fn, expect)
        return fn
    return deco


def _patch(data: bytes, off: int, new: bytes) -> bytes:
    return data[:off] + new + data[off + len(new):]


# -- header
@case("empty_file", r"too small")
def _():
    return b""


@case("magic_only", r"too small")
def _():
    return b"GGUF"


@case("all_zero_header", r"magic")
def _():
    return bytes(64)


@case("bad_magic", r"magic")
def _():
    g = base()
    g.magic = b"GGML"
    return g


@case("gguf_v1", r"version 1")
def _():
    return base(version=1)


@case("gguf_v99", r"version 99")
def _():
    return base(version=99)


@case("gguf_v3_big_endian", r"version")
def _():
    return base(version=3 << 24)


@case("gguf_v0", r"version 0")
def _():
    return base(version=0)


# -- counts
@case("tensor_count_absurd", r"tensor count")
def _():
    g = base()
    g.n_tensors = 2**62
    return g


@case("tensor_count_u64_max", r"tensor count")
def _():
    g = base()
    g.n_tensors = U64_MAX
    return g


@case("tensor_count_one_too_many")
def _():
    g = base()
    g.n_tensors = len(g.tensors) + 1
    return g


@case("tensor_count_one_too_few", r"missing")
def _():
    g = base()
    g.n_tensors = len(g.tensors) - 1
    return g


@case("kv_count_absurd", r"metadata count")
def _():
    g = base()
    g.n_kv = 2**60
    return g


@case("kv_count_u64_max", r"metadata count")
def _():
    g = base()
    g.n_kv = U64_MAX
    return g


@case("kv_count_one_too_many")
def _():
    g = base()
    g.n_kv = len(g.kvs) + 1
    return g


# -- strings
@case("key_length_2_63", r"string length")
def _():
    g = base()
    g.kvs[0].key_length = 2**63
    return g


@case("key_length_u64_max", r"string length")
def _():
    g = base()
    g.kvs[0].key_length = U64_MAX
    return g


@case("key_length_just_past_eof", r"string length")
def _():
    g = base()
    data = g.to_bytes()
    key_text = g.marks["kv0.key"] + 8
    return _patch(data, g.marks["kv0.key"], struct.pack("<Q", len(data) - key_text + 1))


@case("empty_key", r"empty key")
def _():
    g = base()
    g.add("", gc.U32, 1)
    return g


@case("string_value_length_2_63", r"string length")
def _():
    g = base()
    g.set("general.name", gc.STRING, gc.Str("x", length=2**63))
    return g


@case("string_value_length_just_past_eof", r"string length")
def _():
    g = base()
    data = g.to_bytes()
    i = kv_index(g, "general.name")
    text = g.marks[f"kv{i}.value"] + 8
    return _patch(data, g.marks[f"kv{i}.value"], struct.pack("<Q", len(data) - text + 1))


@case("string_in_array_length_2_62", r"string length")
def _():
    g = base()
    toks = g.kv("tokenizer.ggml.tokens").value
    toks.items[100] = gc.Str(toks.items[100], length=2**62)
    return g


@case("tensor_name_length_2_63", r"string length")
def _():
    g = base()
    g.tensors[3].name_length = 2**63
    return g


@case("tensor_name_empty", r"tensor name")
def _():
    g = base()
    g.tensors[2].name = ""
    return g


@case("tensor_name_300_chars", r"tensor name")
def _():
    g = base()
    g.add_tensor("x" * 300, [32], gc.T_F32)
    return g


# -- arrays
@case("array_count_2_60", r"array")
def _():
    g = base()
    g.kv("tokenizer.ggml.token_type").value.count = 2**60
    return g


@case("array_count_u64_max", r"array")
def _():
    g = base()
    g.kv("tokenizer.ggml.token_type").value.count = U64_MAX
    return g


@case("string_array_count_2_60", r"array")
def _():
    g = base()
    g.kv("tokenizer.ggml.tokens").value.count = 2**60
    return g


@case("string_array_count_one_too_many")
def _():
    g = base()
    toks = g.kv("tokenizer.ggml.tokens").value
    toks.count = len(toks.items) + 1
    return g


@case("nested_arrays_5_deep", r"nested")
def _():
    g = base()
    g.add("test.nested", gc.ARRAY, _nest(5))
    return g


@case("nested_arrays_64_deep", r"nested")
def _():
    g = base()
    g.add("test.nested", gc.ARRAY, _nest(64))
    return g


@case("nested_array_fails_after_allocations", r"string length")
def _():
    # outer array of 3 string arrays; the third's 2nd string lies about its
    # length: the first two inner arrays were allocated and must be freed
    g = base()
    inner = [gc.Arr(gc.STRING, ["a", "b"]), gc.Arr(gc.STRING, ["c", "d", "e"]),
             gc.Arr(gc.STRING, ["f", gc.Str("g", length=2**40), "h"])]
    g.add("test.nested", gc.ARRAY, gc.Arr(gc.ARRAY, inner))
    return g


@case("nested_array_too_deep_after_allocations", r"nested")
def _():
    g = base()
    inner = [gc.Arr(gc.ARRAY, [gc.Arr(gc.STRING, ["a"])]), _nest(4)]
    g.add("test.nested", gc.ARRAY, gc.Arr(gc.ARRAY, inner))
    return g


@case("array_unknown_element_type", r"element type")
def _():
    g = base()
    g.add("test.arr", gc.ARRAY, gc.Arr(13, [gc.Raw(b"\0" * 4)]))
    return g


@case("nested_array_unknown_element_type", r"element type")
def _():
    g = base()
    g.add("test.arr", gc.ARRAY,
          gc.Arr(gc.ARRAY, [gc.Arr(gc.U8, [1]), gc.Arr(0xFFFFFFFF, [gc.Raw(b"\0" * 8)])]))
    return g


# -- value types
@case("unknown_value_type_13", r"unknown value type")
def _():
    g = base()
    g.add("test.v", gc.U64, 0, type_id=13)
    return g


@case("unknown_value_type_u32_max", r"unknown value type")
def _():
    g = base()
    g.add("test.v", gc.U64, 0, type_id=0xFFFFFFFF)
    return g


@case("bool_value_2", r"bool")
def _():
    g = base()
    g.add("test.flag", gc.BOOL, 2)
    return g


@case("add_bos_bool_255", r"bool")
def _():
    g = base()
    g.set("tokenizer.ggml.add_bos_token", gc.BOOL, 255)
    return g


@case("bool_array_element_2", r"bool")
def _():
    # GGUF: a bool is 0 or 1, anything else is invalid. A scalar 2 is rejected
    # (bool_value_2); the same value inside an array must be too.
    g = base()
    g.add("test.flags", gc.ARRAY, gc.Arr(gc.BOOL, [0, 1, 2]))
    return g


# -- tensor infos
@case("tensor_type_unknown_4", r"unknown type")
def _():
    g = base()
    g.tensors[0].type_id = 4  # Q4_2, removed from ggml
    return g


@case("tensor_type_unknown_1000", r"unknown type")
def _():
    g = base()
    g.tensors[5].type_id = 1000
    return g


@case("tensor_type_u32_max", r"unknown type")
def _():
    g = base()
    g.tensors[5].type_id = 0xFFFFFFFF
    return g


@case("tensor_n_dims_0", r"dimensions")
def _():
    g = base()
    t = g.tensor("output_norm.weight")
    t.n_dims, t.ne = 0, []
    return g


@case("tensor_n_dims_5", r"dimensions")
def _():
    g = base()
    g.tensor("blk.0.attn_norm.weight").ne = [64, 1, 1, 1, 1]
    return g


@case("tensor_n_dims_u32_max", r"dimensions")
def _():
    g = base()
    g.tensor("blk.0.attn_norm.weight").n_dims = 0xFFFFFFFF
    return g


@case("tensor_dimension_0", r"dimension")
def _():
    g = base()
    g.tensor("blk.1.attn_q.weight").ne = [64, 0]
    return g


@case("tensor_dimension_product_overflows_u64", r"dimension")
def _():
    g = base()
    g.tensor("blk.0.ffn_up.weight").ne = [2**16, 2**16, 2**16, 2**16]  # = 2^64
    return g


@case("tensor_dimensions_2_32_cubed", r"dimension")
def _():
    g = base()
    g.tensor("blk.0.ffn_up.weight").ne = [2**32, 2**32, 2**32]
    return g


@case("tensor_dimension_u64_max", r"dimension")
def _():
    g = base()
    g.tensor("blk.0.ffn_up.weight").ne = [32, U64_MAX]
    return g


@case("tensor_row_not_multiple_of_block", r"multiple")
def _():
    g = base()
    g.add_tensor("extra.weight", [48, 2], gc.T_Q8_0, bytes(34 * 3))
    return g


@case("tensor_offset_past_eof", r"past the end")
def _():
    g = base()
    g.tensors[4].offset = 2**40
    return g


@case("tensor_offset_u64_max_aligned", r"past the end")
def _():
    g = base()
    g.tensors[4].offset = 2**64 - 32
    return g


@case("tensor_offset_plus_size_past_eof", r"past the end")
def _():
    g = base()
    data = g.to_bytes()
    t = g.tensors[-1]
    data_size = len(data) - g.marks["data"]
    t.offset = (data_size - len(t.payload()) + 32) // 32 * 32  # aligned, 1-32 bytes short
    return g


@case("tensor_offset_unaligned", r"align")
def _():
    g = base()
    g.to_bytes()
    g.tensors[6].offset = g.marks["data6"] - g.marks["data"] + 1
    return g


@case("duplicate_tensor_name", r"duplicate tensor")
def _():
    g = base()
    g.tensor("blk.1.ffn_gate.weight").name = "blk.1.ffn_up.weight"
    return g


# -- alignment
@case("alignment_0", r"alignment")
def _():
    g = base()
    g.add("general.alignment", gc.U32, 0)
    g.layout_alignment = 32
    return g


@case("alignment_3", r"alignment")
def _():
    g = base()
    g.add("general.alignment", gc.U32, 3)
    g.layout_alignment = 32
    return g


@case("alignment_2_31", r"alignment")
def _():
    g = base()
    g.add("general.alignment", gc.U32, 2**31)
    g.layout_alignment = 32
    return g


@case("alignment_is_a_string", r"alignment")
def _():
    g = base()
    g.add("general.alignment", gc.STRING, "32")
    return g


@case("alignment_is_u64", r"alignment")
def _():
    g = base()
    g.add("general.alignment", gc.U64, 32)
    return g


@case("alignment_disagrees_with_layout", r"align|past the end")
def _():
    g = base()
    g.add("general.alignment", gc.U32, 65536)
    g.layout_alignment = 32
    return g


# -- duplicates
@case("duplicate_metadata_key", r"duplicate metadata key")
def _():
    g = base()
    g.add("general.name", gc.STRING, "again")
    return g


@case("duplicate_key_other_type", r"duplicate metadata key")
def _():
    g = base()
    g.add("llama.block_count", gc.I32, 2)
    return g


# -- architecture and hyperparameters
@case("missing_architecture", r"architecture")
def _():
    g = base()
    g.remove("general.architecture")
    return g


@case("architecture_not_a_string", r"architecture")
def _():
    g = base()
    g.set("general.architecture", gc.U32, 1)
    return g


@case("architecture_gpt2", r"'gpt2'.*not supported|not supported.*gpt2")
def _():
    g = base()
    g.set("general.architecture", gc.STRING, "gpt2")
    return g


@case("block_count_missing", r"block_count")
def _():
    return base(meta={"llama.block_count": None})


@case("block_count_negative", r"block_count")
def _():
    return base(meta={"llama.block_count": (gc.I32, -1)})


@case("block_count_huge", r"block_count")
def _():
    return base(meta={"llama.block_count": (gc.U64, 2**40)})


@case("block_count_0", r"block_count")
def _():
    return base(meta={"llama.block_count": (gc.U32, 0)})


@case("block_count_is_a_string", r"block_count")
def _():
    return base(meta={"llama.block_count": (gc.STRING, "2")})


@case("block_count_more_than_tensors", r"blk\.2\.")
def _():
    return base(meta={"llama.block_count": (gc.U32, 3)})


@case("embedding_length_missing", r"embedding_length")
def _():
    return base(meta={"llama.embedding_length": None})


@case("head_count_0", r"head_count")
def _():
    return base(meta={"llama.attention.head_count": (gc.U32, 0)})


@case("head_count_not_dividing_embedding_length", r"divisible|head_count")
def _():
    return base(meta={"llama.attention.head_count": (gc.U32, 3)})


@case("head_count_kv_not_dividing_head_count", r"head_count_kv")
def _():
    return base(meta={"llama.attention.head_count_kv": (gc.U32, 3)})


@case("head_count_kv_0", r"head_count_kv")
def _():
    return base(meta={"llama.attention.head_count_kv": (gc.U32, 0)})


@case("context_length_0", r"context_length")
def _():
    return base(meta={"llama.context_length": (gc.U32, 0)})


@case("rope_dimension_count_odd", r"dimension_count")
def _():
    return base(meta={"llama.rope.dimension_count": (gc.U32, 15)})


@case("rope_dimension_count_above_head_dim", r"dimension_count")
def _():
    return base(meta={"llama.rope.dimension_count": (gc.U32, 32)})


@case("rms_epsilon_nan", r"epsilon")
def _():
    return base(meta={"llama.attention.layer_norm_rms_epsilon": (gc.F32, float("nan"))})


@case("rope_freq_base_0", r"freq_base")
def _():
    return base(meta={"llama.rope.freq_base": (gc.F64, 0.0)})


@case("rope_scaling_type_unknown", r"scaling")
def _():
    return base(meta={"llama.rope.scaling.type": (gc.STRING, "yarn")})


@case("vocab_size_mismatch", r"token_embd")
def _():
    return base(meta={"llama.vocab_size": (gc.U32, 300)})


# -- tensors vs hyperparameters
@case("missing_tensor_ffn_up", r"blk\.1\.ffn_up\.weight")
def _():
    return base(drop_tensors=["blk.1.ffn_up.weight"])


@case("missing_token_embd", r"token_embd")
def _():
    return base(drop_tensors=["token_embd.weight"])


@case("missing_output_norm", r"output_norm")
def _():
    return base(drop_tensors=["output_norm.weight"])


@case("no_tensors_at_all", r"token_embd")
def _():
    g = base()
    g.tensors = []
    return g


@case("misshapen_attn_k", r"attn_k.*shape")
def _():
    g = base()
    t = g.tensor("blk.0.attn_k.weight")
    t.ne, t.data = [64, 64], None  # kv_dim is 32
    return g


@case("transposed_ffn_down", r"ffn_down.*shape")
def _():
    g = base()
    g.tensor("blk.1.ffn_down.weight").ne = [64, 128]  # should be [128, 64]
    return g


@case("norm_is_2d", r"attn_norm.*shape")
def _():
    g = base()
    g.tensor("blk.0.attn_norm.weight").ne = [64, 1]
    return g


@case("matrix_is_3d", r"attn_q.*shape")
def _():
    g = base()
    g.tensor("blk.0.attn_q.weight").ne = [64, 64, 1]
    return g


@case("ffn_length_disagrees_with_tensors", r"shape")
def _():
    return base(meta={"llama.feed_forward_length": (gc.U32, 256)})


@case("misnamed_tensor", r"blk\.0\.attn_q\.weight")
def _():
    g = base()
    g.tensor("blk.0.attn_q.weight").name = "blk.0.attn_query.weight"
    return g


@case("q2_k_tensor", r"Q2_K")
def _():
    return base(dim=256, ffn=256, types={"blk.1.attn_q.weight": gc.T_Q2_K})


@case("i8_norm_tensor", r"I8")
def _():
    return base(types={"blk.0.ffn_norm.weight": gc.T_I8})


# -- tokenizer
@case("tokenizer_model_bert", r"tokenizer model 'bert' is not supported")
def _():
    return base(meta={"tokenizer.ggml.model": (gc.STRING, "bert")})


# SentencePiece needs one score per token (the BPE vocabulary has none)
@case("tokenizer_model_llama_without_scores", r"tokenizer\.ggml\.scores is missing")
def _():
    return base(meta={"tokenizer.ggml.model": (gc.STRING, "llama")})


@case("tokenizer_scores_wrong_count", r"tokenizer\.ggml\.scores .*does not match")
def _():
    return base(meta={"tokenizer.ggml.model": (gc.STRING, "llama"),
                      "tokenizer.ggml.scores": (gc.ARRAY, gc.Arr(gc.F32, [0.0] * 3))})


@case("tokenizer_scores_not_finite", r"tokenizer\.ggml\.scores\[1\] is not a finite number")
def _():
    n = len(gc.tiny_vocab()[0])
    return base(meta={"tokenizer.ggml.model": (gc.STRING, "llama"),
                      "tokenizer.ggml.scores": (gc.ARRAY, gc.Arr(gc.F32, [0.0, float("nan")] + [0.0] * (n - 2)))})


@case("tokenizer_model_missing", r"tokenizer\.ggml\.model")
def _():
    return base(meta={"tokenizer.ggml.model": None})


@case("tokens_missing", r"tokenizer\.ggml\.tokens")
def _():
    return base(meta={"tokenizer.ggml.tokens": None})


@case("tokens_not_strings", r"tokenizer\.ggml\.tokens")
def _():
    return base(meta={"tokenizer.ggml.tokens": (gc.ARRAY, gc.Arr(gc.U32, list(range(273))))})


@case("tokens_empty", r"tokenizer\.ggml\.tokens")
def _():
    return base(meta={"tokenizer.ggml.tokens": (gc.ARRAY, gc.Arr(gc.STRING, []))})


@case("token_type_length_mismatch", r"token_type")
def _():
    _, types, _ = gc.tiny_vocab()
    return base(meta={"tokenizer.ggml.token_type": (gc.ARRAY, gc.Arr(gc.I32, types[:-1]))})


@case("token_type_strings", r"token_type")
def _():
    _, types, _ = gc.tiny_vocab()
    return base(meta={"tokenizer.ggml.token_type":
                      (gc.ARRAY, gc.Arr(gc.STRING, [str(t) for t in types]))})


@case("token_count_disagrees_with_model", r"vocabulary")
def _():
    tokens, types, _ = gc.tiny_vocab()
    return base(meta={"llama.vocab_size": None,
                      "tokenizer.ggml.tokens": (gc.ARRAY, gc.Arr(gc.STRING, tokens + ["extra"])),
                      "tokenizer.ggml.token_type": (gc.ARRAY, gc.Arr(gc.I32, types + [1]))})


@case("merges_missing", r"merges")
def _():
    return base(meta={"tokenizer.ggml.merges": None})


@case("merges_name_unknown_tokens", r"merge")
def _():
    _, _, merges = gc.tiny_vocab()
    return base(meta={"tokenizer.ggml.merges":
                      (gc.ARRAY, gc.Arr(gc.STRING, merges + ["zz qq"]))})


@case("merge_without_space", r"merge")
def _():
    _, _, merges = gc.tiny_vocab()
    return base(meta={"tokenizer.ggml.merges": (gc.ARRAY, gc.Arr(gc.STRING, ["hello"] + merges))})


@case("merge_is_empty_string", r"merge")
def _():
    _, _, merges = gc.tiny_vocab()
    return base(meta={"tokenizer.ggml.merges": (gc.ARRAY, gc.Arr(gc.STRING, merges + [""]))})


@case("pre_tokenizer_unknown", r"pre-tokenizer|tokenizer\.ggml\.pre")
def _():
    return base(meta={"tokenizer.ggml.pre": (gc.STRING, "no-such-pre")})


# -- strings from the file echoed in the error: the error must stay one line
@case("architecture_with_newline", r"architecture")
def _():
    return base(meta={"general.architecture": (gc.STRING, "gpt2\nerror: a second line")})


@case("tokenizer_model_with_newline", r"tokenizer model")
def _():
    return base(meta={"tokenizer.ggml.model": (gc.STRING, "bpe\r\nx")})


@case("pre_tokenizer_with_newline", r"pre-tokenizer")
def _():
    return base(meta={"tokenizer.ggml.pre": (gc.STRING, "smollm\n")})


@case("rope_scaling_type_with_newline", r"scaling")
def _():
    return base(meta={"llama.rope.scaling.type": (gc.STRING, "yarn\n\n")})


HOSTILE = sorted(CASES)


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_file_rejected(sq, tmp_path, name):
    build, expect = CASES[name]
    out = build()
    data = out.to_bytes() if isinstance(out, gc.GGUFFile) else out
    path = tmp_path / f"{name}.gguf"
    path.write_bytes(data)
    assert_rejected(sq, path, expect)


# ---- truncation at every structural point ---------------------------------------------


def _truncation_points():
    g = base()
    data = g.to_bytes()
    m = g.marks
    tok = kv_index(g, "tokenizer.ggml.tokens")
    mer = kv_index(g, "tokenizer.ggml.merges")
    last = len(g.tensors) - 1
    pts = {
        "mid_magic": 2,
        "mid_version": m["version"] + 2,
        "mid_tensor_count": m["n_tensors"] + 3,
        "mid_kv_count": m["n_kv"] + 5,
        "after_counts": m["kv0.key"],
        "mid_key_length": m["kv0.key"] + 4,
        "mid_key_text": m["kv0.key"] + 8 + 5,
        "mid_value_type": m["kv1.type"] + 2,
        "mid_string_value": m["kv1.value"] + 8 + 3,
        "mid_array_header": m[f"kv{tok}.value"] + 6,
        "mid_token_array": m[f"kv{tok}.value"] + 1000,
        "mid_merges_array": m[f"kv{mer}.value"] + 40,
        "before_tensor_infos": m["kv_end"],
        "mid_tensor_name": m["ti0.name"] + 8 + 4,
        "mid_tensor_n_dims": m["ti1.n_dims"] + 1,
        "mid_tensor_dims": m["ti2.ne"] + 12,
        "mid_tensor_type": m["ti4.type"] + 2,
        "mid_tensor_offset": m["ti6.offset"] + 5,
        "mid_last_tensor_info": m[f"ti{last}.offset"] + 7,
        "before_alignment_padding": m["ti_end"],
        "at_data_start": m["data"],
        "mid_first_tensor": m["data0"] + 100,
        "mid_last_tensor": m[f"data{last}"] + 7,
        "last_byte_missing": m["end"] - 1,
    }
    assert all(0 <= v < len(data) for v in pts.values())
    return pts


TRUNCATIONS = _truncation_points()


@pytest.mark.parametrize("where", sorted(TRUNCATIONS))
def test_truncated_file_rejected(sq, tmp_path, where):
    data = base().to_bytes()
    path = tmp_path / f"trunc_{where}.gguf"
    path.write_bytes(data[:TRUNCATIONS[where]])
    assert_rejected(sq, path)


# ---- seeded mutation fuzz ----------------------------------------------------------------

N_MUTANTS = 24
_SPECIAL = [0, 1, 2, 3, 0x7F, 0xFF, 0xFFFF, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**40,
            2**62, 2**63, U64_MAX]


def _mutant(seed: int) -> bytes:
    g = base()
    data = bytearray(g.to_bytes())
    rng = np.random.default_rng(1000 + seed)
    fields = [v for k, v in g.marks.items() if not k.startswith("data") and k != "end"
              and k not in ("magic", "version")]
    for _ in range(int(rng.integers(1, 4))):
        if rng.random() < 0.5:  # smash a structural field with a special value
            off = int(rng.choice(fields))
            val = int(rng.choice(_SPECIAL))
            width = 8 if rng.random() < 0.5 else 4
            data[off:off + width] = (val & (2**(8 * width) - 1)).to_bytes(width, "little")
        else:  # flip bits anywhere in the header
            off = int(rng.integers(24, g.marks["data"]))
            data[off] ^= int(rng.integers(1, 256))
    return bytes(data)


@pytest.mark.parametrize("seed", range(N_MUTANTS))
def test_mutated_header_never_crashes(sq, tmp_path, seed):
    """Random damage to the header: either it still loads (exit 0) or it is
    rejected with one error line; never a crash, hang or sanitizer report."""
    path = tmp_path / f"mutant{seed}.gguf"
    path.write_bytes(_mutant(seed))
    r = run_inspect(sq, path)
    assert_clean(r)
    if r.returncode != 0:
        assert_one_error_line(r)


# ---- model paths that are not regular files -----------------------------------------------


def test_missing_file(sq, tmp_path):
    assert_rejected(sq, tmp_path / "nope.gguf", r"cannot open")


def test_directory(sq, tmp_path):
    assert_rejected(sq, tmp_path, r"not a regular file")


def test_dev_null(sq):
    assert_rejected(sq, "/dev/null", r"not a regular file")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_does_not_hang(sq, tmp_path):
    """A FIFO (no writer) as the model: must be refused, not block forever
    in open(2)."""
    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    binary, sanitized = sq
    r = run_sqserve(binary, ["inspect", "-m", fifo], timeout=TIMEOUT, sanitizer=sanitized)
    assert_one_error_line(r, r"regular file|fifo|cannot")


# ---- loadable but hostile: the forward pass must stay defined ---------------------------


def test_alignment_below_8(sq, tmp_path):
    """GGUF requires general.alignment to be a multiple of 8. With alignment 1
    F32 tensors can sit at odd addresses. sqserve must either reject the file
    or run it without undefined behaviour (misaligned float loads)."""
    path = tmp_path / "align1.gguf"
    gc.tiny_llama(path, alignment=1)
    binary, sanitized = sq
    r = run_sqserve(binary, ["generate", "-m", path, "-p", "hello", "-n", "4", "--temp", "0",
                             "-t", "1"], timeout=TIMEOUT * 2, sanitizer=sanitized)
    assert_clean(r)
    if r.returncode != 0:
        assert_one_error_line(r, r"align")


# ---- non-finite weights: refused at load, the tensor named ----------------------------
#
# A NaN or Inf weight reaches the activation quantizers (float -> int8 of NaN
# is undefined behaviour; a libFuzzer run found it) and poisons every output,
# so the loader scans every tensor it computes with (engine/model/finite.c).
# Each case poisons one value or one block scale of one tensor and expects
# the error to name the tensor and the first bad element.

NAN16, INF16, NINF16 = 0x7E00, 0x7C00, 0xFC00


def _set_u16(t, index, bits):
    raw = bytearray(t.data)
    struct.pack_into("<H", raw, index, bits)
    t.data = bytes(raw)


def _poison_float(t, index, value):
    raw = bytearray(t.data)
    if t.ttype == gc.T_F32:
        struct.pack_into("<f", raw, 4 * index, value)
    elif t.ttype == gc.T_F16:
        struct.pack_into("<e", raw, 2 * index, value)
    else:  # BF16: the top half of the float's bits
        struct.pack_into("<H", raw, 2 * index, struct.unpack("<I", struct.pack("<f", value))[0] >> 16)
    t.data = bytes(raw)


def _poison_scale(t, block, half, bits):
    """Sets the FP16 at byte offset `half` of block `block` (d, m or dmin)."""
    _set_u16(t, block * gc.BLOCK[t.ttype][1] + half, bits)


# name -> (file overrides, tensor, poison(t), first bad element)
NONFINITE = {
    "f32_norm_nan": ({}, "blk.0.attn_norm.weight", lambda t: _poison_float(t, 5, float("nan")), 5),
    "f32_output_norm_inf": ({}, "output_norm.weight", lambda t: _poison_float(t, 63, float("inf")), 63),
    "f16_output_neg_inf": ({}, "output.weight", lambda t: _poison_float(t, 1000, float("-inf")), 1000),
    "f16_matrix_nan": ({}, "blk.0.ffn_down.weight", lambda t: _poison_float(t, 4097, float("nan")), 4097),
    "bf16_norm_nan": ({"types": {"blk.1.attn_norm.weight": gc.T_BF16}}, "blk.1.attn_norm.weight",
                      lambda t: _poison_float(t, 7, float("nan")), 7),
    "q8_0_embedding_scale_nan": ({}, "token_embd.weight", lambda t: _poison_scale(t, 7, 0, NAN16), 7 * 32),
    "q8_0_matrix_scale_inf": ({}, "blk.1.attn_v.weight", lambda t: _poison_scale(t, 3, 0, INF16), 3 * 32),
    "q4_0_scale_neg_inf": ({}, "blk.1.ffn_up.weight", lambda t: _poison_scale(t, 2, 0, NINF16), 2 * 32),
    "q4_1_min_nan": ({"types": {"blk.1.ffn_down.weight": gc.T_Q4_1}}, "blk.1.ffn_down.weight",
                     lambda t: _poison_scale(t, 1, 2, NAN16), 32),
    "q4_k_dmin_inf": ({"dim": 256, "types": {"blk.0.ffn_gate.weight": gc.T_Q4_K}}, "blk.0.ffn_gate.weight",
                      lambda t: _poison_scale(t, 3, 2, INF16), 3 * 256),
    "q6_k_d_nan": ({"dim": 256, "types": {"blk.1.attn_q.weight": gc.T_Q6_K}}, "blk.1.attn_q.weight",
                   lambda t: _poison_scale(t, 1, 208, NAN16), 256),
}


@pytest.mark.parametrize("case", sorted(NONFINITE))
def test_nonfinite_weights_refused(sq, tmp_path, case):
    over, name, poison, first = NONFINITE[case]
    g = base(**over)
    good = tmp_path / "good.gguf"
    g.write(good)  # the control: the same file before poisoning loads
    r = run_inspect(sq, good)
    assert_clean(r)
    assert r.returncode == 0, r.describe()
    poison(g.tensor(name))
    bad = tmp_path / "bad.gguf"
    g.write(bad)
    k = g.tensor(name).ne[0]
    assert_rejected(sq, bad, rf"'{re.escape(name)}' holds a non-finite value \(NaN or Inf\) "
                             rf"at element {first} \(row {first // k}, column {first % k}\)")
    binary, sanitized = sq  # generate and serve load the same way: refused before any compute
    r = run_sqserve(binary, ["generate", "-m", bad, "-p", "hello", "-n", "2", "-t", "1"],
                    timeout=TIMEOUT * 2, sanitizer=sanitized)
    assert_clean(r)
    assert r.returncode == 1 and "non-finite" in r.stderr, r.describe()


def test_nonfinite_weights_refused_by_convert(sq, tmp_path):
    """convert loads its input the same way: a NaN is refused with the
    tensor named and no output (nor temporary file) is left behind."""
    g = base()
    _poison_float(g.tensor("blk.1.attn_norm.weight"), 0, float("nan"))
    bad = tmp_path / "bad.gguf"
    g.write(bad)
    out = tmp_path / "out.sqm"
    binary, sanitized = sq
    r = run_sqserve(binary, ["convert", "-m", bad, "-o", out, "--weights", "int8", "-t", "1"],
                    timeout=TIMEOUT * 2, sanitizer=sanitized)
    assert_clean(r)
    assert r.returncode == 1, r.describe()
    assert re.search(r"'blk\.1\.attn_norm\.weight' holds a non-finite value", r.stderr), r.describe()
    assert not out.exists() and not list(tmp_path.glob("out.sqm*")), list(tmp_path.iterdir())


ODD_TEMPLATES = {
    "default_system_at_end": "{% if messages[0]['role'] != 'system' %}<|im_start|>system",
    "default_system_backslash_end": "{% if x != 'system' %}{{ '<|im_start|>system\\",
    "default_system_empty": "{% if x != 'system' %}{{ '<|im_start|>system\\n<|im_end|>' }}",
    "default_system_escapes": "{% if x != \"system\" %}{{ '<|im_start|>system\\nA\\tB\\\\C\\'<|im_end|>",
    "llama3_marker_only": "<|start_header_id|>",
}


@pytest.mark.parametrize("tmpl", sorted(ODD_TEMPLATES))
def test_odd_chat_templates(sq, tmp_path, tmpl):
    path = tmp_path / "tmpl.gguf"
    gc.tiny_llama(path, chat_template=ODD_TEMPLATES[tmpl])
    binary, sanitized = sq
    r = run_sqserve(binary, ["generate", "-m", path, "--chat", "-p", "hi", "-n", "2",
                             "--temp", "0", "-t", "1"], timeout=TIMEOUT * 2, sanitizer=sanitized)
    assert_clean(r)
    assert r.returncode in (0, 1), r.describe()
    if r.returncode == 1:
        assert_one_error_line(r)
