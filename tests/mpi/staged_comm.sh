#!/usr/bin/env bash
# The GPU backend's host-staged collectives (dist.gpu_comm: mpi), run on the CPU: the test-only
# COMPETELM_TEST_STAGED_COMM=1 makes the CPU backend use StagingComm for every collective on its
# buffers (data-parallel reduce-scatter / all-gather, expert-parallel token rows, the
# competition's all-gather and reduce-scatter), with copies in place of PCIe transfers. The
# staging must be invisible: 4 ranks, expert parallel 2, CompeteSMoE with competition on every
# step (and its affinity balance), the same metrics bit for bit as the host communicators, with
# 10 kB gradient buckets reduced during the backward.
TRAIN=$1
source "$(dirname "$0")/mpi_common.sh"
common=(--set train.steps=4 --set train.micro_batch=2 --set checkpoint.every=0 --set checkpoint.at_end=false
        --set eval.every=4 --set eval.val_batches=1 --set dist.expert_parallel=2
        --set moe.competition_rate=1 --set moe.competition_warmup=0 --set moe.competition_balance_coef=0.5 --set dist.bucket_mb=0.01)
run_ranks 4 "$WORK/host" configs/tiny-moe.yaml "${common[@]}"
COMPETELM_TEST_STAGED_COMM=1 run_ranks 4 "$WORK/staged" configs/tiny-moe.yaml "${common[@]}"
grep -q "dist.gpu_comm auto → mpi" "$WORK/staged/train.log" ||
  { echo "FAIL: the staged run does not say it stages"; grep gpu_comm "$WORK/staged/train.log"; exit 1; }
"${COMPARE[@]}" --key loss --key lm_loss --key aux_loss --key grad_norm --key comm_bytes_dp --key comm_bytes_ep \
  --rtol 0 --require-competition "$WORK/host" "$WORK/staged"
"${COMPARE[@]}" --key val_loss --rtol 0 --steps 4-4 "$WORK/host" "$WORK/staged"
grep -q "), [1-9][0-9]* of them reduced during the backward" "$WORK/staged/train.log" ||
  { echo "FAIL: no staged bucket overlapped the backward"; grep "gradient buckets" "$WORK/staged/train.log"; exit 1; }
echo "PASS"
