#!/usr/bin/env python3
"""Plain PyTorch GPT-2: the reference the C++ model is compared against.

Layout and semantics mirror src/model/gpt2.hpp exactly (parameter names, (OC, C) linear
weights, vocab padded to a multiple of 128 with the LM head tied to wte, loss over the
first V logits only). The reference runs in float64 so its own rounding error is negligible
next to the fp32 C++ model; every random input is rounded to fp32 first so both sides start
from bit-identical values.

Run as a script it writes a reference file (format: see reffile.py) holding the weights,
the batches, logits, per-position losses, loss, every gradient, and the per-step losses /
grad norms / final weights of `--steps` AdamW steps with global grad-norm clipping.
"""
import argparse
import math
import sys

try:
    import torch
    import torch.nn.functional as F
except ImportError as e:  # a declared test dependency: say so instead of a bare traceback
    print(f"gpt2.py: cannot import torch ({e}); install python3-torch "
          "(Debian) or `pip install torch` for /usr/bin/python3", file=sys.stderr)
    sys.exit(3)

import reffile

LN_EPS = 1e-5


def padded_vocab(V):
    return (V + 127) // 128 * 128


def param_shapes(L, C, V, maxT):
    """(name, shape) in the order the C++ table registers them (order is informative only)."""
    Vp = padded_vocab(V)
    shapes = [("wte", (Vp, C)), ("wpe", (maxT, C))]
    for l in range(L):
        p = f"blocks.{l}."
        shapes += [
            (p + "ln1.weight", (C,)), (p + "ln1.bias", (C,)),
            (p + "attn.qkv.weight", (3 * C, C)), (p + "attn.qkv.bias", (3 * C,)),
            (p + "attn.proj.weight", (C, C)), (p + "attn.proj.bias", (C,)),
            (p + "ln2.weight", (C,)), (p + "ln2.bias", (C,)),
            (p + "mlp.fc.weight", (4 * C, C)), (p + "mlp.fc.bias", (4 * C,)),
            (p + "mlp.proj.weight", (C, 4 * C)), (p + "mlp.proj.bias", (C,)),
        ]
    shapes += [("lnf.weight", (C,)), ("lnf.bias", (C,))]
    return shapes


def decays(name, shape):
    """Weight-decay rule (the C++ default ModelInit): only the 2-D matmul weights of the
    blocks; never wte/wpe, biases or LayerNorm parameters. The C++ test asserts its table's
    weight_decay flags agree with this rule."""
    return name.startswith("blocks.") and name.endswith(".weight") and len(shape) == 2


def init_params(L, C, V, maxT, gen, std=0.1, dtype=torch.float64):
    """Random weights, deliberately larger than GPT-2's 0.02 (and LayerNorm weights away from
    exactly 1, biases non-zero) so that a wrong index or a missing term changes the output
    visibly. Drawn in fp32 then widened, so the fp32 C++ copy is exact."""
    params = {}
    for name, shape in param_shapes(L, C, V, maxT):
        if name.endswith("ln1.weight") or name.endswith("ln2.weight") or name == "lnf.weight":
            t = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        elif name.endswith(".bias"):
            t = 0.05 * torch.randn(shape, generator=gen)
        else:
            t = std * torch.randn(shape, generator=gen)
        params[name] = t.to(torch.float32).to(dtype).requires_grad_(True)
    return params


def attention(qkv, NH):
    """Causal multi-head self-attention on qkv (B, T, 3C) -> (B, T, C)."""
    B, T, C3 = qkv.shape
    C = C3 // 3
    hs = C // NH
    q, k, v = qkv.split(C, dim=2)
    q = q.view(B, T, NH, hs).transpose(1, 2)  # (B, NH, T, hs)
    k = k.view(B, T, NH, hs).transpose(1, 2)
    v = v.view(B, T, NH, hs).transpose(1, 2)
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))  # (B, NH, T, T)
    mask = torch.ones(T, T, dtype=torch.bool, device=qkv.device).tril()
    att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
    y = att @ v  # (B, NH, T, hs)
    return y.transpose(1, 2).contiguous().view(B, T, C)


