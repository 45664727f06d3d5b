#!/usr/bin/env python3
"""Plain PyTorch Mixture-of-Experts FFN layer (CompeteSMoE) and a small MoE GPT-2: the
reference the C++ MoeLayer and the MoE GPT2 are compared against.

Written from ../shared/spec/competesmoe.md, not from the C++ code. float64 throughout; every
random input is drawn in fp32 and widened, so the fp32 C++ copy is bit-identical.

What the layer computes (x: (B, T, C) flattened to N = B·T tokens; E experts, top-K):
  g   = x · W_rᵀ                                     router logits, no bias      (N, E)
  softmax_topk : p_R = softmax(g); idx = topk(p_R, K); w = p_R[idx] / Σ p_R[idx]
  sigmoid_topk : s = sigmoid(g); idx = topk(s, K); w = s[idx] / Σ s[idx]; p_R = s / Σ_e s
  competesmoe, normal step      : as softmax_topk
  competesmoe, competition step : o_e = FFN_e(x) for every e; s_e = score(o_e);
      idx_C = topk(s, K); w_C = s[idx_C]/Σ (softplus_mean) or softmax(s[idx_C]) (l2),
      not detached; y = Σ w_C o_j. The router gets only the distillation loss
      L_R = MSE(p_R, p_C) + θ·MSE(p_R[idx_C], p_C[idx_C]), p_C = softmax(s) stop-grad
      ('topk' target: p_C = softmax(s[idx_C]) on the winners, 0 elsewhere).
  y += Σ_s shared_s(x) (weight 1).  FFN(x) = proj(gelu_tanh(fc(x))).
Aux terms (each a mean inside the layer), aux = Σ coef · term:
  balance (normal steps)  entropy: −mean_b H(mean_t p_R[b, t]);  switch: E · Σ_e f_e P_e
                          (f_e = fraction of tokens whose top-1 is e, no grad; P_e = mean p_R)
  z_loss (every step)     mean(logsumexp(g)²)
  distill (competition)   L_R above
  diversity (competition) mean over tokens of Σ_{i≠j} cos(o_i, o_j) / K² over the winners
  competition_balance     the entropy balance on p_C = softmax(s), NOT detached
Top-K ties: the lowest expert index wins (sort by (−value, index)).

Modes (see --help): `layer` writes one layer's forward/backward; `model` a small GPT-2 whose
FFN is this layer in the chosen blocks, with several AdamW steps. Both write a reffile.
`batch FILE` runs one `layer`/`model` command line per line of FILE in this process (torch
is imported once: the tests generate all the cases of a test case in one call).
"""
import shlex
import argparse
import math
import sys

try:
    import torch
    import torch.nn.functional as F
except ImportError as e:  # a declared test dependency: say so instead of a bare traceback
    print(f"moe.py: cannot import torch ({e}); install python3-torch "
          "(Debian) or `pip install torch` for /usr/bin/python3", file=sys.stderr)
    sys.exit(3)

import gpt2
import reffile

ROUTERS = ("softmax_topk", "sigmoid_topk", "competesmoe")


# ---------------------------------------------------------------------------------------
# options and parameters

class MoeOpts:
    def __init__(self, a):
        self.E, self.K, self.H, self.S = a.E, a.K, a.H, a.S
        self.router, self.score, self.balance = a.router, a.score, a.balance
        self.balance_coef, self.z_coef = a.balance_coef, a.z_coef
        self.router_coef, self.theta, self.topk_target = a.router_coef, a.theta, a.topk_target
        self.diversity_coef, self.cb_coef = a.diversity_coef, a.cb_coef


def add_moe_args(ap):
    ap.add_argument("--E", type=int, default=4, help="experts")
    ap.add_argument("--K", type=int, default=2, help="experts per token")
    ap.add_argument("--H", type=int, default=24, help="expert hidden size")
    ap.add_argument("--S", type=int, default=0, help="shared experts")
    ap.add_argument("--router", choices=ROUTERS, default="competesmoe")
    ap.add_argument("--score", choices=["softplus_mean", "l2"], default="softplus_mean")
    ap.add_argument("--balance", choices=["entropy", "switch"], default="entropy")
    # coefficients: the spec's defaults
    ap.add_argument("--balance-coef", type=float, default=0.01)
    ap.add_argument("--z-coef", type=float, default=0.0)
    ap.add_argument("--router-coef", type=float, default=0.001)
    ap.add_argument("--theta", type=float, default=0.2)
    ap.add_argument("--topk-target", action="store_true", help="2024 distillation target")
    ap.add_argument("--diversity-coef", type=float, default=0.005)
    ap.add_argument("--cb-coef", type=float, default=0.005, help="competition balance coef")


