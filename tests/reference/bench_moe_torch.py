#!/usr/bin/env python3
"""PyTorch training-step benchmark of the model a competelm config describes (dense GPT-2 or
GPT-2 with MoE FFNs), eager or torch.compile'd, fp32 or bf16 autocast, on CPU or CUDA.

The model is the one tests/reference/gpt2.py and moe.py define (same parameters, vocab padded
to 128s with the LM head tied to wte, loss over the first V logits, GELU-tanh FFNs), written
for speed instead of for float64 comparison:
  - attention: F.scaled_dot_product_attention (causal) where this torch has it, so the
    baseline gets flash / memory-efficient attention; else gpt2.attention;
  - MoE FFN (fast_moe): softmax -> top-K -> renormalised gates -> the (token, slot) pairs
    sorted by expert -> one (n_e, C)·(C, H) and (n_e, H)·(H, C) matmul per expert over only
    its tokens -> gates × outputs index_add'ed back. moe.py instead runs every expert on
    every token (exact, but E/K times the FLOPs). Aux losses as in the spec
    (../shared/spec/competesmoe.md §4): entropy balance per sequence (or switch), z-loss.
    competesmoe is timed as its normal (non-competition) step, which is softmax_topk math:
    that is also what `competelm-bench` times without --moe-overhead.
One step = zero_grad + forward + loss + backward + clip_grad_norm_(1.0) + AdamW (fused on
CUDA when available), timed with torch.cuda.synchronize. Last line:
  RESULT tokens_per_s=<x> ms_per_step=<y> mode=<eager|compiled> device=<d> dtype=<t>
`--self-check` compares fast_moe and the whole model against moe.py / gpt2.py (float64).
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

try:
    import torch
    import torch.nn.functional as F
except ImportError as e:
    print(f"bench_moe_torch.py: cannot import torch ({e}); install python3-torch", file=sys.stderr)
    sys.exit(3)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpt2  # noqa: E402
import moe  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The defaults of the keys used here (src/config/config.hpp), for when competelm-config is
# not built and the YAML file leaves a key out.
DEFAULTS = {
    "model": {"n_layer": 12, "d_model": 768, "n_head": 12, "seq_len": 1024, "vocab_size": 50257,
              "init_std": 0.02},
    "moe": {"n_experts": 0, "top_k": 2, "router": "competesmoe", "layers": "all", "expert_hidden": 0,
            "shared_experts": 0, "balance": "entropy", "balance_coef": 0.01, "z_loss_coef": 0.0},
    "train": {"micro_batch": 4},
    "optim": {"lr": 6e-4, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1,
              "grad_clip": 1.0},
    "run": {"seed": 1337},
}


# ---------------------------------------------------------------------------------------
# config: competelm-config's resolved YAML, else the file itself over DEFAULTS

def parse_scalar(v):
    v = v.strip()
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'":
        return v[1:-1]
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v, v)


def strip_comment(line):
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


def read_sections(text):
    """The two-level `section:\\n  key: value` YAML competelm configs use -> {section: {key: value}}."""
    out, section = {}, None
    for raw in text.splitlines():
        line = strip_comment(raw).rstrip()
        if not line.strip() or line.strip() == "---":
            continue
        key, sep, val = line.strip().partition(":")
        if not sep:
            continue
        if not line.startswith((" ", "\t")):
            section = key.strip()
            out.setdefault(section, {})
        elif section is not None:
            out[section][key.strip()] = parse_scalar(val)
    return out


def load_config(path, sets, tool):
    """(config dict, where it came from). --set key=value overrides apply in both cases."""
    if tool and os.access(tool, os.X_OK):
        cmd = [tool, path] + [a for s in sets for a in ("--set", s)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"bench_moe_torch.py: {' '.join(cmd)} failed:\n{r.stderr.strip()}")
        return read_sections(r.stdout), tool
    with open(path) as f:
        cfg = read_sections(f.read())
    merged = {s: dict(d) for s, d in DEFAULTS.items()}
    for s, d in cfg.items():
        merged.setdefault(s, {}).update(d)
    for s in sets:
        key, sep, val = s.partition("=")
        if not sep or "." not in key:
            sys.exit(f"bench_moe_torch.py: --set '{s}' must be section.key=value")
        sec, k = key.split(".", 1)
        merged.setdefault(sec, {})[k] = parse_scalar(val)
    return merged, f"{path} (+ built-in defaults; competelm-config not found)"


def moe_layer_list(spec, L):
    """moe.layers (src/config/moe_layers.hpp): all | none | every:N[:OFFSET] | '0,2,5'."""
    spec = str(spec).strip()
    if spec == "all":
        return list(range(L))
    if spec == "none":
        return []
    if spec.startswith("every:"):
        parts = [int(p) for p in spec.split(":")[1:]]
        n, off = parts[0], (parts[1] if len(parts) > 1 else 0)
        return list(range(off, L, n))
    return sorted(int(t) for t in spec.split(",") if t.strip())


class Shape:
    def __init__(self, cfg):
        m, e = cfg["model"], cfg.get("moe", {})
        self.L, self.C, self.NH = int(m["n_layer"]), int(m["d_model"]), int(m["n_head"])
        self.T, self.V, self.std = int(m["seq_len"]), int(m["vocab_size"]), float(m.get("init_std", 0.02))
        self.E, self.K = int(e.get("n_experts", 0)), int(e.get("top_k", 2))
        h = int(e.get("expert_hidden", 0))
        # resolve_expert_hidden (src/moe/moe_config.cpp): ceil(4C/K) rounded up to 8s
        self.H = h if h > 0 else ((4 * self.C + self.K - 1) // self.K + 7) // 8 * 8
        self.S = int(e.get("shared_experts", 0))
        self.router = str(e.get("router", "competesmoe"))
        self.balance = str(e.get("balance", "entropy"))
        self.balance_coef = float(e.get("balance_coef", 0.01))
        self.z_coef = float(e.get("z_loss_coef", 0.0))
        self.moe_layers = moe_layer_list(e.get("layers", "all"), self.L) if self.E > 0 else []

    def describe(self):
        s = f"L={self.L} C={self.C} NH={self.NH} T={self.T} V={self.V} (Vp={gpt2.padded_vocab(self.V)})"
        if self.E > 0:
            s += (f" MoE E={self.E} K={self.K} H={self.H} S={self.S} router={self.router} "
                  f"balance={self.balance} layers={self.moe_layers}")
        return s


# ---------------------------------------------------------------------------------------
# the fast MoE layer

def _disable_compile(fn):
    """The per-expert loop has data-dependent shapes (tokens per expert): keep it out of
    torch.compile's graphs (a graph break) instead of recompiling for every routing."""
    for mod in ("compiler", "_dynamo"):
        dis = getattr(getattr(torch, mod, None), "disable", None)
        if dis is not None:
            return dis(fn)
    return fn


