#!/usr/bin/env bash
# Checkpoints are world-size free: a CompeteSMoE run saved with 4 ranks and expert parallel 2
# (every rank writing its own shard files) resumes with 2 ranks (EP 1) and with 1 rank, and the losses continue as the uninterrupted
# 4-rank run's (same global batch; tolerance: float summation order).
TRAIN=$1
source "$(dirname "$0")/mpi_common.sh"
common=(--set train.steps=8 --set eval.every=0 --set checkpoint.keep=5)

run_ranks 4 "$WORK/full" configs/tiny-moe.yaml "${common[@]}" --set checkpoint.every=4 \
  --set train.micro_batch=1 --set dist.expert_parallel=2
ck="$WORK/full/checkpoints/step_00000004"
[ -f "$ck/meta.json" ] || { echo "FAIL: no committed checkpoint at step 4 ($ck)"; exit 1; }
grep -q '"ranks": 4' "$ck/meta.json" || { echo "FAIL: meta.json does not record the 4 ranks"; cat "$ck/meta.json"; exit 1; }
# Every rank wrote its own shards (no gather to rank 0): one model and one optim file per rank,
# listed in meta.json, of about a quarter of the model each.
[ ! -e "$ck/model.bin" ] && [ ! -e "$ck/optim.bin" ] || { echo "FAIL: a 4-rank checkpoint has single files"; ls "$ck"; exit 1; }
for r in 0 1 2 3; do
  for kind in model optim; do
    f=$kind.shard-0000$r-of-00004.bin
    [ -s "$ck/$f" ] || { echo "FAIL: rank $r's $f is missing"; ls "$ck"; exit 1; }
    grep -q "\"$f\"" "$ck/meta.json" || { echo "FAIL: meta.json does not list $f"; exit 1; }
  done
  echo "rank $r wrote $(( $(stat -c %s "$ck/model.shard-0000$r-of-00004.bin") + $(stat -c %s "$ck/optim.shard-0000$r-of-00004.bin") )) bytes"
done

# The tools read a multi-rank checkpoint like any other (whole experts, by name).
BIN=$(dirname "$TRAIN")
"$BIN/competelm-inspect" "$ck" | grep -q "step" || { echo "FAIL: competelm-inspect on the 4-rank checkpoint"; exit 1; }
"$BIN/competelm-eval" "$ck" --batches 1 --device cpu --json "$WORK/eval.json" >/dev/null
grep -q '"loss"' "$WORK/eval.json" || { echo "FAIL: competelm-eval on the 4-rank checkpoint"; cat "$WORK/eval.json"; exit 1; }

for ranks in 2 1; do
  mb=$((4 / ranks))
  run_ranks "$ranks" "$WORK/resumed$ranks" configs/tiny-moe.yaml "${common[@]}" --set checkpoint.every=0 \
    --set "train.micro_batch=$mb" --resume-from "$ck"
done
"${COMPARE[@]}" --key loss --key grad_norm --key aux_loss --rtol 1e-6 --steps 5-8 --require-competition \
  "$WORK/full" "$WORK/resumed2" "$WORK/resumed1"

# And back up: the 1-rank continuation's final checkpoint resumes on 4 ranks with EP 4.
run_ranks 4 "$WORK/up4" configs/tiny-moe.yaml "${common[@]}" --set train.steps=10 --set checkpoint.every=0 \
  --set train.micro_batch=1 --set dist.expert_parallel=4 --resume-from "$WORK/resumed1/checkpoints/step_00000008"
run_ranks 1 "$WORK/up1" configs/tiny-moe.yaml "${common[@]}" --set train.steps=10 --set checkpoint.every=0 \
  --set train.micro_batch=4 --resume-from "$WORK/resumed1/checkpoints/step_00000008"
"${COMPARE[@]}" --key loss --key grad_norm --rtol 1e-6 --steps 9-10 "$WORK/up1" "$WORK/up4"
echo "PASS"
