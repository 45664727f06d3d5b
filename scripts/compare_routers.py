#!/usr/bin/env python3
"""Summarises scripts/compare_routers.sh: a Markdown table and a PNG of validation curves.

usage: compare_routers.py OUT_DIR RUN_NAME...   (each OUT_DIR/RUN_NAME holds a metrics.jsonl)
"""
import json
import statistics
import sys
from pathlib import Path


def load(path):
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        sys.exit(f"compare_routers.py: {path} is empty")
    return rows


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    names = sys.argv[2:]
    runs = {n: load(out / n / "metrics.jsonl") for n in names}
    # Mean step times (after 5 warm-up steps) include the rare competition steps: the cost of
    # the whole run. The last column isolates a competition step against a normal one.
    base_ms = statistics.mean(r["step_ms"] for r in runs[names[0]][5:] or runs[names[0]])
    lines = ["| router | final val loss | best val loss | tokens/s | mean step time vs " + names[0] +
             " | competition steps: time vs normal steps |", "|---|---|---|---|---|---|"]
    for n in names:
        rows = runs[n]
        vals = [r["val_loss"] for r in rows if "val_loss" in r]
        steady = rows[5:] or rows
        ms = statistics.mean(r["step_ms"] for r in steady)
        tps = sum(r["tokens_per_s"] * r["step_ms"] for r in steady) / sum(r["step_ms"] for r in steady)
        comp = [r["step_ms"] for r in steady if any(l.get("competed") for l in r.get("moe", []))]
        normal = [r["step_ms"] for r in steady if not any(l.get("competed") for l in r.get("moe", []))]
        comp_txt = (f"{statistics.median(comp) / statistics.median(normal):.2f}× on {len(comp)} steps"
                    if comp and normal else "-")
        lines.append(f"| {n} | {vals[-1]:.4f} | {min(vals):.4f} | {tps:.0f} | {ms / base_ms:.3f}× | {comp_txt} |")
    table = "\n".join(lines)
    print(table)
    (out / "summary.md").write_text(table + "\n")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for n in names:
        pts = [(r["step"], r["val_loss"]) for r in runs[n] if "val_loss" in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=n)
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss")
    ax.set_title("Router comparison (same seed, data order, steps)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "val_loss.png", dpi=120)
    print(f"wrote {out / 'summary.md'} and {out / 'val_loss.png'}")


if __name__ == "__main__":
    main()
