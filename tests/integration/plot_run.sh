#!/usr/bin/env bash
# scripts/plot_run.py on generated metrics.jsonl files (a MoE run with per-layer routing
# records and a dense run, overlaid): every PNG is written, is a real PNG of sensible size,
# and a directory without metrics.jsonl is a clear error.
set -uo pipefail
PYTHON=${1:-/usr/bin/python3}
SRC=$(cd "$(dirname "$0")/../.." && pwd)
TMP=$(mktemp -d /tmp/competelm-plot.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

"$PYTHON" - "$TMP" <<'PY'
import json, math, sys
from pathlib import Path
root = Path(sys.argv[1])
for name, moe in (("moe_run", True), ("dense_run", False)):
    d = root / name
    d.mkdir()
    with open(d / "metrics.jsonl", "w") as f:
        for step in range(1, 41):
            rec = {"step": step, "loss": 10 * math.exp(-step / 20) + 1, "lr": 1e-3 * min(1, step / 5),
                   "grad_norm": 1 + 0.5 * math.sin(step), "step_ms": 90.0, "tokens_per_s": 1400 + step,
                   "mfu": 0.3, "tokens_seen": step * 128}
            if step % 10 == 0:
                rec["val_loss"] = rec["loss"] + 0.1
            if moe:
                rec["lm_loss"] = rec["loss"] + 0.02
                rec["aux_loss"] = -0.02
                rec["moe"] = [{"layer": l, "competed": step % 7 == 0, "tok_min": max(0, 20 - step // 2 - l * 5),
                               "tok_max": 64 + step + 10 * l, "tok_mean": 64, "dead": (step // 10) * l,
                               "entropy": 1.38 - 0.005 * step * (l + 1)} for l in range(3)]
            f.write(json.dumps(rec) + "\n")
PY

out=$("$PYTHON" "$SRC/scripts/plot_run.py" "$TMP/moe_run" "$TMP/dense_run" --out "$TMP/plots" 2>&1) || fail "plot_run.py exited $?: $out"
echo "$out"
for png in loss lr grad_norm tokens_per_s moe_moe_run; do
  f="$TMP/plots/$png.png"
  [ -f "$f" ] || { fail "$png.png not written"; continue; }
  "$PYTHON" - "$f" <<'PY' || fail "$png.png is not a sensible PNG"
import struct, sys
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
w, h = struct.unpack(">II", data[16:24])
assert w >= 400 and h >= 300, f"tiny image {w}x{h}"
assert len(data) > 15000, f"only {len(data)} bytes: an empty plot?"
print(f"ok: {sys.argv[1]}: {w}x{h}, {len(data)} bytes")
PY
done
[ ! -e "$TMP/plots/moe_dense_run.png" ] || fail "a dense run got a MoE heatmap"

# One run: the default output directory is RUN_DIR/plots.
"$PYTHON" "$SRC/scripts/plot_run.py" "$TMP/dense_run" >/dev/null 2>&1 || fail "single run failed"
[ -f "$TMP/dense_run/plots/loss.png" ] || fail "default --out RUN_DIR/plots not used"

# A directory without metrics.jsonl.
mkdir -p "$TMP/empty"
out=$("$PYTHON" "$SRC/scripts/plot_run.py" "$TMP/empty" 2>&1) && fail "no error for a dir without metrics.jsonl"
grep -q "metrics.jsonl not found" <<<"$out" || fail "unclear error: $out"

[ $fails -eq 0 ] && echo "plot_run.py checks passed"
exit $fails
