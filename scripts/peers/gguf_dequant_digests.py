"""sha256 of every tensor of a GGUF as gguf-py de-quantises it (f32, little-endian, row-major).

The Rust tests compare `GgufFile::tensor_f32` with these digests, so a match is bit-identity
with gguf-py's `gguf.quants.dequantize` on every tensor. Prints `name<TAB>type<TAB>sha256`
lines, sorted by name.

usage: PY=$(scripts/peers/setup.sh); $PY scripts/peers/gguf_dequant_digests.py FILE.gguf > OUT.tsv
"""
import hashlib
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

r = GGUFReader(sys.argv[1])
for t in sorted(r.tensors, key=lambda t: t.name):
    v = dequantize(t.data, t.tensor_type).astype("<f4", copy=False)
    v = np.ascontiguousarray(v)
    print(f"{t.name}\t{t.tensor_type.name}\t{hashlib.sha256(v.tobytes()).hexdigest()}")
