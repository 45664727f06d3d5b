#!/usr/bin/env python3
"""Writes small llm.c token shards of random GPT-2 token ids for the sanitizer runs.

Usage: synthetic_shards.py OUT_DIR  →  OUT_DIR/train_000.bin, train_001.bin, val_000.bin
(uint16 tokens, a 256×int32 header: magic 20240520, version 1, token count; see
src/data/shard.hpp). Seeded, so every run trains on the same bytes.
"""
import pathlib
import random
import struct
import sys

out = pathlib.Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
rng = random.Random(1234)
for name, n in (("train_000", 6000), ("train_001", 6000), ("val_000", 2000)):
    # Documents of random length separated by <|endoftext|> (50256), as real shards are.
    tokens = []
    while len(tokens) < n:
        tokens.append(50256)
        tokens.extend(rng.randrange(50256) for _ in range(rng.randrange(20, 400)))
    tokens = tokens[:n]
    header = [20240520, 1, n] + [0] * 253
    (out / f"{name}.bin").write_bytes(struct.pack("<256i", *header) + struct.pack(f"<{n}H", *tokens))
