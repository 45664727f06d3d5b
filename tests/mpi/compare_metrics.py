#!/usr/bin/env python3
"""Compares per-step values of several runs' metrics.jsonl against the first run's.

usage: compare_metrics.py --key loss [--key grad_norm] [--rtol 1e-5] [--steps A-B]
                          [--require-competition] REFERENCE_RUN_DIR OTHER_RUN_DIR...
Exit 1 naming run, step, key and both values at the first difference beyond rtol.
Only the standard library: runs where torch is absent.
"""
import argparse
import json
import sys


def load(run_dir):
    out = {}
    with open(f"{run_dir}/metrics.jsonl") as f:
        for line in f:
            rec = json.loads(line)
            out[rec["step"]] = rec
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--key", action="append", required=True)
    ap.add_argument("--rtol", type=float, default=1e-5)
    ap.add_argument("--steps", default=None, help="A-B inclusive (default: every step of the reference)")
    ap.add_argument("--require-competition", action="store_true",
                    help="the reference must have competed on at least one compared step")
    ap.add_argument("runs", nargs="+")
    a = ap.parse_args()
    ref = load(a.runs[0])
    steps = sorted(ref)
    if a.steps:
        lo, hi = (int(x) for x in a.steps.split("-"))
        steps = [s for s in steps if lo <= s <= hi]
    if not steps:
        sys.exit(f"FAIL: no steps to compare in {a.runs[0]}")
    if a.require_competition and not any(m.get("competed") for s in steps for m in ref[s].get("moe", [])):
        sys.exit(f"FAIL: {a.runs[0]} never competed on steps {steps[0]}-{steps[-1]}")
    if not any(k in ref[s] for s in steps for k in a.key):
        sys.exit(f"FAIL: {a.runs[0]} has none of {a.key} on steps {steps[0]}-{steps[-1]}")
    worst = 0.0
    for run in a.runs[1:]:
        other = load(run)
        for s in steps:
            if s not in other:
                sys.exit(f"FAIL: {run} has no step {s}")
            for k in a.key:
                if k not in ref[s]:
                    continue  # e.g. val_loss exists on validation steps only
                if k not in other[s]:
                    sys.exit(f"FAIL: {run} step {s} has no {k} (the reference has {ref[s][k]!r})")
                x, y = ref[s][k], other[s][k]
                rel = abs(x - y) / max(abs(x), 1e-12)
                worst = max(worst, rel)
                if rel > a.rtol:
                    sys.exit(f"FAIL: {run} step {s} {k} = {y!r}, reference {a.runs[0]} has {x!r} "
                             f"(relative difference {rel:.2e} > {a.rtol:g})")
    print(f"OK: {len(a.runs) - 1} run(s) match {a.runs[0]} on {a.key} over steps "
          f"{steps[0]}-{steps[-1]} (worst relative difference {worst:.2e}, rtol {a.rtol:g})")


if __name__ == "__main__":
    main()