def moe_param_shapes(o, C):
    """(name, shape) under the layer prefix, as the C++ MoeLayer::add_params names them."""
    E, H, S = o.E, o.H, o.S
    shapes = [("router.weight", (E, C)),
              ("experts.fc.weight", (E, H, C)), ("experts.fc.bias", (E, H)),
              ("experts.proj.weight", (E, C, H)), ("experts.proj.bias", (E, C))]
    if S > 0:
        shapes += [("shared.fc.weight", (S, H, C)), ("shared.fc.bias", (S, H)),
                   ("shared.proj.weight", (S, C, H)), ("shared.proj.bias", (S, C))]
    return shapes


def init_moe_params(o, C, prefix, gen, std, router_std, dtype):
    params = {}
    for name, shape in moe_param_shapes(o, C):
        if name.endswith(".bias"):
            t = 0.05 * torch.randn(shape, generator=gen)
        elif name == "router.weight":
            t = router_std * torch.randn(shape, generator=gen)
        else:
            t = std * torch.randn(shape, generator=gen)
        params[prefix + name] = t.to(torch.float32).to(dtype).requires_grad_(True)
    return params


# ---------------------------------------------------------------------------------------
# the layer

def topk_lowest_index(v, K):
    """Indices (N, K) of the K largest entries of each row, largest first; among equal values
    the lowest index wins (a stable sort of −v keeps equal keys in index order)."""
    return torch.sort(-v.detach(), dim=-1, stable=True).indices[:, :K]


def ffn(x, w1, b1, w2, b2):
    """x (N, C); w1 (M, H, C), b1 (M, H), w2 (M, C, H), b2 (M, C) -> (N, M, C): every one of
    M experts on every token."""
    h = torch.einsum("nc,mhc->nmh", x, w1) + b1
    return torch.einsum("nmh,mch->nmc", F.gelu(h, approximate="tanh"), w2) + b2


def entropy_balance(p, B, T):
    """−mean_b H(P_b), P_b = mean over sequence b's T tokens of p (N, E)."""
    P = p.view(B, T, -1).mean(dim=1)  # (B, E)
    return (P * torch.log(P)).sum(-1).mean()


def row_entropy(p):
    return -(p * torch.log(p)).sum(-1)


def routing_gaps(v, K):
    """Per token: the gap between the K-th and (K+1)-th largest value and between the 1st and
    2nd (top-1 decides the Switch f_e), relative to max(1, the row's largest |value|)."""
    srt = torch.sort(v.detach(), dim=-1, descending=True).values
    scale = srt.abs().max(dim=-1).values.clamp_min(1.0)
    gaps = [(srt[:, 0] - srt[:, 1]) / scale]
    if K < v.shape[-1]:
        gaps.append((srt[:, K - 1] - srt[:, K]) / scale)
    return torch.stack(gaps, dim=-1)  # (N, 1 or 2)


