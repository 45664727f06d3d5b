#!/usr/bin/env python3
"""Checks a `competelm-export --format hf` directory with an independent PyTorch GPT-2.

Reads DIR/config.json and DIR/model.safetensors (parsed here by hand: `transformers` and
`safetensors` are not needed), builds GPT-2 exactly as Hugging Face's GPT2LMHeadModel
computes it (Conv1D weights stored (in, out): y = x @ W + b; gelu_new; LM head tied to
wte.weight) in float64, and compares its logits with the ones the C++ test wrote to
EXPECTED (a safetensors file: "tokens" (T) as F32, "logits" (T, V)).

Exit 0: max |Δlogit| ≤ tol; 1: mismatch (or a malformed file); 3: torch missing.
"""
import argparse
import json
import math
import struct
import sys

try:
    import torch
except ImportError as e:
    print(f"hf_logits.py: cannot import torch ({e}); install python3-torch", file=sys.stderr)
    sys.exit(3)


DTYPES = {"F32": (torch.float32, 4), "F16": (torch.float16, 2), "BF16": (torch.bfloat16, 2)}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    if n % 8 != 0:
        raise ValueError(f"{path}: header length {n} is not a multiple of 8")
    header = json.loads(data[8:8 + n])
    buf = data[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype, size = DTYPES[info["dtype"]]
        b, e = info["data_offsets"]
        numel = math.prod(info["shape"])
        if e - b != numel * size or e > len(buf):
            raise ValueError(f"{path}: bad data_offsets for {name}")
        t = torch.frombuffer(bytearray(buf[b:e]), dtype=dtype) if numel else torch.zeros(0, dtype=dtype)
        out[name] = t.reshape(info["shape"]).to(torch.float64)
    return out, header.get("__metadata__", {})


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def hf_gpt2_logits(w, cfg, tokens):
    C, NH, L, eps = cfg["n_embd"], cfg["n_head"], cfg["n_layer"], cfg["layer_norm_epsilon"]
    T = tokens.shape[0]
    hs = C // NH
    ln = lambda x, p: torch.nn.functional.layer_norm(x, (C,), w[p + ".weight"], w[p + ".bias"], eps)
    conv1d = lambda x, p: x @ w[p + ".weight"] + w[p + ".bias"]  # HF Conv1D: weight is (in, out)
    x = w["wte.weight"][tokens] + w["wpe.weight"][:T]
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for l in range(L):
        p = f"h.{l}."
        q, k, v = conv1d(ln(x, p + "ln_1"), p + "attn.c_attn").split(C, dim=-1)
        q, k, v = (t.view(T, NH, hs).transpose(0, 1) for t in (q, k, v))
        att = (q @ k.transpose(-1, -2)) / math.sqrt(hs)
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        y = (att @ v).transpose(0, 1).reshape(T, C)
        x = x + conv1d(y, p + "attn.c_proj")
        x = x + conv1d(gelu_new(conv1d(ln(x, p + "ln_2"), p + "mlp.c_fc")), p + "mlp.c_proj")
    return ln(x, "ln_f") @ w["wte.weight"].T  # tied LM head


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="directory written by competelm-export --format hf")
    ap.add_argument("--expected", required=True, help="safetensors file with tokens and logits")
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    with open(f"{a.model}/config.json") as f:
        cfg = json.load(f)
    for key, want in (("model_type", "gpt2"), ("activation_function", "gelu_new"), ("architectures", ["GPT2LMHeadModel"])):
        if cfg.get(key) != want:
            print(f"hf_logits.py: config.json {key} = {cfg.get(key)!r}, expected {want!r}", file=sys.stderr)
            return 1
    w, meta = read_safetensors(f"{a.model}/model.safetensors")
    if meta.get("format") != "pt":
        print(f"hf_logits.py: __metadata__ format = {meta.get('format')!r}, transformers expects 'pt'", file=sys.stderr)
        return 1
    if w["wte.weight"].shape[0] != cfg["vocab_size"] or w["wpe.weight"].shape[0] != cfg["n_positions"]:
        print("hf_logits.py: wte/wpe rows disagree with config.json", file=sys.stderr)
        return 1
    exp, _ = read_safetensors(a.expected)
    tokens = exp["tokens"].to(torch.long)
    ref = hf_gpt2_logits(w, cfg, tokens)
    diff = (ref - exp["logits"]).abs().max().item()
    scale = ref.abs().max().item()
    print(f"hf_logits.py: T={tokens.shape[0]} V={ref.shape[1]} max|logit|={scale:.4f} max|diff|={diff:.3e} (tol {a.tol})")
    return 0 if diff <= a.tol else 1


if __name__ == "__main__":
    sys.exit(main())
