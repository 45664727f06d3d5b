#!/usr/bin/env bash
# SIGTERM during training: the trainer finishes the step, writes a checkpoint, exits 0;
# --resume then continues from that checkpoint to the end.
set -euo pipefail
TRAIN=$1
SRC=$(cd "$(dirname "$0")/../.." && pwd)
cd "$SRC"
RUN=$(mktemp -d /tmp/competelm-sigterm.XXXXXX)
trap 'rm -rf "$RUN"' EXIT
common=(configs/tiny.yaml --set "run.dir=$RUN" --set checkpoint.every=0 --set eval.every=0
        --set eval.sample_every=0 --set run.threads=1 --quiet)

"$TRAIN" "${common[@]}" --set train.steps=100000 &
pid=$!
for _ in $(seq 1 600); do  # wait (≤ 60 s) until a few steps are logged
  [ -f "$RUN/metrics.jsonl" ] && [ "$(wc -l <"$RUN/metrics.jsonl")" -ge 3 ] && break
  sleep 0.1
done
kill -TERM "$pid"
set +e
wait "$pid"
rc=$?
set -e
[ "$rc" -eq 0 ] || { echo "FAIL: trainer exited $rc after SIGTERM (expected 0)"; exit 1; }
ckpt=$(ls -d "$RUN"/checkpoints/step_* | tail -n 1)
[ -f "$ckpt/meta.json" ] || { echo "FAIL: no complete checkpoint after SIGTERM"; exit 1; }
step=$((10#$(basename "$ckpt" | sed 's/step_//')))
logged=$(wc -l <"$RUN/metrics.jsonl")
[ "$step" -eq "$logged" ] || { echo "FAIL: checkpoint at step $step but $logged steps were logged"; exit 1; }
echo "SIGTERM → checkpoint at step $step, exit 0"

target=$((step + 3))
"$TRAIN" "${common[@]}" --set "train.steps=$target" --resume
last=$(tail -n 1 "$RUN/metrics.jsonl" | sed 's/.*"step": *\([0-9]*\).*/\1/')
[ "$last" -eq "$target" ] || { echo "FAIL: resumed run ended at step $last, expected $target"; exit 1; }
echo "resumed from step $step to $target: OK"
