"""The fuzz regression inputs, built from their recipe rather than kept as
binary files, so that a format change (the .sqm version, say) rebuilds them:

  gguf/nan_attn_norm_int8_acts.gguf  a tiny Llama whose blk.0.attn_norm.weight
                                     holds a NaN (the issue-16 finding: a NaN
                                     reaching the INT8 activation quantizer)
  gguf/nan_embedding_scale.gguf      a Q8_0 embedding whose first block scale
                                     is a half NaN
  sqm/nan_norm_sq_int8_acts.sqm      the first one converted (SQ 8/4 weights,
                                     INT8 activations), the NaN written into
                                     its embedded GGUF and the XXH3 checksum
                                     rewritten, so the loader's non-finite
                                     scan, not the checksum, must refuse it
  sqm/misaligned_data.sqm            the clean conversion with its data
                                     section offset moved back one byte (and
                                     the checksum rewritten): the libFuzzer
                                     finding of 2026-12-03, a half-precision
                                     scale array read at an odd address
                                     (engine/model/sq.c, UBSan)

    PYTHONPATH=tests .venv/bin/python tests/fuzz/regressions.py OUT_DIR [build/sqserve]
"""
import ctypes
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import gguf  # noqa: E402
import gguf_craft as gc  # noqa: E402

NAMES = ["gguf/nan_attn_norm_int8_acts.gguf", "gguf/nan_embedding_scale.gguf",
         "sqm/nan_norm_sq_int8_acts.sqm", "sqm/misaligned_data.sqm"]


def _offset(raw: bytes, name: str, base: int = 0) -> int:
    """File offset of a tensor's data inside a GGUF held in raw[base:]."""
    with tempfile.NamedTemporaryFile(suffix=".gguf") as f:
        f.write(raw[base:])
        f.flush()
        t = [t for t in gguf.GGUFReader(f.name).tensors if t.name == name][0]
        return base + int(t.data_offset)


def _gguf(path: Path, types=None) -> bytearray:
    gc.tiny_llama_file(types=types or {}).write(path)
    return bytearray(path.read_bytes())


def build(out: Path, binary: str) -> dict:
    out = Path(out)
    for d in ("gguf", "sqm"):
        (out / d).mkdir(parents=True, exist_ok=True)
    paths = {n: out / n for n in NAMES}
    # a NaN norm weight
    clean = out / "clean.gguf"
    raw = _gguf(clean)
    at = _offset(bytes(raw), "blk.0.attn_norm.weight")
    raw[at:at + 4] = struct.pack("<f", float("nan"))
    paths[NAMES[0]].write_bytes(bytes(raw))
    # a NaN Q8_0 block scale in the embeddings
    raw = _gguf(out / "q8.gguf", {"token_embd.weight": gc.T_Q8_0})
    at = _offset(bytes(raw), "token_embd.weight")
    raw[at:at + 2] = struct.pack("<H", 0x7E00)
    paths[NAMES[1]].write_bytes(bytes(raw))
    # the .sqm: converted from the clean model, then poisoned the same way
    sqm = out / "clean.sqm"
    r = subprocess.run([binary, "convert", "-m", str(clean), "-o", str(sqm), "--weights", "sq:8/4:b64:s0.875",
                        "--acts", "int8"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lib = ctypes.CDLL("libxxhash.so.0")
    lib.XXH3_64bits.restype = ctypes.c_uint64
    lib.XXH3_64bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]

    def rechecksum(raw: bytearray) -> bytes:
        body = bytes(raw[64:])
        raw[16:24] = struct.pack("<Q", lib.XXH3_64bits(body, len(body)))
        return bytes(raw)

    clean_sqm = sqm.read_bytes()
    raw = bytearray(clean_sqm)
    gguf_off = struct.unpack("<Q", bytes(raw[40:48]))[0]  # header: magic, version, size, checksum, json off/len, gguf off
    at = _offset(bytes(raw), "blk.0.attn_norm.weight", gguf_off)
    raw[at:at + 4] = struct.pack("<f", float("nan"))
    paths[NAMES[2]].write_bytes(rechecksum(raw))
    # the data section one byte early: every array of the manifest at an odd address
    raw = bytearray(clean_sqm)
    data_off = struct.unpack("<Q", bytes(raw[56:64]))[0]
    raw[56:64] = struct.pack("<Q", data_off - 1)
    paths[NAMES[3]].write_bytes(rechecksum(raw))
    return paths


if __name__ == "__main__":
    build(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else str(HERE.parent.parent / "build" / "sqserve"))
