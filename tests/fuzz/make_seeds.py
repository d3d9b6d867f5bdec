"""Writes the libFuzzer seed corpora (tests/fuzz/corpus/<target>/): the text seeds are
committed, the model files (gguf/, sqm/) are git-ignored and written by `make fuzz`.

    .venv/bin/python tests/fuzz/make_seeds.py [build/sqserve]

gguf: tiny Llama models from tests/gguf_craft.py (the default mix of F32,
F16, Q8_0, Q4_0 weights; tied embeddings; Q4_1/Q4_K/Q6_K/BF16 variants),
and from tests/arch_gguf.py: qwen2, qwen3 with a wide q, a sliding-window
Llama, and a SentencePiece vocabulary (spm.gguf, also a model the tok
harness can load through $SQSERVE_FUZZ_MODEL).
sqm: the default tiny model converted with int8 and SQ weights (needs the
sqserve binary). tok, chat, request: hand-written inputs in each harness's
format (see the harness headers).
"""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import arch_gguf  # noqa: E402
import gguf_craft as gc  # noqa: E402

C = HERE / "corpus"


def put(target, name, data: bytes):
    d = C / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else str(HERE.parent.parent / "build" / "sqserve")
    variants = {
        "default": {},
        "tied": {"tied": True},
        "one_layer_q4_1": {"n_layer": 1, "types": {"blk.0.ffn_down.weight": gc.T_Q4_1,
                                                   "blk.0.attn_norm.weight": gc.T_BF16}},
        "kquants": {"n_layer": 1, "dim": 256, "ffn": 256, "n_head": 4, "n_head_kv": 2,
                    "types": {"token_embd.weight": gc.T_Q8_0, "output.weight": gc.T_Q8_0,
                              "blk.0.attn_q.weight": gc.T_Q6_K, "blk.0.attn_k.weight": gc.T_Q8_0,
                              "blk.0.attn_v.weight": gc.T_Q8_0, "blk.0.attn_output.weight": gc.T_Q4_0,
                              "blk.0.ffn_gate.weight": gc.T_Q4_K, "blk.0.ffn_up.weight": gc.T_Q4_K,
                              "blk.0.ffn_down.weight": gc.T_Q6_K}},
        "llama3_template": {"n_layer": 1, "chat_template": "<|start_header_id|>{{ x }}<|end_header_id|>"},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, kw in variants.items():
            p = Path(tmp) / f"{name}.gguf"
            gc.tiny_llama(p, **kw)
            put("gguf", f"{name}.gguf", p.read_bytes())
        for name, kw in {"qwen2": {"arch": "qwen2"}, "qwen3_wide_q": {"arch": "qwen3", "key_length": 32},
                         "swa": {"n_swa": 5}, "spm": {"vocab": arch_gguf.tiny_spm_vocab()}}.items():
            p = Path(tmp) / f"{name}.gguf"
            arch_gguf.write(p, **kw)
            put("gguf", f"{name}.gguf", p.read_bytes())
        src = Path(tmp) / "default.gguf"
        for name, recipe in {"int8": ["--weights", "int8"],
                             "sq_int8acts": ["--weights", "sq:8/4:b64:s0.875", "--acts", "int8"],
                             "int4_g32": ["--weights", "int4:g32"]}.items():
            out = Path(tmp) / f"{name}.sqm"
            subprocess.run([binary, "convert", "-m", str(src), "-o", str(out), "-t", "1", *recipe],
                           check=True, capture_output=True)
            put("sqm", f"{name}.sqm", out.read_bytes())
    for i, text in enumerate([
            b"\x00Hello, world! How are you today?",
            b"\x01<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
            "\x00caf\u00e9 na\u00efve \u4e2d\u6587 \U0001F600 \u0645\u0631\u062d\u0628\u0627".encode(),
            b"\x00\xff\xfe invalid \xc3\x28 utf8 \xe2\x82 end \xf0\x9f\x98",
            b"\x00   \t\t\n\n\r\n  spaces   1234567890 3.14159 x=y+z; {\"json\": [1,2]}",
            b"\x01<|endoftext|><|im_end|><|im_start|><unk>",
            b"\x00" + b"a" * 3000,
            b"\x00I'm can't we'll they've DON'T it's",
    ]):
        put("tok", f"seed{i}", text)
    chatml = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
              "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
              "Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
              "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
              "{{ '<|im_start|>assistant\n' }}{% endif %}")
    llama3 = ("{{ '<|begin_of_text|>' }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + "
              "'<|end_header_id|>\n\n' + m['content'] + '<|eot_id|>' }}{% endfor %}")
    for name, tmpl in {"chatml": chatml, "llama3": llama3, "empty": ""}.items():
        msgs = b"system\x00Be brief.\x00user\x00Hi \xc3\xa9\x00assistant\x00Hello!\x00user\x00<|im_end|>"
        put("chat", name, tmpl.encode() + b"\x00" + msgs)
    model = "SmolLM2-135M-Instruct.Q4_1"
    reqs = [
        (0, {"model": model, "prompt": "Hello", "max_tokens": 16, "temperature": 0.7, "top_p": 0.9,
             "stop": ["\n", "END"], "n": 2, "logprobs": 3, "echo": True, "seed": 5}),
        (0, {"model": model, "prompt": [[1, 2, 3], [504, 28]], "max_tokens": 4,
             "stream": True, "stream_options": {"include_usage": True}}),
        (0, {"model": model, "prompt": ["a", "b"], "presence_penalty": 1.5, "frequency_penalty": -1,
             "top_k": 40, "min_p": 0.05, "repetition_penalty": 1.1, "ignore_eos": True}),
        (1, {"model": model, "messages": [{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
             "max_completion_tokens": 8, "logprobs": True, "top_logprobs": 5}),
        (1, {"model": model, "messages": [{"role": "user", "content": "x"}], "max_tokens": 1e999}),
        (2, {"prompt": "tokenize me \u00e9"}),
        (2, {"messages": [{"role": "user", "content": "hi"}], "add_special": False}),
        (3, {"tokens": [1, 2, 3, 49151, 0]}),
    ]
    for i, (ep, body) in enumerate(reqs):
        put("request", f"seed{i}", bytes([ep]) + json.dumps(body).encode())


if __name__ == "__main__":
    main()
