#!/usr/bin/env bash
# The standard evaluation of a run: validation loss / perplexity / bits per byte on the run's
# data.val (exactly as the trainer validates) + MoE routing statistics, plus multiple-choice
# accuracy when EVAL_MC names a HellaSwag-style .jsonl file.
#
#   scripts/eval.sh RUN_DIR [CHECKPOINT]      (default: the newest committed checkpoint)
#
# Writes RUN_DIR/eval/step_NNNNNNNN.json (+ .txt, the console table) and copies the JSON to
# RUN_DIR/eval.json (the latest evaluation). Checkpoint directories are never written to.
# Environment: EVAL_MC=FILE.jsonl, EVAL_ARGS="extra competelm-eval options" (e.g. "--batches 0"),
# EVAL_BIN (default: build/bin/competelm-eval next to this script). Run it from the directory
# the run was trained from (the config's data paths are relative to it).
set -euo pipefail
usage() { sed -n '2,12p' "$0"; }
[[ $# -ge 1 && $# -le 2 ]] || { usage >&2; exit 2; }
[[ $1 == -h || $1 == --help ]] && { usage; exit 0; }
RUN_DIR=${1%/}
EVAL_BIN=${EVAL_BIN:-$(dirname "$0")/../build/bin/competelm-eval}
[[ -x "$EVAL_BIN" ]] || { echo "eval.sh: $EVAL_BIN not found: build first (scripts/build.sh)" >&2; exit 1; }
[[ -d "$RUN_DIR" ]] || { echo "eval.sh: run directory '$RUN_DIR' does not exist" >&2; exit 2; }

if [[ $# -eq 2 ]]; then
  CKPT=${2%/}
else
  # Committed checkpoints only: step_NNNNNNNN with a meta.json (temporary dirs are step_N.tmp-PID).
  CKPT=""
  for d in "$RUN_DIR"/checkpoints/step_*; do
    [[ -f "$d/meta.json" && $(basename "$d") =~ ^step_[0-9]+$ ]] && CKPT=$d
  done
  if [[ -z "$CKPT" ]]; then
    echo "eval.sh: $RUN_DIR has no checkpoint ($RUN_DIR/checkpoints/step_*/meta.json): train with" \
         "checkpoint.at_end: true or checkpoint.every > 0 first" >&2
    exit 2
  fi
fi
[[ -f "$CKPT/meta.json" ]] || { echo "eval.sh: '$CKPT' is not a checkpoint directory (no meta.json)" >&2; exit 2; }

NAME=$(basename "$CKPT")
OUT_DIR="$RUN_DIR/eval"
mkdir -p "$OUT_DIR"
trap 'rm -f "$OUT_DIR/$NAME.json.tmp" "$OUT_DIR/$NAME.txt.tmp" "$RUN_DIR/eval.json.tmp"' EXIT
ARGS=(--json "$OUT_DIR/$NAME.json.tmp")
[[ -n "${EVAL_MC:-}" ]] && ARGS+=(--mc "$EVAL_MC")
# shellcheck disable=SC2206
[[ -n "${EVAL_ARGS:-}" ]] && ARGS+=($EVAL_ARGS)

"$EVAL_BIN" "$CKPT" "${ARGS[@]}" | tee "$OUT_DIR/$NAME.txt.tmp"
mv "$OUT_DIR/$NAME.json.tmp" "$OUT_DIR/$NAME.json"
mv "$OUT_DIR/$NAME.txt.tmp" "$OUT_DIR/$NAME.txt"
cp "$OUT_DIR/$NAME.json" "$RUN_DIR/eval.json.tmp" && mv "$RUN_DIR/eval.json.tmp" "$RUN_DIR/eval.json"
echo "eval.sh: wrote $OUT_DIR/$NAME.json and $RUN_DIR/eval.json"