def moe_forward(P, prefix, x, o, compete):
    """x (B, T, C) -> (y (B, T, C), terms {name: scalar tensor}, info {name: tensor}).
    compete is honoured only by the competesmoe router."""
    B, T, C = x.shape
    N, E, K = B * T, o.E, o.K
    xf = x.reshape(N, C)
    W = lambda n: P[prefix + n]
    g = xf @ W("router.weight").t()  # (N, E)
    if o.router == "sigmoid_topk":
        s_sig = torch.sigmoid(g)
        p_R = s_sig / s_sig.sum(-1, keepdim=True)
        route_by = s_sig
    else:
        p_R = torch.softmax(g, dim=-1)
        route_by = p_R
    zero = g.new_zeros(())
    terms = {k: zero for k in ("balance", "z_loss", "distill", "diversity", "competition_balance")}
    terms["z_loss"] = (torch.logsumexp(g, dim=-1) ** 2).mean()

    outs = ffn(xf, W("experts.fc.weight"), W("experts.fc.bias"),
               W("experts.proj.weight"), W("experts.proj.bias"))  # (N, E, C)
    idx_R = topk_lowest_index(route_by, K)  # (N, K)
    # p_R and sigmoid(g) are monotone in g: judge the router's margins on the logits
    info = {"idx_R": idx_R, "gaps_R": routing_gaps(g, K)}
    competed = compete and o.router == "competesmoe"
    if competed:
        if o.score == "softplus_mean":
            s = F.softplus(outs).mean(-1)  # (N, E), positive
        else:
            s = outs.norm(dim=-1)
        idx = topk_lowest_index(s, K)
        sel = s.gather(1, idx)  # (N, K)
        w = sel / sel.sum(-1, keepdim=True) if o.score == "softplus_mean" else torch.softmax(sel, -1)
        if o.topk_target:
            p_C = torch.zeros_like(s).scatter(1, idx, torch.softmax(sel, -1)).detach()
        else:
            p_C = torch.softmax(s, dim=-1).detach()
        terms["distill"] = (F.mse_loss(p_R, p_C)
                            + o.theta * F.mse_loss(p_R.gather(1, idx), p_C.gather(1, idx)))
        win = outs.gather(1, idx.unsqueeze(-1).expand(N, K, C))  # (N, K, C)
        u = win / win.norm(dim=-1, keepdim=True)
        cos = u @ u.transpose(1, 2)  # (N, K, K)
        cos = cos * (1.0 - torch.eye(K, dtype=cos.dtype))
        terms["diversity"] = (cos.sum((1, 2)) / (K * K)).mean()
        terms["competition_balance"] = entropy_balance(torch.softmax(s, dim=-1), B, T)
        overlap = torch.tensor([len(set(a.tolist()) & set(b.tolist())) for a, b in zip(idx, idx_R)],
                               dtype=torch.float64).mean() / K
        info.update(idx_C=idx, gaps_C=routing_gaps(s, K), overlap=overlap, scores=s.detach())
    else:
        idx = idx_R
        sel = route_by.gather(1, idx)
        w = sel / sel.sum(-1, keepdim=True)
        if o.balance == "entropy":
            terms["balance"] = entropy_balance(p_R, B, T)
        else:
            top1 = idx[:, 0]
            f = torch.bincount(top1, minlength=E).to(p_R.dtype) / N  # no grad
            terms["balance"] = E * (f * p_R.mean(0)).sum()
        win = outs.gather(1, idx.unsqueeze(-1).expand(N, K, C))
    y = (w.unsqueeze(-1) * win).sum(1)  # (N, C)
    if o.S > 0:
        y = y + ffn(xf, W("shared.fc.weight"), W("shared.fc.bias"),
                    W("shared.proj.weight"), W("shared.proj.bias")).sum(1)
    terms["aux_loss"] = (o.balance_coef * terms["balance"] + o.z_coef * terms["z_loss"]
                         + o.router_coef * terms["distill"] + o.diversity_coef * terms["diversity"]
                         + o.cb_coef * terms["competition_balance"])
    info["idx"] = idx
    info["competed"] = competed
    info["counts"] = torch.bincount(idx.reshape(-1), minlength=E)
    info["router_entropy"] = row_entropy(p_R).mean().detach()
    return y.view(B, T, C), terms, info


TERMS = ("balance", "z_loss", "distill", "diversity", "competition_balance", "aux_loss")


def min_gap(info):
    g = info["gaps_R"].min()
    if "gaps_C" in info:
        g = torch.minimum(g, info["gaps_C"].min())
    return float(g)


# ---------------------------------------------------------------------------------------
# layer mode

