#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets into tests/fuzz/seeds/<target>/.

The seeds are committed; rerun this only to change them (python3 tests/fuzz/make_seeds.py).
Each seed is a small valid (or almost valid) input in the layout the target expects
(tests/fuzz/fuzz_*.cpp): libFuzzer mutates from there, and fuzz.replay runs them in ctest.
"""
import hashlib
import json
import pathlib
import struct

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SEEDS = HERE / "seeds"


def put(target, name, data):
    d = SEEDS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


# ---- config: YAML text, then NUL-separated --set overrides -------------------------------
put("config", "tiny.yaml", (ROOT / "configs/tiny.yaml").read_bytes())
put("config", "tiny-moe.yaml", (ROOT / "configs/tiny-moe.yaml").read_bytes())
put("config", "empty_sections.yaml", "run: {}\nmodel: {}\nmoe: {}\n")
put("config", "overrides.yaml",
    "model:\n  n_layer: 4\n  d_model: 64\n  n_head: 4\nmoe:\n  n_experts: 4\n  layers: \"0,2\"\n"
    "\0train.steps=5\0moe.layers=every:2:1\0data.train=\"x y: z #1\"")
put("config", "flow_style.yaml",
    "{run: {seed: 7, device: cpu}, optim: {lr: 3e-4, schedule: wsd, wsd_decay_frac: 0.5}, "
    "eval: {prompt: \"Once upon\", temperature: 0.7}}\n")
put("config", "bad_key.yaml", "train:\n  stpes: 5\n")

# ---- shard: llm.c token shard -------------------------------------------------------------
def shard(version, tokens, count=None):
    header = [0] * 256
    header[0], header[1], header[2] = 20240520, version, len(tokens) if count is None else count
    fmt = "<%d%s" % (len(tokens), "H" if version == 1 else "I")
    return struct.pack("<256i", *header) + struct.pack(fmt, *tokens)

put("shard", "v1_ten_tokens.bin", shard(1, [50256, 464, 2068, 7586, 21831, 50256, 0, 1, 65535, 13]))
put("shard", "v2_five_tokens.bin", shard(2, [50256, 100000, 0, 2**32 - 1, 7]))
put("shard", "v1_empty.bin", shard(1, []))
put("shard", "v1_truncated.bin", shard(1, [1, 2, 3], count=4))

# ---- checkpoint: first byte even → meta.json text; odd → CLMTENS tensor file ------------
def tensor_file(tensors):
    header = b"CLMTENS\0" + struct.pack("<II", 1, len(tensors))
    size = len(header) + sum(4 + len(n) + 4 + 4 + 8 * len(s) + 8 for n, s, _ in tensors)
    entries, blocks, cursor = b"", b"", size
    for name, shape, values in tensors:
        off = (cursor + 63) // 64 * 64
        entries += struct.pack("<I", len(name)) + name + struct.pack("<II", 0, len(shape))
        entries += struct.pack("<%dq" % len(shape), *shape) + struct.pack("<Q", off)
        blocks += b"\0" * (off - cursor) + struct.pack("<%df" % len(values), *values)
        cursor = off + 4 * len(values)
    return header + entries + blocks

put("checkpoint", "tensors_two.bin", b"\x01" + tensor_file(
    [(b"w", [2, 3], [1, 2, 3, 4, 5, 6]), (b"b", [3], [-1, 0, 1])]))
put("checkpoint", "tensors_scalar_and_empty.bin", b"\x01" + tensor_file(
    [(b"step_scale", [], [0.5]), (b"empty", [0, 4], []), (b"v", [1, 1, 2], [1, 2])]))
put("checkpoint", "tensors_none.bin", b"\x03" + tensor_file([]))

# Version 2: each entry records the element range [begin, end) of its global shape (a shard
# of a multi-rank checkpoint).
def tensor_file_v2(tensors):
    header = b"CLMTENS\0" + struct.pack("<II", 2, len(tensors))
    size = len(header) + sum(4 + len(n) + 4 + 4 + 8 * len(s) + 16 + 8 for n, s, _, _ in tensors)
    entries, blocks, cursor = b"", b"", size
    for name, shape, begin, values in tensors:
        off = (cursor + 63) // 64 * 64
        entries += struct.pack("<I", len(name)) + name + struct.pack("<II", 0, len(shape))
        entries += struct.pack("<%dq" % len(shape), *shape)
        entries += struct.pack("<QQ", begin, begin + len(values)) + struct.pack("<Q", off)
        blocks += b"\0" * (off - cursor) + struct.pack("<%df" % len(values), *values)
        cursor = off + 4 * len(values)
    return header + entries + blocks

put("checkpoint", "tensors_v2_slices.bin", b"\x05" + tensor_file_v2(
    [(b"w", [2, 3], 2, [3, 4, 5]), (b"b", [3], 0, [-1, 0, 1]), (b"e", [0], 0, [])]))

# meta.json for the files the harness lays out: model.bin (tensors_two without the mode
# byte, as CheckpointWriter writes it) and notes.txt. The harness fixes meta_checksum.
def meta(files, extra=""):
    body = ('{\n  "format": "competelm-checkpoint",\n  "version": 1,\n  "step": 7,\n'
            '  "time_utc": "2024-05-01T12:00:00Z",\n' + extra + '  "files": {')
    body += ",".join('\n    %s: {"bytes": %d, "checksum": "%s"}' % (json.dumps(n), b, c) for n, b, c in files)
    body += '\n  },\n  "meta_checksum": "%s"\n}\n' % ("0" * 16)
    return body

put("checkpoint", "meta_wrong_checksums.json",
    b"\x00" + meta([("model.bin", 448, "0123456789abcdef"), ("notes.txt", 6, "fedcba9876543210")]).encode())
put("checkpoint", "meta_no_files.json", b"\x00" + meta([], extra='  "loss": 3.25,\n  "tokens": 12345678901234,\n').encode())
put("checkpoint", "meta_bad_version.json", b"\x02" + meta([]).replace('"version": 1', '"version": 2').encode())
put("checkpoint", "meta_escapes.json",
    b"\x00" + meta([("notes.txt", 6, "0000000000000000")], extra='  "note": "tab\\t \\u00e9 \\ud83d\\ude00",\n  "arr": [1, -2.5e3, true, null, {}],\n').encode())

# ---- tokenizer: first byte % 4 → 0 encode text, 1 decode uint16 ids, 2 encoder.json, 3 vocab.bpe
put("tokenizer", "encode_english.txt", b"\x00The thing and the other thing, 12 caf\xc3\xa9s!\n\n  done")
put("tokenizer", "encode_invalid_utf8.txt", b"\x04ab\xff\xfe\xc3 \xe2\x82 \xf0\x9f\x98\x80's 've\r\n\t ")
put("tokenizer", "decode_ids.bin", b"\x01" + struct.pack("<8H", 116, 104, 256, 258, 32, 273, 10, 255))
put("tokenizer", "decode_bad_id.bin", b"\x05" + struct.pack("<3H", 1, 60000, 2))

def symbols():
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    out, nxt = {}, 256
    for b in range(256):
        if b in printable:
            out[b] = chr(b)
        else:
            out[b] = chr(nxt)
            nxt += 1
    return out

SYM = symbols()
spell = lambda bs: "".join(SYM[b] for b in bs)
vocab = {spell(bytes([b])): b for b in range(256)}
merges = [(b"t", b"h"), (b"th", b"e"), (b" ", b"t")]
for i, (l, r) in enumerate(merges):
    vocab[spell(l + r)] = 256 + i
put("tokenizer", "encoder_small.json", b"\x02" + json.dumps(vocab, ensure_ascii=False).encode())
put("tokenizer", "encoder_escaped.json", b"\x06" + json.dumps(vocab, ensure_ascii=True, indent=1).encode())
put("tokenizer", "vocab_small.bpe",
    b"\x03" + ("#version: 0.2\n" + "".join("%s %s\n" % (spell(l), spell(r)) for l, r in merges)).encode())
