#!/usr/bin/python3
"""Plots a training run's metrics.jsonl as PNGs (matplotlib, no display needed).

usage: plot_run.py RUN_DIR [RUN_DIR...] [--out DIR]

Writes to DIR (default: RUN_DIR/plots for one run, ./plots for several):
  loss.png          train loss (what is optimised; MoE runs: dashed = LM loss alone) and val loss
  lr.png            learning rate
  grad_norm.png     global gradient norm (before clipping)
  tokens_per_s.png  training throughput
  moe_<run>.png     MoE runs: per layer × step heatmaps of load imbalance (tok_max / tok_mean:
                    1 = perfectly even), of dead experts, and the router entropy per layer
Several run directories overlay their curves (legend = directory name); each MoE run gets
its own heatmap file.
"""
import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def load_metrics(run_dir):
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        sys.exit(f"plot_run.py: {path} not found (is {run_dir} a run directory?)")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            sys.exit(f"plot_run.py: {path}:{n}: not JSON ({e})")
    if not rows:
        sys.exit(f"plot_run.py: {path} has no records")
    return rows


def labels_for(run_dirs):
    names = [Path(d).resolve().name for d in run_dirs]
    if len(set(names)) < len(names):  # same basenames (a/run, b/run): use the given paths
        names = [str(d) for d in run_dirs]
    return names


def series(rows, key):
    pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def line_plot(runs, key, title, ylabel, path, log_y=False, extra=None):
    fig, ax = plt.subplots(figsize=(8, 4.5))
    drawn = 0
    for i, (name, rows) in enumerate(runs):
        color = f"C{i % 10}"
        xs, ys = series(rows, key)
        if xs:
            ax.plot(xs, ys, color=color, label=name if extra is None else f"{name} train")
            drawn += 1
        if extra:
            for ekey, style, suffix in extra:
                ex, ey = series(rows, ekey)
                if ex:
                    ax.plot(ex, ey, style, color=color, label=f"{name} {suffix}")
                    drawn += 1
    if drawn == 0:
        plt.close(fig)
        return False
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    if log_y:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def moe_plot(name, rows, path):
    recs = [r for r in rows if isinstance(r.get("moe"), list) and r["moe"]]
    if not recs:
        return False
    layers = [m["layer"] for m in recs[0]["moe"]]
    steps = [r["step"] for r in recs]
    imbalance = np.full((len(layers), len(steps)), np.nan)
    dead = np.full((len(layers), len(steps)), np.nan)
    entropy = np.full((len(layers), len(steps)), np.nan)
    for j, r in enumerate(recs):
        for m in r["moe"]:
            if m["layer"] not in layers:
                continue
            i = layers.index(m["layer"])
            if m.get("tok_mean"):
                imbalance[i, j] = m["tok_max"] / m["tok_mean"]
            dead[i, j] = m.get("dead", np.nan)
            entropy[i, j] = m.get("entropy", np.nan)
    extent = [steps[0] - 0.5, steps[-1] + 0.5, len(layers) - 0.5, -0.5]
    fig, axes = plt.subplots(3, 1, figsize=(9, 2.2 + 1.6 * len(layers) + 2.5), sharex=True)
    for ax, data, title, cmap in ((axes[0], imbalance, "load imbalance: tok_max / tok_mean (1 = even)", "magma"),
                                  (axes[1], dead, "dead experts (no token in the step)", "Reds")):
        im = ax.imshow(data, aspect="auto", interpolation="nearest", cmap=cmap, extent=extent)
        ax.set_yticks(range(len(layers)))
        ax.set_yticklabels([f"block {b}" for b in layers])
        ax.set_title(f"{name}: {title}", fontsize=10)
        fig.colorbar(im, ax=ax, pad=0.01)
    for i, b in enumerate(layers):
        axes[2].plot(steps, entropy[i], label=f"block {b}")
    axes[2].set_title("router entropy (nats)", fontsize=10)
    axes[2].set_xlabel("step")
    axes[2].grid(alpha=0.3)
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    ap.add_argument("--out", help="output directory (default: RUN_DIR/plots, or ./plots for several runs)")
    args = ap.parse_args(argv)
    runs = list(zip(labels_for(args.run_dirs), [load_metrics(d) for d in args.run_dirs]))
    out = Path(args.out) if args.out else (Path(args.run_dirs[0]) / "plots" if len(runs) == 1 else Path("plots"))
    out.mkdir(parents=True, exist_ok=True)

    written = []
    plots = [
        ("loss", "loss", "loss", "nats/token", False, [("lm_loss", "--", "LM loss"), ("val_loss", "o-", "val")]),
        ("lr", "lr", "learning rate", "lr", False, None),
        ("grad_norm", "grad_norm", "gradient norm", "global L2 norm", True, None),
        ("tokens_per_s", "tokens_per_s", "throughput", "tokens/s", False, None),
    ]
    for fname, key, title, ylabel, log_y, extra in plots:
        p = out / f"{fname}.png"
        if line_plot(runs, key, title, ylabel, p, log_y, extra):
            written.append(p)
    for name, rows in runs:
        p = out / f"moe_{name.replace('/', '_')}.png"
        if moe_plot(name, rows, p):
            written.append(p)
    for p in written:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
