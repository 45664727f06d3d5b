#!/usr/bin/env bash
# Data and expert parallel on the CUDA backend (dist.gpu_comm auto = host-staged MPI: every
# collective on device memory goes through a StagingComm): 2 ranks with the same global batch
# follow one process's losses and gradient norms, dense, CompeteSMoE, and CompeteSMoE with
# dist.expert_parallel=2, in fp32 (tolerance: float summation order, and TF32-free cuBLAS on two
# processes sharing one GPU). NCCL: one rank with dist.gpu_comm=nccl builds (and tears down)
# the NCCL communicators and must match; two NCCL ranks need two GPUs (NCCL refuses two ranks
# on one device), so that comparison runs only where there are. Skipped without a GPU
# (nvidia-smi) or mpirun.
TRAIN=$1
source "$(dirname "$0")/mpi_common.sh"
if ! nvidia-smi -L >/dev/null 2>&1; then echo "SKIPPED: no NVIDIA GPU"; exit 77; fi
common=(--set run.device=cuda --set run.precision=fp32 --set train.steps=8 --set checkpoint.every=0
        --set checkpoint.at_end=false --set eval.every=4 --set eval.val_batches=2)

run_ranks 1 "$WORK/dense1" configs/tiny.yaml "${common[@]}" --set train.micro_batch=4
run_ranks 2 "$WORK/dense2" configs/tiny.yaml "${common[@]}" --set train.micro_batch=2
"${COMPARE[@]}" --key loss --key grad_norm --rtol 1e-5 "$WORK/dense1" "$WORK/dense2"
"${COMPARE[@]}" --key val_loss --rtol 1e-5 --steps 4-8 "$WORK/dense1" "$WORK/dense2"

run_ranks 1 "$WORK/moe1" configs/tiny-moe.yaml "${common[@]}" --set train.micro_batch=4
run_ranks 2 "$WORK/moe2" configs/tiny-moe.yaml "${common[@]}" --set train.micro_batch=2
"${COMPARE[@]}" --key loss --key lm_loss --key aux_loss --key grad_norm --rtol 1e-5 --require-competition \
  "$WORK/moe1" "$WORK/moe2"

# Expert parallel: token rows, the competition's all-gather / reduce-scatter staged.
run_ranks 2 "$WORK/ep2" configs/tiny-moe.yaml "${common[@]}" --set train.micro_batch=2 --set dist.expert_parallel=2
grep -q "dist.gpu_comm auto → mpi" "$WORK/ep2/train.log" || { echo "FAIL: ep2 does not say mpi"; exit 1; }
"${COMPARE[@]}" --key loss --key lm_loss --key aux_loss --key grad_norm --rtol 1e-5 --require-competition \
  "$WORK/moe1" "$WORK/ep2"

# NCCL on one rank: nothing is exchanged, but the communicators are made on the GPU.
set +e
run_ranks 1 "$WORK/nccl1" configs/tiny-moe.yaml "${common[@]}" --set train.micro_batch=4 \
  --set dist.gpu_comm=nccl >"$WORK/nccl1.log" 2>&1
rc=$?
set -e
if [ "$rc" -ne 0 ] && grep -q "built without NCCL" "$WORK/nccl1.log"; then
  echo "NOTE: this binary has no NCCL; the NCCL runs are skipped"
elif [ "$rc" -ne 0 ]; then
  echo "FAIL: dist.gpu_comm=nccl on one rank: exit $rc"; cat "$WORK/nccl1.log"; exit 1
else
  "${COMPARE[@]}" --key loss --key grad_norm --rtol 0 "$WORK/moe1" "$WORK/nccl1"
  if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then
    for ep in 1 2; do
      run_ranks 2 "$WORK/nccl2ep$ep" configs/tiny-moe.yaml "${common[@]}" --set train.micro_batch=2 \
        --set dist.expert_parallel=$ep --set dist.gpu_comm=nccl
      "${COMPARE[@]}" --key loss --key lm_loss --key aux_loss --key grad_norm --rtol 1e-5 --require-competition \
        "$WORK/moe1" "$WORK/nccl2ep$ep"
    done
  else
    echo "NOTE: one GPU: NCCL over two ranks is not run (NCCL refuses two ranks on one device)"
  fi
fi
echo "PASS"
