#!/usr/bin/env python3
"""Synthetic token shards for the shell tests, and byte-level corruption of any file.

  write_shards.py shards DIR PREFIX NAME:TOKENS... [--no-checksum]
      DIR/PREFIX_NAME.bin for each NAME:TOKENS (e.g. train_000000:20000): uint16 tokens of a
      learnable pattern over 64 ids, in llm.c's format plus competelm's body checksum
      (src/data/shard.hpp: header[3] = "XH64", header[4..5] = XXH64 of the token bytes);
      --no-checksum writes them exactly as llm.c does (header[3..] = 0).
  write_shards.py flip FILE OFFSET|mid     XOR one byte with 0x01
  write_shards.py truncate FILE BYTES|half  cut the file to BYTES

No dependency beyond the standard library (XXH64 is implemented here, independently of the
C++ one, so the tests also check that the documented header layout is what the reader wants).
"""
import os
import random
import struct
import sys

M = (1 << 64) - 1
P1, P2, P3, P4, P5 = (0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9,
                      0x85EBCA77C2B2AE63, 0x27D4EB2F165667C5)


def rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & M


def rnd(acc, v):
    return rotl((acc + v * P2) & M, 31) * P1 & M


def xxh64(data, seed=0):
    n, i = len(data), 0
    if n >= 32:
        v = [(seed + P1 + P2) & M, (seed + P2) & M, seed, (seed - P1) & M]
        while i + 32 <= n:
            lanes = struct.unpack_from("<4Q", data, i)
            v = [rnd(a, x) for a, x in zip(v, lanes)]
            i += 32
        h = (rotl(v[0], 1) + rotl(v[1], 7) + rotl(v[2], 12) + rotl(v[3], 18)) & M
        for a in v:
            h = ((h ^ rnd(0, a)) * P1 + P4) & M
    else:
        h = (seed + P5) & M
    h = (h + n) & M
    while i + 8 <= n:
        h = (rotl(h ^ rnd(0, struct.unpack_from("<Q", data, i)[0]), 27) * P1 + P4) & M
        i += 8
    if i + 4 <= n:
        h = (rotl(h ^ (struct.unpack_from("<I", data, i)[0] * P1 & M), 23) * P2 + P3) & M
        i += 4
    while i < n:
        h = rotl(h ^ (data[i] * P5 & M), 11) * P1 & M
        i += 1
    h = ((h ^ (h >> 33)) * P2) & M
    h = ((h ^ (h >> 29)) * P3) & M
    return h ^ (h >> 32)


def shard(path, n, checksum, rng):
    x, toks = 0, []
    for _ in range(n):
        x = rng.randrange(64) if rng.random() < 0.1 else (3 * x + 1) % 64
        toks.append(x)
    body = struct.pack(f"<{n}H", *toks)
    header = [20240520, 1, n] + [0] * 253
    if checksum:
        h = xxh64(body)
        header[3:6] = [struct.unpack("<i", b"XH64")[0], h & 0xFFFFFFFF, h >> 32]
    with open(path, "wb") as f:
        f.write(struct.pack("<256I" if checksum else "<256i", *header))
        f.write(body)


def main(argv):
    cmd = argv[1]
    if cmd == "shards":
        out, prefix = argv[2], argv[3]
        checksum = "--no-checksum" not in argv
        rng = random.Random(1)
        for spec in (a for a in argv[4:] if not a.startswith("--")):
            name, n = spec.split(":")
            shard(os.path.join(out, f"{prefix}_{name}.bin"), int(n), checksum, rng)
    elif cmd == "flip":
        path, at = argv[2], argv[3]
        size = os.path.getsize(path)
        at = size // 2 if at == "mid" else int(at)
        with open(path, "r+b") as f:
            f.seek(at)
            b = f.read(1)[0]
            f.seek(at)
            f.write(bytes([b ^ 0x01]))
    elif cmd == "truncate":
        path, n = argv[2], argv[3]
        os.truncate(path, os.path.getsize(path) // 2 if n == "half" else int(n))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv)
