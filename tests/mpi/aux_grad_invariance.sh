#!/usr/bin/env bash
# The gradient of every MoE aux loss must not depend on how the global batch is split: over
# ranks, over expert-parallel ranks, or over gradient-accumulation micro-steps (the classic
# MoE bug: an aux loss summed instead of averaged, or scaled by the micro-step count twice).
# The aux coefficients are raised so that their gradients dominate the norm; a mis-scaled aux
# gradient changes grad_norm by a large factor. Entropy balance is per sequence and every
# other term a mean over tokens, so each split must agree to float rounding.
TRAIN=$1
source "$(dirname "$0")/mpi_common.sh"
common=(--set train.steps=3 --set checkpoint.every=0 --set checkpoint.at_end=false --set eval.every=0
        --set optim.grad_clip=0)
# 16 sequences of 32 tokens per step, split five ways.
splits() {  # splits NAME CONFIG-OVERRIDES...
  local name=$1
  shift
  run_ranks 1 "$WORK/$name-1x16" configs/tiny-moe.yaml "${common[@]}" "$@" --set train.micro_batch=16
  run_ranks 1 "$WORK/$name-1x4x4" configs/tiny-moe.yaml "${common[@]}" "$@" --set train.micro_batch=4 --set train.batch_tokens=512
  run_ranks 2 "$WORK/$name-2x8" configs/tiny-moe.yaml "${common[@]}" "$@" --set train.micro_batch=8
  run_ranks 2 "$WORK/$name-2x2x4ep2" configs/tiny-moe.yaml "${common[@]}" "$@" --set train.micro_batch=2 \
    --set train.batch_tokens=512 --set dist.expert_parallel=2
  run_ranks 4 "$WORK/$name-4x2x2ep4" configs/tiny-moe.yaml "${common[@]}" "$@" --set train.micro_batch=2 \
    --set train.batch_tokens=512 --set dist.expert_parallel=4
  "${COMPARE[@]}" --key loss --key aux_loss --key grad_norm --rtol 1e-5 \
    "$WORK/$name-1x16" "$WORK/$name-1x4x4" "$WORK/$name-2x8" "$WORK/$name-2x2x4ep2" "$WORK/$name-4x2x2ep4"
}
# Normal steps: router balance (entropy per sequence) + z-loss.
splits normal --set moe.router=softmax_topk --set moe.balance_coef=5 --set moe.z_loss_coef=0.5
# Competition on every step: distillation, diversity, affinity balance, z-loss.
splits compete --set moe.competition_rate=1 --set moe.competition_warmup=0 --set moe.router_coef=5 \
  --set moe.diversity_coef=2 --set moe.competition_balance_coef=2 --set moe.z_loss_coef=0.5
echo "PASS"