def layer_main(a):
    o = MoeOpts(a)
    dtype = getattr(torch, a.dtype)
    B, T, C = a.B, a.T, a.C
    prefix = "moe."
    for attempt in range(200):
        gen = torch.Generator().manual_seed(a.seed + 7919 * attempt)
        P = init_moe_params(o, C, prefix, gen, a.std, a.router_std, dtype)
        if a.ties:
            # Exact ties: the last router row duplicates row 1, and x and the router hold dyadic
            # values, so every logit is exact in any summation order (fp32 and fp64 alike).
            # Whenever expert 1 ties for the K-th place, expert 1 must win over expert E-1.
            with torch.no_grad():
                r = torch.round(8 * torch.randn((o.E, C), generator=gen)) / 32
                r[o.E - 1] = r[1]
                P[prefix + "router.weight"].copy_(r)
            x = torch.round(4 * torch.randn((B, T, C), generator=gen)) / 4
        else:
            x = torch.randn((B, T, C), generator=gen)
        x = x.to(torch.float32).to(dtype).requires_grad_(True)
        dout = (a.dout_scale * torch.randn((B, T, C), generator=gen)).to(torch.float32).to(dtype)
        y, terms, info = moe_forward(P, prefix, x, o, a.compete)
        if a.ties:
            gaps = info["gaps_R"]
            ties_at_k = int((gaps[:, -1] == 0).sum()) if o.K < o.E else 0
            ok = ties_at_k > 0 and bool(((gaps == 0) | (gaps >= a.min_gap)).all())
            if ok:
                break
        elif min_gap(info) >= a.min_gap:
            break
    else:
        print(f"moe.py: no input with routing margins >= {a.min_gap} in 200 draws", file=sys.stderr)
        return 2

    L = (dout * y).sum() + a.aux_scale * terms["aux_loss"]
    L.backward()

    w = reffile.Writer(a.out)
    w.add("config", [B, T, C, o.E, o.K, o.H, o.S, int(a.compete), int(a.ties)], "i32")
    w.add("attempt", [attempt], "i32")
    w.add("min_gap", [min_gap(info) if not a.ties else 0.0])
    w.add("x", x.detach())
    w.add("dout", dout)
    w.add("aux_scale", [a.aux_scale])
    for name, p in P.items():
        w.add("param." + name, p.detach())
    w.add("y", y.detach())
    for t in TERMS:
        w.add("term." + t, [float(terms[t])])
    w.add("competed", [int(info["competed"])], "i32")
    w.add("idx", info["idx"], "i32")
    w.add("idx_R", info["idx_R"], "i32")
    w.add("counts", info["counts"], "i32")
    w.add("router_entropy", [float(info["router_entropy"])])
    w.add("overlap", [float(info["overlap"]) if "overlap" in info else -1.0])
    if a.ties:
        w.add("ties_at_k", [int((info["gaps_R"][:, -1] == 0).sum())], "i32")
    w.add("grad.x", x.grad)
    for name, p in P.items():
        w.add("grad." + name, p.grad)
    w.close()
    if a.verbose:
        print(f"attempt {attempt} min_gap {min_gap(info):.3g} counts {info['counts'].tolist()} "
              + " ".join(f"{t}={float(terms[t]):.6g}" for t in TERMS))
    return 0


# ---------------------------------------------------------------------------------------
# model mode: GPT-2 with MoE FFNs in the chosen blocks

def model_decays(name, shape):
    """Weight decay: every matrix of the blocks (2-D linear weights and the 3-D expert stacks,
    router.weight included); never embeddings, biases or LayerNorm parameters."""
    return name.startswith("blocks.") and name.endswith(".weight") and len(shape) >= 2


def init_model_params(a, o, moe_layers, maxT, gen, dtype):
    params = gpt2.init_params(a.L, a.C, a.V, maxT, gen, a.std, dtype)
    for l in moe_layers:
        for k in [k for k in params if k.startswith(f"blocks.{l}.mlp.")]:
            del params[k]
        params.update(init_moe_params(o, a.C, f"blocks.{l}.moe.", gen, a.expert_std, a.router_std,
                                      dtype))
    return params


def model_forward(params, tokens, targets, a, o, moe_layers, compete_layers):
    """(logits, LM loss, total loss, per-MoE-layer (terms, info) in layer order)."""
    B, T = tokens.shape
    layer_out = []

    def mlp(l, h):
        if l not in moe_layers:
            return None
        y, terms, info = moe_forward(params, f"blocks.{l}.moe.", h, o, l in compete_layers)
        layer_out.append((terms, info))
        return y

    logits, _, lm = gpt2.forward(params, tokens, a.L, a.NH, a.V, targets, mlp=mlp)
    total = lm + sum(t["aux_loss"] for t, _ in layer_out)
    return logits, lm, total, layer_out


def parse_layers(spec, L):
    if spec == "all":
        return list(range(L))
    return sorted({int(t) for t in spec.split(",") if t != ""})


