#!/usr/bin/env bash
# Data parallel on the CUDA backend (gradients and parameters staged through host memory for
# the MPI collectives): 2 ranks with the same global batch follow one process's losses and
# gradient norms, dense and CompeteSMoE, in fp32 (tolerance: float summation order, and
# TF32-free cuBLAS on two processes sharing one GPU). Expert parallel on CUDA is refused with a
# message. Skipped without a GPU (nvidia-smi) or mpirun.
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

# Expert parallel needs device-side collectives: a clear refusal, not a crash.
set +e
run_ranks 2 "$WORK/ep2" configs/tiny-moe.yaml "${common[@]}" --set train.micro_batch=2 \
  --set dist.expert_parallel=2 >"$WORK/ep2.log" 2>&1
rc=$?
set -e
[ "$rc" -ne 0 ] && grep -q "expert parallelism needs host-memory collectives" "$WORK/ep2.log" ||
  { echo "FAIL: expert parallel on CUDA: exit $rc"; cat "$WORK/ep2.log"; exit 1; }
echo "PASS"