@_disable_compile
def routed_experts(xf, idx, w, w1, b1, w2, b2):
    """xf (N, C), idx / w (N, K) -> Σ_k w[n, k] · FFN_idx[n, k](x_n)  (N, C), each expert run on
    only the tokens routed to it."""
    N, K = idx.shape
    E = w1.shape[0]
    flat = idx.reshape(-1)  # (N·K) expert of each (token, slot)
    order = torch.argsort(flat)  # (token, slot) pairs grouped by expert
    token = order // K  # (N·K) the token of each sorted pair
    counts = torch.bincount(flat, minlength=E).tolist()  # one host sync per layer
    xs = xf.index_select(0, token)  # (N·K, C)
    outs = []
    for e, part in enumerate(torch.split(xs, counts)):
        if part.shape[0] == 0:
            continue
        h = F.gelu(F.linear(part, w1[e], b1[e]), approximate="tanh")  # (n_e, H)
        outs.append(F.linear(h, w2[e], b2[e]))  # (n_e, C)
    o = torch.cat(outs, 0)  # (N·K, C)
    gate = w.reshape(-1).index_select(0, order).unsqueeze(-1)  # (N·K, 1)
    o = o * gate.to(o.dtype)
    return torch.zeros((N, xf.shape[1]), dtype=o.dtype, device=xf.device).index_add_(0, token, o)


