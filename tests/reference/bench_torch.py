#!/usr/bin/env python3
"""PyTorch eager fp32 training-step time for a GPT-2 shape, to compare with competelm-bench.

One step = zero_grad, forward (logits over the padded vocab Vp, loss over the first V, as
our model does), backward, global grad-norm clipping, AdamW step: the same work as one
step of our trainer. The model is tests/reference/gpt2.py's, run in float32.
Prints `RESULT ms_per_step=<median> ...` (scripts/bench_vs_torch.sh reads that line).
"""
import argparse
import math
import statistics
import sys
import time

try:
    import torch
except ImportError as e:
    print(f"bench_torch.py: cannot import torch ({e}); install python3-torch", file=sys.stderr)
    sys.exit(3)

import gpt2


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--L", type=int, default=12)
    ap.add_argument("--C", type=int, default=768)
    ap.add_argument("--NH", type=int, default=12)
    ap.add_argument("--V", type=int, default=50257)
    ap.add_argument("--B", type=int, default=4)
    ap.add_argument("--T", type=int, default=64)
    ap.add_argument("--maxT", type=int, default=0, help="rows of wpe (default T, as our bench with model.seq_len = T)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10, help="timed steps (median reported)")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed)
    params = gpt2.init_params(a.L, a.C, a.V, max(a.maxT, a.T), gen, std=0.02, dtype=torch.float32)
    opt = gpt2.make_optimizer(params, a.lr, 0.9, 0.95, 1e-8, 0.1)
    n_params = sum(p.numel() for p in params.values())

    def step():
        tokens, targets = gpt2.random_batch(gen, a.B, a.T, a.V)
        opt.zero_grad(set_to_none=False)
        _, _, loss = gpt2.forward(params, tokens, a.L, a.NH, a.V, targets)
        loss.backward()
        with torch.no_grad():
            norm = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in params.values()))
            scale = gpt2.clip_scale(norm, a.clip)
            for p in params.values():
                p.grad.mul_(scale)
        opt.step()
        return loss.item()

    for _ in range(a.warmup):
        step()
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
    ms = statistics.median(times)
    tok_s = a.B * a.T / (ms / 1e3)
    print(f"torch {torch.__version__}: L={a.L} C={a.C} NH={a.NH} V={a.V} (Vp={gpt2.padded_vocab(a.V)}) "
          f"B={a.B} T={a.T} threads={a.threads} params={n_params} "
          f"steps(ms)={' '.join(f'{t:.1f}' for t in times)}")
    print(f"RESULT ms_per_step={ms:.3f} tokens_per_s={tok_s:.1f} min_ms={min(times):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
