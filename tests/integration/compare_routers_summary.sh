#!/usr/bin/env bash
# scripts/compare_routers.py on small synthetic runs: the table names every router with its
# final validation loss, the competition column is filled for the competing run, the PNG exists.
set -euo pipefail
SRC=$(cd "$(dirname "$0")/../.." && pwd)
PYTHON=${PYTHON:-/usr/bin/python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for run in softmax_topk competesmoe_softplus; do
  mkdir -p "$tmp/$run"
  for step in $(seq 1 12); do
    competed=false
    [ "$run" = competesmoe_softplus ] && [ $((step % 4)) -eq 0 ] && competed=true
    ms=100; [ "$competed" = true ] && ms=150
    val=""; [ $((step % 6)) -eq 0 ] && val=",\"val_loss\":$((10 - step / 6)).5"
    echo "{\"step\":$step,\"loss\":5.0,\"step_ms\":$ms,\"tokens_per_s\":1000$val,\"moe\":[{\"layer\":0,\"competed\":$competed}]}" >>"$tmp/$run/metrics.jsonl"
  done
done
out=$("$PYTHON" "$SRC/scripts/compare_routers.py" "$tmp" softmax_topk competesmoe_softplus)
echo "$out"
grep -q "| softmax_topk | 8.5000 |" <<<"$out" || { echo "FAIL: softmax_topk row"; exit 1; }
grep -q "| competesmoe_softplus | 8.5000 | 8.5000 | 1000 | 1.143× | 1.50× on 2 steps |" <<<"$out" ||
  { echo "FAIL: competition column"; exit 1; }
[ -s "$tmp/val_loss.png" ] || { echo "FAIL: no PNG"; exit 1; }
echo "compare_routers.py summary OK"
