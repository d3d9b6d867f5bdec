"""Rebuilds tests/fuzz/regressions/sqm/nan_norm_sq_int8_acts.sqm, the
regression input of issue 16's fuzz finding (a NaN weight reaching the INT8
activation quantizer, kernels/cpu/k_sq.c), in the current .sqm format: a
tiny Llama converted with SQ 8/4 weights and INT8 activations, one NaN
written into blk.0.attn_norm.weight of its embedded GGUF, and the XXH3
checksum rewritten so that the loader's non-finite scan (not the checksum)
must refuse it. Run again whenever the .sqm format version changes:

    PYTHONPATH=tests .venv/bin/python tests/fuzz/make_nan_sqm.py \\
        tests/fuzz/regressions/sqm/nan_norm_sq_int8_acts.sqm build/sqserve
"""
import ctypes
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
import gguf
import gguf_craft as gc
out = Path(sys.argv[1])
binp = sys.argv[2]
tmp = Path(tempfile.mkdtemp())
tiny = tmp / "tiny.gguf"
gc.tiny_llama_file().write(tiny)
sqm = tmp / "m.sqm"
r = subprocess.run([binp, "convert", "-m", str(tiny), "-o", str(sqm), "--weights", "sq:8/4:b64:s0.875", "--acts", "int8"], capture_output=True, text=True)
assert r.returncode == 0, r.stderr
raw = bytearray(sqm.read_bytes())
magic, version, size, csum, json_off, json_len, gguf_off, gguf_len, data_off = struct.unpack("<4sIQQQQQQQ", bytes(raw[:64]))
emb = tmp / "emb.gguf"
emb.write_bytes(bytes(raw[gguf_off:gguf_off + gguf_len]))
rd = gguf.GGUFReader(str(emb))
t = [t for t in rd.tensors if t.name == "blk.0.attn_norm.weight"][0]
at = gguf_off + int(t.data_offset)
assert struct.unpack("<f", bytes(raw[at:at + 4]))[0] == float(t.data[0])
raw[at:at + 4] = struct.pack("<f", float("nan"))
lib = ctypes.CDLL("libxxhash.so.0")
lib.XXH3_64bits.restype = ctypes.c_uint64
lib.XXH3_64bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
body = bytes(raw[64:])
raw[16:24] = struct.pack("<Q", lib.XXH3_64bits(body, len(body)))
out.write_bytes(bytes(raw))
print("version", version, "bytes", len(raw), "nan at", at)
