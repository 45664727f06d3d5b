"""The reference file format shared with tests/unit/test_reference_gpt2.cpp.

Little-endian throughout:
    header   : 8 bytes magic b"CLMREF01", uint32 record count
    record   : uint32 name_len, name (utf-8, no terminator),
               uint32 dtype (0 = float64, 1 = int32), uint32 ndim, int64 dims[ndim],
               data (prod(dims) elements, row-major)
The count in the header is patched in by close(), so records can be streamed.
"""
import struct

import numpy as np

MAGIC = b"CLMREF01"
F64, I32 = 0, 1


class Writer:
    def __init__(self, path):
        self.f = open(path, "wb")
        self.f.write(MAGIC + struct.pack("<I", 0))
        self.count = 0

    def add(self, name, value, kind="f64"):
        if hasattr(value, "detach"):  # torch tensor
            value = value.detach().cpu().numpy()
        arr = np.ascontiguousarray(np.asarray(value, dtype=np.float64 if kind == "f64" else np.int32))
        arr = arr.astype("<f8" if kind == "f64" else "<i4", copy=False)
        nb = name.encode()
        self.f.write(struct.pack("<I", len(nb)) + nb)
        self.f.write(struct.pack("<II", F64 if kind == "f64" else I32, arr.ndim))
        self.f.write(struct.pack(f"<{arr.ndim}q", *arr.shape))
        self.f.write(arr.tobytes())
        self.count += 1

    def close(self):
        self.f.seek(len(MAGIC))
        self.f.write(struct.pack("<I", self.count))
        self.f.close()


def read(path):
    """{name: numpy array} (for debugging and for scripts comparing two reference files)."""
    out = {}
    with open(path, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            raise ValueError(f"{path}: not a reference file (bad magic)")
        (count,) = struct.unpack("<I", f.read(4))
        for _ in range(count):
            (n,) = struct.unpack("<I", f.read(4))
            name = f.read(n).decode()
            dtype, ndim = struct.unpack("<II", f.read(8))
            dims = struct.unpack(f"<{ndim}q", f.read(8 * ndim))
            dt = np.dtype("<f8") if dtype == F64 else np.dtype("<i4")
            size = int(np.prod(dims)) if ndim else 1
            out[name] = np.frombuffer(f.read(size * dt.itemsize), dtype=dt).reshape(dims)
    return out
