#!/usr/bin/env bash
# The experiment users run first: the same small MoE GPT on the default corpus trained with
# each router — softmax_topk (SMoE), competesmoe with both competition scores, sigmoid_topk —
# with the same seed, data order, steps and active-parameter budget; then a table of final
# validation loss, tokens/s and competition overhead, and a PNG of the validation curves.
#
#   scripts/compare_routers.sh [--config configs/quickstart.yaml] [--out runs/compare]
#                              [--set key=value]...       (extra overrides for every run)
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=configs/quickstart.yaml
OUT=runs/compare
EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --config) CONFIG=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --set) EXTRA+=(--set "$2"); shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "compare_routers.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
TRAIN=${TRAIN:-build/bin/competelm-train}
PYTHON=${PYTHON:-/usr/bin/python3}
[[ -x "$TRAIN" ]] || { echo "compare_routers.sh: $TRAIN not found: run scripts/setup.sh first" >&2; exit 1; }

declare -A VARIANT=(
  [softmax_topk]="--set moe.router=softmax_topk"
  [competesmoe_softplus]="--set moe.router=competesmoe --set moe.competition_score=softplus_mean"
  [competesmoe_l2]="--set moe.router=competesmoe --set moe.competition_score=l2"
  [sigmoid_topk]="--set moe.router=sigmoid_topk"
)
ORDER=(softmax_topk competesmoe_softplus competesmoe_l2 sigmoid_topk)
mkdir -p "$OUT"
for name in "${ORDER[@]}"; do
  dir="$OUT/$name"
  if [[ -f "$dir/DONE" ]]; then echo "== $name: done already ($dir)"; continue; fi
  rm -rf "$dir"
  echo "== $name"
  # shellcheck disable=SC2086
  "$TRAIN" "$CONFIG" ${VARIANT[$name]} --set "run.dir=$dir" --set checkpoint.every=0 \
    --set checkpoint.at_end=false --set eval.sample_every=0 "${EXTRA[@]}" --quiet
  touch "$dir/DONE"
done
"$PYTHON" scripts/compare_routers.py "$OUT" "${ORDER[@]}"