def shared_experts(xf, w1, b1, w2, b2):
    y = 0
    for s in range(w1.shape[0]):
        y = y + F.linear(F.gelu(F.linear(xf, w1[s], b1[s]), approximate="tanh"), w2[s], b2[s])
    return y


def at_least_fp32(t):
    """Router logits and the loss in fp32 under bf16 autocast (float64 stays float64)."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


def fast_moe(P, prefix, x, sh):
    """x (B, T, C) -> (y (B, T, C), aux loss): moe.moe_forward's non-competition step."""
    B, T, C = x.shape
    N = B * T
    xf = x.reshape(N, C)
    g = at_least_fp32(F.linear(xf, P[prefix + "router.weight"]))  # (N, E) router logits
    if sh.router == "sigmoid_topk":
        route_by = torch.sigmoid(g)
        p_R = route_by / route_by.sum(-1, keepdim=True)
    else:  # softmax_topk, and competesmoe's normal step
        p_R = torch.softmax(g, dim=-1)
        route_by = p_R
    sel, idx = torch.topk(route_by, sh.K, dim=-1)  # (N, K)
    w = sel / sel.sum(-1, keepdim=True)
    y = routed_experts(xf, idx, w, P[prefix + "experts.fc.weight"], P[prefix + "experts.fc.bias"],
                       P[prefix + "experts.proj.weight"], P[prefix + "experts.proj.bias"])
    if sh.S > 0:
        y = y + shared_experts(xf, P[prefix + "shared.fc.weight"], P[prefix + "shared.fc.bias"],
                               P[prefix + "shared.proj.weight"], P[prefix + "shared.proj.bias"])
    aux = g.new_zeros(())
    if sh.balance_coef != 0:
        if sh.balance == "entropy":  # −mean_b H(mean over sequence b's tokens of p_R)
            Pb = p_R.view(B, T, -1).mean(dim=1)  # (B, E)
            bal = (Pb * torch.log(Pb)).sum(-1).mean()
        else:  # switch: E · Σ_e f_e P_e, f_e = top-1 share (no grad)
            f = F.one_hot(idx[:, 0], sh.E).to(p_R.dtype).mean(0)
            bal = sh.E * (f * p_R.mean(0)).sum()
        aux = aux + sh.balance_coef * bal
    if sh.z_coef != 0:
        aux = aux + sh.z_coef * (torch.logsumexp(g, dim=-1) ** 2).mean()
    return y.view(B, T, C), aux


# ---------------------------------------------------------------------------------------
# the model

HAVE_SDPA = hasattr(F, "scaled_dot_product_attention")