def forward(params, tokens, L, NH, V, targets=None, mlp=None):
    """Returns (logits (B, T, Vp), per-position losses (B*T) or None, mean loss or None).
    mlp(l, h) may replace block l's dense MLP on h = ln2(x) (B, T, C): it returns the FFN's
    output, or None for the dense MLP (moe.py plugs its MoE layer in here)."""
    B, T = tokens.shape
    P = params
    x = P["wte"][tokens] + P["wpe"][:T]  # (B, T, C)
    C = x.shape[-1]
    for l in range(L):
        p = f"blocks.{l}."
        h = F.layer_norm(x, (C,), P[p + "ln1.weight"], P[p + "ln1.bias"], LN_EPS)
        qkv = F.linear(h, P[p + "attn.qkv.weight"], P[p + "attn.qkv.bias"])  # (B, T, 3C)
        x = x + F.linear(attention(qkv, NH), P[p + "attn.proj.weight"], P[p + "attn.proj.bias"])
        h = F.layer_norm(x, (C,), P[p + "ln2.weight"], P[p + "ln2.bias"], LN_EPS)
        y = mlp(l, h) if mlp is not None else None
        if y is not None:
            x = x + y
            continue
        h = F.gelu(F.linear(h, P[p + "mlp.fc.weight"], P[p + "mlp.fc.bias"]), approximate="tanh")
        x = x + F.linear(h, P[p + "mlp.proj.weight"], P[p + "mlp.proj.bias"])
    x = F.layer_norm(x, (C,), P["lnf.weight"], P["lnf.bias"], LN_EPS)
    logits = x @ P["wte"].t()  # (B, T, Vp), tied LM head
    if targets is None:
        return logits, None, None
    losses = F.cross_entropy(logits[..., :V].reshape(-1, V), targets.reshape(-1), reduction="none")
    return logits, losses, losses.mean()


def clip_scale(norm, clip):
    """The C++ trainer's clipping factor: grads *= clip / max(norm, clip) (= min(1, clip/norm))."""
    if clip <= 0:
        return 1.0
    return clip / max(norm, clip)


def make_optimizer(params, lr, beta1, beta2, eps, wd):
    decay = [p for n, p in params.items() if decays(n, tuple(p.shape))]
    no_decay = [p for n, p in params.items() if not decays(n, tuple(p.shape))]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, betas=(beta1, beta2), eps=eps)


def random_batch(gen, B, T, V):
    tokens = torch.randint(0, V, (B, T), generator=gen, dtype=torch.int64)
    targets = torch.randint(0, V, (B, T), generator=gen, dtype=torch.int64)
    return tokens, targets


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--B", type=int, default=2)
    ap.add_argument("--T", type=int, default=8)
    ap.add_argument("--maxT", type=int, default=0, help="rows of wpe (default: T)")
    ap.add_argument("--C", type=int, default=32)
    ap.add_argument("--L", type=int, default=2)
    ap.add_argument("--NH", type=int, default=4)
    ap.add_argument("--V", type=int, default=97)
    ap.add_argument("--std", type=float, default=0.1)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--beta1", type=float, default=0.9)
    ap.add_argument("--beta2", type=float, default=0.95)
    ap.add_argument("--eps", type=float, default=1e-8)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--clip", type=float, default=1.0, help="global grad-norm clip (<=0: off)")
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64",
                    help="float32 only to estimate the fp32 error level of the C++ side")
    a = ap.parse_args(argv)
    maxT = a.maxT or a.T
    if a.C % a.NH or a.T > maxT:
        ap.error("need C % NH == 0 and T <= maxT")
    dtype = getattr(torch, a.dtype)
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed)

    params = init_params(a.L, a.C, a.V, maxT, gen, a.std, dtype)
    batches = [random_batch(gen, a.B, a.T, a.V) for _ in range(max(a.steps, 1))]

    w = reffile.Writer(a.out)
    w.add("config", [a.B, a.T, maxT, a.C, a.L, a.NH, a.V, a.steps], "i32")
    w.add("hyper", [a.lr, a.beta1, a.beta2, a.eps, a.wd, a.clip])
    for name, p in params.items():
        w.add("init." + name, p.detach())
    for s, (tok, tgt) in enumerate(batches):
        w.add(f"tokens.{s}", tok, "i32")
        w.add(f"targets.{s}", tgt, "i32")

    # One forward/backward on batch 0 from the initial weights: logits, losses, all grads.
    logits, losses, loss = forward(params, batches[0][0], a.L, a.NH, a.V, batches[0][1])
    loss.backward()
    w.add("logits", logits.detach())
    w.add("losses", losses.detach())
    w.add("loss", [loss.item()])
    for name, p in params.items():
        w.add("grad." + name, p.grad)

    # `steps` AdamW steps, batch s at step s, clipping by the global grad norm.
    opt = make_optimizer(params, a.lr, a.beta1, a.beta2, a.eps, a.wd)
    step_losses, norms = [], []
    for s in range(a.steps):
        opt.zero_grad(set_to_none=False)
        _, _, loss = forward(params, batches[s][0], a.L, a.NH, a.V, batches[s][1])
        loss.backward()
        with torch.no_grad():
            norm = math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in params.values()))
            scale = clip_scale(norm, a.clip)
            for p in params.values():
                p.grad.mul_(scale)
        opt.step()
        step_losses.append(loss.item())
        norms.append(norm)
    w.add("step_losses", step_losses)
    w.add("grad_norms", norms)
    for name, p in params.items():
        w.add("final." + name, p.detach())
    w.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
