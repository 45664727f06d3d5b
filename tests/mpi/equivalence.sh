#!/usr/bin/env bash
# 1, 2 and 4 data-parallel ranks (and expert parallel 2 and 4) with the same global batch give
# the same losses and gradient norms as one process, for a dense and a CompeteSMoE model with
# competition on some of the steps. Tolerance: float summation order (per-rank partial means,
# reduce-scatter) only.
TRAIN=$1
source "$(dirname "$0")/mpi_common.sh"
common=(--set train.steps=8 --set checkpoint.every=0 --set checkpoint.at_end=false --set eval.every=4
        --set eval.val_batches=2)

# Dense: global batch of 4 sequences = 1×4 = 2×2 = 4×1.
run_ranks 1 "$WORK/dense1" configs/tiny.yaml "${common[@]}" --set train.micro_batch=4
run_ranks 2 "$WORK/dense2" configs/tiny.yaml "${common[@]}" --set train.micro_batch=2
run_ranks 4 "$WORK/dense4" configs/tiny.yaml "${common[@]}" --set train.micro_batch=1
# Gradient buckets of 10 kB (a few per layer) reduced while the backward runs; and none (one
# reduction per region after the backward), with gradient accumulation.
run_ranks 2 "$WORK/dense2b" configs/tiny.yaml "${common[@]}" --set train.micro_batch=2 --set dist.bucket_mb=0.01
run_ranks 2 "$WORK/dense2n" configs/tiny.yaml "${common[@]}" --set train.micro_batch=1 --set train.batch_tokens=128 \
  --set dist.bucket_mb=0
"${COMPARE[@]}" --key loss --key grad_norm --rtol 1e-6 "$WORK/dense1" "$WORK/dense2" "$WORK/dense4" \
  "$WORK/dense2b" "$WORK/dense2n"
"${COMPARE[@]}" --key val_loss --rtol 1e-6 --steps 4-8 "$WORK/dense1" "$WORK/dense2" "$WORK/dense4"
grep -q "gradient buckets (dist.bucket_mb 0.01), \([2-9]\|[1-9][0-9]\+\) of them reduced during the backward" \
  "$WORK/dense2b/train.log" || { echo "FAIL: no buckets overlapped the backward"; grep -h "gradient buckets" "$WORK"/dense2*/train.log; exit 1; }
grep -q "), 0 of them reduced during the backward" "$WORK/dense2n/train.log" || { echo "FAIL: bucket_mb=0 overlapped"; exit 1; }

# CompeteSMoE (4 experts, top-2, competition on several (layer, step) pairs).
run_ranks 1 "$WORK/moe1" configs/tiny-moe.yaml "${common[@]}" --set train.micro_batch=4
run_ranks 2 "$WORK/moe2" configs/tiny-moe.yaml "${common[@]}" --set train.micro_batch=2
run_ranks 2 "$WORK/moe2ep2" configs/tiny-moe.yaml "${common[@]}" --set train.micro_batch=2 --set dist.expert_parallel=2
run_ranks 4 "$WORK/moe4ep2" configs/tiny-moe.yaml "${common[@]}" --set train.micro_batch=1 --set dist.expert_parallel=2
run_ranks 4 "$WORK/moe4ep4" configs/tiny-moe.yaml "${common[@]}" --set train.micro_batch=1 --set dist.expert_parallel=4
run_ranks 4 "$WORK/moe4ep2b" configs/tiny-moe.yaml "${common[@]}" --set train.micro_batch=1 --set dist.expert_parallel=2 \
  --set dist.bucket_mb=0.01
"${COMPARE[@]}" --key loss --key lm_loss --key aux_loss --key grad_norm --rtol 1e-6 --require-competition \
  "$WORK/moe1" "$WORK/moe2" "$WORK/moe2ep2" "$WORK/moe4ep2" "$WORK/moe4ep4" "$WORK/moe4ep2b"
# Expert parallel 2 equals expert parallel 1 at the same rank count, step for step.
"${COMPARE[@]}" --key loss --key grad_norm --rtol 1e-6 --require-competition "$WORK/moe2" "$WORK/moe2ep2"
echo "PASS"