def attention(qkv, NH):
    if not HAVE_SDPA:
        return gpt2.attention(qkv, NH)
    B, T, C3 = qkv.shape
    C = C3 // 3
    q, k, v = (t.view(B, T, NH, C // NH).transpose(1, 2) for t in qkv.split(C, dim=2))
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, NH, T, hs)
    return y.transpose(1, 2).contiguous().view(B, T, C)


class Model(torch.nn.Module):
    """The params dict (gpt2.py / moe.py names) as registered parameters ('.' -> '__')."""

    def __init__(self, params, sh):
        super().__init__()
        self.sh = sh
        self.names = list(params)
        for n, p in params.items():
            self.register_parameter(n.replace(".", "__"), torch.nn.Parameter(p.detach().clone()))

    def pdict(self):
        return {n: getattr(self, n.replace(".", "__")) for n in self.names}

    def forward(self, tokens, targets):
        sh, P = self.sh, self.pdict()
        B, T = tokens.shape
        C = sh.C
        x = P["wte"][tokens] + P["wpe"][:T]  # (B, T, C)
        aux = x.new_zeros((), dtype=torch.float32)
        for l in range(sh.L):
            p = f"blocks.{l}."
            h = F.layer_norm(x, (C,), P[p + "ln1.weight"], P[p + "ln1.bias"], gpt2.LN_EPS)
            qkv = F.linear(h, P[p + "attn.qkv.weight"], P[p + "attn.qkv.bias"])  # (B, T, 3C)
            x = x + F.linear(attention(qkv, sh.NH), P[p + "attn.proj.weight"], P[p + "attn.proj.bias"])
            h = F.layer_norm(x, (C,), P[p + "ln2.weight"], P[p + "ln2.bias"], gpt2.LN_EPS)
            if l in sh.moe_layers:
                y, a = fast_moe(P, p + "moe.", h, sh)
                x = x + y
                aux = aux + a
            else:
                h = F.gelu(F.linear(h, P[p + "mlp.fc.weight"], P[p + "mlp.fc.bias"]), approximate="tanh")
                x = x + F.linear(h, P[p + "mlp.proj.weight"], P[p + "mlp.proj.bias"])
        x = F.layer_norm(x, (C,), P["lnf.weight"], P["lnf.bias"], gpt2.LN_EPS)
        logits = F.linear(x, P["wte"])  # (B, T, Vp), tied LM head
        lm = F.cross_entropy(at_least_fp32(logits[..., :sh.V]).reshape(-1, sh.V), targets.reshape(-1))
        return lm + aux, lm


def init_params(sh, gen, dtype=torch.float32):
    params = gpt2.init_params(sh.L, sh.C, sh.V, sh.T, gen, sh.std, dtype)
    o = argparse.Namespace(E=sh.E, K=sh.K, H=sh.H, S=sh.S)
    for l in sh.moe_layers:
        for k in [k for k in params if k.startswith(f"blocks.{l}.mlp.")]:
            del params[k]
        params.update(moe.init_moe_params(o, sh.C, f"blocks.{l}.moe.", gen, sh.std, sh.std, dtype))
    return params


# ---------------------------------------------------------------------------------------
# self-check: fast_moe and Model against moe.py / gpt2.py in float64

def self_check():
    torch.manual_seed(0)
    worst = 0.0

    def close(what, a, b, tol=1e-5):
        nonlocal worst
        d = float((a - b).abs().max()) if a.numel() else 0.0
        worst = max(worst, d)
        if not d <= tol:
            raise SystemExit(f"SELF-CHECK FAILED: {what}: max abs diff {d:.3g} > {tol}")

    cases = [dict(router="softmax_topk", balance="entropy", S=0, E=4, K=2),
             dict(router="softmax_topk", balance="entropy", S=1, E=8, K=2),
             dict(router="softmax_topk", balance="switch", S=0, E=4, K=1),
             dict(router="competesmoe", balance="entropy", S=0, E=6, K=3),
             dict(router="sigmoid_topk", balance="entropy", S=0, E=4, K=2)]
    for ci, c in enumerate(cases):
        gen = torch.Generator().manual_seed(100 + ci)
        B, T, C, H = 3, 8, 16, 24
        a = argparse.Namespace(E=c["E"], K=c["K"], H=H, S=c["S"], router=c["router"], score="softplus_mean",
                               balance=c["balance"], balance_coef=0.01, z_coef=0.001, router_coef=0.001,
                               theta=0.2, topk_target=False, diversity_coef=0.005, cb_coef=0.005)
        o = moe.MoeOpts(a)
        P_ref = moe.init_moe_params(o, C, "m.", gen, 0.3, 0.5, torch.float64)
        P_fast = {k: v.detach().clone().requires_grad_(True) for k, v in P_ref.items()}
        x0 = torch.randn((B, T, C), generator=gen, dtype=torch.float64)
        dout = torch.randn((B, T, C), generator=gen, dtype=torch.float64)
        x_ref, x_fast = x0.clone().requires_grad_(True), x0.clone().requires_grad_(True)
        y_ref, terms, _ = moe.moe_forward(P_ref, "m.", x_ref, o, False)
        ((dout * y_ref).sum() + terms["aux_loss"]).backward()
        sh = argparse.Namespace(E=c["E"], K=c["K"], S=c["S"], router=c["router"], balance=c["balance"],
                                balance_coef=0.01, z_coef=0.001)
        y_fast, aux = fast_moe(P_fast, "m.", x_fast, sh)
        ((dout * y_fast).sum() + aux).backward()
        tag = f"case {ci} {c}"
        close(f"{tag}: y", y_fast, y_ref)
        close(f"{tag}: aux", aux, terms["aux_loss"])
        close(f"{tag}: grad x", x_fast.grad, x_ref.grad)
        for k in P_ref:
            close(f"{tag}: grad {k}", P_fast[k].grad, P_ref[k].grad)
        print(f"self-check layer {tag}: ok")

    # The whole model (MoE in block 1 only, a dense block 0) against gpt2.forward + moe.moe_forward.
    cfg = {"model": {"n_layer": 2, "d_model": 32, "n_head": 4, "seq_len": 8, "vocab_size": 97, "init_std": 0.1},
           "moe": {"n_experts": 4, "top_k": 2, "router": "softmax_topk", "layers": "1", "expert_hidden": 24,
                   "balance_coef": 0.01}}
    sh = Shape(cfg)
    gen = torch.Generator().manual_seed(7)
    params = init_params(sh, gen, torch.float64)
    tokens, targets = gpt2.random_batch(gen, 2, sh.T, sh.V)
    model = Model(params, sh)
    loss, _ = model(tokens, targets)
    loss.backward()
    o = moe.MoeOpts(argparse.Namespace(E=4, K=2, H=24, S=0, router="softmax_topk", score="softplus_mean",
                                       balance="entropy", balance_coef=0.01, z_coef=0.0, router_coef=0.0,
                                       theta=0.0, topk_target=False, diversity_coef=0.0, cb_coef=0.0))
    auxes = []

    def mlp(l, h):
        if l not in sh.moe_layers:
            return None
        y, terms, _ = moe.moe_forward(params, f"blocks.{l}.moe.", h, o, False)
        auxes.append(terms["aux_loss"])
        return y

    _, _, lm = gpt2.forward(params, tokens, sh.L, sh.NH, sh.V, targets, mlp=mlp)
    ref = lm + sum(auxes)
    ref.backward()
    close("model: loss", loss.detach(), ref.detach())
    for n, p in model.pdict().items():
        close(f"model: grad {n}", p.grad, params[n].grad)
    print(f"self-check model (dense block 0, MoE block 1): ok")
    print(f"SELF-CHECK OK: fast_moe and the model match moe.py / gpt2.py, max abs diff {worst:.3g} (≤ 1e-5)")
    return 0


# ---------------------------------------------------------------------------------------
# the benchmark

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=os.path.join(REPO, "configs/gpt2-124m-moe.yaml"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key, as competelm's tools do (e.g. moe.router=softmax_topk)")
    ap.add_argument("--config-tool", default=os.environ.get("COMPETELM_CONFIG",
                                                            os.path.join(REPO, "build/bin/competelm-config")),
                    help="competelm-config, to resolve the config's defaults (else built-in defaults)")
    ap.add_argument("--B", type=int, default=0, help="sequences per step (default train.micro_batch)")
    ap.add_argument("--T", type=int, default=0, help="sequence length (default model.seq_len)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16 = torch.autocast")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--steps", type=int, default=10, help="timed steps (median reported)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps (compilation happens here)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 matmuls in fp32 (off: like competelm)")
    ap.add_argument("--self-check", action="store_true", help="check fast_moe and the model against moe.py")
    a = ap.parse_args()
    if a.self_check:
        return self_check()

    mode = "compiled" if a.compile else "eager"
    if a.device == "cuda" and not torch.cuda.is_available():
        print("bench_moe_torch.py: --device cuda but torch.cuda.is_available() is False "
              f"(torch {torch.__version__})", file=sys.stderr)
        return 2
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    if a.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = a.tf32
        torch.backends.cudnn.allow_tf32 = a.tf32
    cfg, source = load_config(a.config, a.set, a.config_tool)
    if a.T:
        cfg["model"]["seq_len"] = a.T
    sh = Shape(cfg)
    B = a.B or int(cfg.get("train", {}).get("micro_batch", 4))
    if sh.C % sh.NH:
        sys.exit("bench_moe_torch.py: d_model must be a multiple of n_head")
    dev = torch.device(a.device)
    optim = {**DEFAULTS["optim"], **cfg.get("optim", {})}
    seed = int(cfg.get("run", {}).get("seed", 1337))
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = Model(init_params(sh, gen), sh).to(dev)
    tokens, targets = (t.to(dev) for t in gpt2.random_batch(gen, B, sh.T, sh.V))
    n_params = sum(p.numel() for p in model.parameters())
    named = model.pdict()
    groups = [{"params": [p for n, p in named.items() if moe.model_decays(n, tuple(p.shape))],
               "weight_decay": float(optim["weight_decay"])},
              {"params": [p for n, p in named.items() if not moe.model_decays(n, tuple(p.shape))],
               "weight_decay": 0.0}]
    kw = dict(lr=float(optim["lr"]), betas=(float(optim["beta1"]), float(optim["beta2"])), eps=float(optim["eps"]))
    fused = False
    if a.device == "cuda":
        try:
            opt = torch.optim.AdamW(groups, fused=True, **kw)
            fused = True
        except (TypeError, RuntimeError):
            opt = torch.optim.AdamW(groups, **kw)
    else:
        opt = torch.optim.AdamW(groups, **kw)
    clip = float(optim.get("grad_clip", 1.0))

    fwd = model
    if a.compile:
        if not hasattr(torch, "compile"):
            print(f"SKIP torch.compile: not in torch {torch.__version__} (needs torch ≥ 2.0); no compiled result")
            return 0
        fwd = torch.compile(model)
    amp = torch.autocast(device_type=a.device, dtype=torch.bfloat16, enabled=a.dtype == "bf16")

    def sync():
        if a.device == "cuda":
            torch.cuda.synchronize()

    def step():
        opt.zero_grad(set_to_none=True)
        with amp:
            loss, _ = fwd(tokens, targets)
        loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        return loss

    print(f"torch {torch.__version__} on {a.device}"
          f"{' (' + torch.cuda.get_device_name() + ')' if a.device == 'cuda' else ''}: {sh.describe()}, B={B}, "
          f"params {n_params / 1e6:.2f}M, {mode}, {a.dtype}, attention "
          f"{'sdpa' if HAVE_SDPA else 'manual'}, AdamW fused={fused}, tf32={a.tf32 and a.device == 'cuda'}; "
          f"config from {source}")
    sys.stdout.flush()
    try:
        t0 = time.perf_counter()
        for _ in range(max(a.warmup, 1)):
            loss = step()
        sync()
        print(f"warm-up ({max(a.warmup, 1)} steps{', compiling' if a.compile else ''}): "
              f"{time.perf_counter() - t0:.1f} s, loss {float(loss):.4f}")
    except Exception as e:  # torch.compile needs a C++ compiler / triton; report, do not crash
        if not a.compile:
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"SKIP torch.compile failed on this machine ({type(e).__name__}: {msg[:300]}); no compiled result")
        return 0
    times = []
    for _ in range(a.steps):
        sync()
        t0 = time.perf_counter()
        loss = step()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    ms = statistics.median(times)
    peak = f" peak_mem_mib={torch.cuda.max_memory_allocated() / 2**20:.1f}" if a.device == "cuda" else ""
    print(f"steps (ms): {' '.join(f'{t:.1f}' for t in times)}; final loss {float(loss):.4f}")
    print(f"RESULT tokens_per_s={B * sh.T / (ms / 1e3):.1f} ms_per_step={ms:.3f} mode={mode} device={a.device} "
          f"dtype={a.dtype} B={B} T={sh.T} params_m={n_params / 1e6:.2f}{peak}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