def parse_compete(spec, steps, L):
    """'01,00,10': per step a string of L chars, char l = '1' when layer l competes.
    Steps past the list do not compete."""
    rows = [r for r in spec.split(",") if r != ""] if spec else []
    out = []
    for s in range(steps):
        r = rows[s] if s < len(rows) else "0" * L
        if len(r) != L or set(r) - {"0", "1"}:
            raise SystemExit(f"moe.py: --compete entry '{r}' must be {L} chars of 0/1")
        out.append([l for l in range(L) if r[l] == "1"])
    return out


def model_main(a):
    o = MoeOpts(a)
    maxT = a.maxT or a.T
    moe_layers = parse_layers(a.moe_layers, a.L)
    compete = parse_compete(a.compete, max(a.steps, 1), a.L)
    for s, ls in enumerate(compete):
        if set(ls) - set(moe_layers):
            raise SystemExit(f"moe.py: step {s}: a non-MoE layer cannot compete")
    dtype = getattr(torch, a.dtype)
    torch.manual_seed(a.seed)

    for attempt in range(50):
        gen = torch.Generator().manual_seed(a.seed + 7919 * attempt)
        params = init_model_params(a, o, moe_layers, maxT, gen, dtype)
        init = {k: v.detach().clone() for k, v in params.items()}
        batches = [gpt2.random_batch(gen, a.B, a.T, a.V) for _ in range(max(a.steps, 1))]
        res = run_model(a, o, params, batches, moe_layers, compete)
        if a.verbose:
            print(f"attempt {attempt}: min routing gap {res['min_gap']:.3g}")
        if res["min_gap"] >= a.min_gap:
            break
    else:
        print(f"moe.py: no draw with routing margins >= {a.min_gap} in 50 attempts", file=sys.stderr)
        return 2

    w = reffile.Writer(a.out)
    w.add("config", [a.B, a.T, maxT, a.C, a.L, a.NH, a.V, a.steps], "i32")
    w.add("moe_config", [o.E, o.K, o.H, o.S], "i32")
    w.add("moe_layers", moe_layers, "i32")
    w.add("hyper", [a.lr, a.beta1, a.beta2, a.eps, a.wd, a.clip])
    w.add("attempt", [attempt], "i32")
    w.add("min_gap", [res["min_gap"]])
    for name, p in init.items():
        w.add("init." + name, p)
    for s, (tok, tgt) in enumerate(batches):
        w.add(f"tokens.{s}", tok, "i32")
        w.add(f"targets.{s}", tgt, "i32")
        w.add(f"compete.{s}", [int(l in compete[s]) for l in range(a.L)], "i32")
    for k, v in res["records"].items():
        kind = "i32" if k.startswith("counts.") or k.startswith("competed.") else "f64"
        w.add(k, v, kind)
    w.close()
    if a.verbose:
        print(f"attempt {attempt} min_gap {res['min_gap']:.3g} losses {res['records']['step_losses']}")
    return 0


def run_model(a, o, params, batches, moe_layers, compete):
    """One forward/backward on batch 0 (compete flags of step 0), then `steps` AdamW steps."""
    rec = {}
    gaps = []
    tok, tgt = batches[0]
    logits, lm, loss, lo = model_forward(params, tok, tgt, a, o, moe_layers, compete[0])
    loss.backward()
    rec["logits"] = logits.detach()
    rec["lm_loss"] = [lm.item()]
    rec["loss"] = [loss.item()]
    for name, p in params.items():
        rec["grad." + name] = p.grad.clone()
    opt_groups = [
        {"params": [p for n, p in params.items() if model_decays(n, tuple(p.shape))], "weight_decay": a.wd},
        {"params": [p for n, p in params.items() if not model_decays(n, tuple(p.shape))], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(opt_groups, lr=a.lr, betas=(a.beta1, a.beta2), eps=a.eps)
    step_losses, lm_losses, norms = [], [], []
    for s in range(a.steps):
        opt.zero_grad(set_to_none=False)
        tok, tgt = batches[s]
        _, lm, loss, lo = model_forward(params, tok, tgt, a, o, moe_layers, compete[s])
        loss.backward()
        for i, (terms, info) in enumerate(lo):
            l = moe_layers[i]
            gaps.append(min_gap(info))
            rec[f"terms.{s}.{l}"] = [float(terms[t]) for t in TERMS]
            rec[f"counts.{s}.{l}"] = info["counts"]
            rec[f"competed.{s}.{l}"] = [int(info["competed"])]
            rec[f"router_entropy.{s}.{l}"] = [float(info["router_entropy"])]
            rec[f"overlap.{s}.{l}"] = [float(info["overlap"]) if "overlap" in info else -1.0]
        with torch.no_grad():
            norm = math.sqrt(sum(float((p.grad ** 2).sum()) for p in params.values()))
            scale = gpt2.clip_scale(norm, a.clip)
            for p in params.values():
                p.grad.mul_(scale)
        opt.step()
        step_losses.append(loss.item())
        lm_losses.append(lm.item())
        norms.append(norm)
    rec["step_losses"] = step_losses
    rec["step_lm_losses"] = lm_losses
    rec["grad_norms"] = norms
    for name, p in params.items():
        rec["final." + name] = p.detach().clone()
    return {"records": rec, "min_gap": min(gaps) if gaps else 1.0}


# ---------------------------------------------------------------------------------------

def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["batch"]:
        if len(argv) != 2:
            print("usage: moe.py batch FILE (one layer/model command line per line)", file=sys.stderr)
            return 2
        with open(argv[1]) as f:
            for line in f:
                if line.strip():
                    rc = main(shlex.split(line))
                    if rc:
                        print(f"moe.py: batch line failed ({rc}): {line.strip()}", file=sys.stderr)
                        return rc
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)

    la = sub.add_parser("layer", help="one MoE layer forward/backward")
    la.add_argument("--out", required=True)
    la.add_argument("--seed", type=int, default=1234)
    la.add_argument("--B", type=int, default=2)
    la.add_argument("--T", type=int, default=8)
    la.add_argument("--C", type=int, default=16)
    add_moe_args(la)
    la.add_argument("--compete", action="store_true", help="a competition step")
    la.add_argument("--aux-scale", type=float, default=1.0, help="L = Σ dout·y + aux_scale·aux")
    la.add_argument("--dout-scale", type=float, default=1.0, help="0: only the aux loss")
    la.add_argument("--ties", action="store_true",
                    help="router row E-1 = row 1 and dyadic inputs: exact top-K ties")
    la.add_argument("--std", type=float, default=0.3)
    la.add_argument("--router-std", type=float, default=0.5)
    la.add_argument("--min-gap", type=float, default=1e-3,
                    help="redraw until every routing decision has this relative margin")
    la.add_argument("--verbose", action="store_true")

    ma = sub.add_parser("model", help="MoE GPT-2 forward/backward and AdamW steps")
    ma.add_argument("--out", required=True)
    ma.add_argument("--seed", type=int, default=1234)
    ma.add_argument("--B", type=int, default=2)
    ma.add_argument("--T", type=int, default=8)
    ma.add_argument("--maxT", type=int, default=0)
    ma.add_argument("--C", type=int, default=32)
    ma.add_argument("--L", type=int, default=2)
    ma.add_argument("--NH", type=int, default=4)
    ma.add_argument("--V", type=int, default=97)
    add_moe_args(ma)
    ma.add_argument("--moe-layers", default="all", help="'all' or '1,3'")
    ma.add_argument("--compete", default="", help="per step, L chars of 0/1: '10,00,01'")
    ma.add_argument("--std", type=float, default=0.1)
    ma.add_argument("--expert-std", type=float, default=0.3,
                    help="larger than --std so that competition scores are well separated")
    ma.add_argument("--router-std", type=float, default=0.5)
    ma.add_argument("--steps", type=int, default=6)
    ma.add_argument("--lr", type=float, default=1e-2)
    ma.add_argument("--beta1", type=float, default=0.9)
    ma.add_argument("--beta2", type=float, default=0.95)
    ma.add_argument("--eps", type=float, default=1e-6)
    ma.add_argument("--wd", type=float, default=0.1)
    ma.add_argument("--clip", type=float, default=0.0)
    ma.add_argument("--min-gap", type=float, default=2e-4)
    ma.add_argument("--verbose", action="store_true")
    for p in (la, ma):
        p.add_argument("--dtype", choices=["float64", "float32"], default="float64",
                       help="float32 only to estimate the fp32 error level of the C++ side")

    a = ap.parse_args(argv)
    if a.K < 1 or a.K > a.E or (a.mode == "layer" and a.ties and (a.E < 3 or a.K >= a.E)):
        ap.error("need 1 <= K <= E (ties: E >= 3, K < E)")
    return layer_main(a) if a.mode == "layer" else model_main(a)


if __name__ == "__main__":
    sys.exit(main())
