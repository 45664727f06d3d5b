#!/usr/bin/env bash
# The I/O of a multi-rank resume does not grow with the world size: the ranks split the
# verification of the checkpoint (each file's checksum computed by one rank) and each reads
# only its own slices (replicated tensors, its experts, the moments it owns). Before, every
# rank read all files to verify them, then all model and optim files again: at least
# total + model + optim bytes. Now a rank reads about total/W + replicated model + optim/W:
# less than total + model on 2 ranks, less than total on 4.
# The selective load is exact: a same-world resume ends with checkpoint files byte-identical to
# the uninterrupted run's. A corrupted file is found whichever rank verifies it, and every rank
# stops with that rank's message.
TRAIN=$1
source "$(dirname "$0")/mpi_common.sh"
common=(--set train.steps=8 --set eval.every=0 --set checkpoint.keep=5 --set checkpoint.every=4)

run_ranks 4 "$WORK/full" configs/tiny-moe.yaml "${common[@]}" --set train.micro_batch=1 --set dist.expert_parallel=2
ck=$WORK/full/checkpoints/step_00000004
[ -f "$ck/meta.json" ] || { echo "FAIL: no committed checkpoint at step 4"; exit 1; }
total=0 model=0 optim=0
for f in "$ck"/*; do
  b=$(stat -c %s "$f")
  case $(basename "$f") in
    meta.json) continue ;;
    model.*) model=$((model + b)) ;;
    optim.*) optim=$((optim + b)) ;;
  esac
  total=$((total + b))
done
echo "checkpoint: $total bytes in its files (model $model, optim $optim); before this change a rank read >= $((total + model + optim))"

# resume_in NAME RANKS LIMIT [--set ...]: the step-4 checkpoint copied into a fresh run dir,
# resumed there with --resume (the collective search); every rank must report < LIMIT bytes.
resume_in() {
  local name=$1 ranks=$2 limit=$3
  shift 3
  mkdir -p "$WORK/$name/checkpoints"
  cp -r "$ck" "$WORK/$name/checkpoints/"
  run_ranks "$ranks" "$WORK/$name" configs/tiny-moe.yaml "${common[@]}" --resume "$@"
  local line
  line=$(grep -o "resumed from .* (bytes read per rank: [0-9, ]*)" "$WORK/$name/train.log") ||
    { echo "FAIL: $name: no resume line with the bytes read"; cat "$WORK/$name/train.log"; exit 1; }
  echo "$ranks ranks: $line"
  local bytes n=0
  bytes=$(echo "$line" | sed 's/.*per rank: \([0-9, ]*\))/\1/' | tr ',' ' ')
  for b in $bytes; do
    n=$((n + 1))
    [ "$b" -gt 0 ] && [ "$b" -lt "$limit" ] ||
      { echo "FAIL: $name: a rank read $b bytes (limit $limit; the checkpoint holds $total)"; exit 1; }
  done
  [ "$n" -eq "$ranks" ] || { echo "FAIL: $name: $n ranks reported, expected $ranks"; exit 1; }
}

resume_in same4 4 "$total" --set train.micro_batch=1 --set dist.expert_parallel=2
resume_in half2 2 "$((total + model))" --set train.micro_batch=2
# Exact load: the same world continues bit for bit (every byte of the step-8 tensor files).
for kind in model optim; do
  for r in 0 1 2 3; do
    f=$kind.shard-0000$r-of-00004.bin
    cmp -s "$WORK/full/checkpoints/step_00000008/$f" "$WORK/same4/checkpoints/step_00000008/$f" ||
      { echo "FAIL: the resumed run's $f at step 8 differs from the uninterrupted run's"; exit 1; }
  done
done
"${COMPARE[@]}" --key loss --key grad_norm --rtol 1e-6 --steps 5-8 "$WORK/full" "$WORK/half2"

# A flipped byte in the last shard (verified by some rank other than 0 under the split):
# every rank stops, naming the file; no rank hangs.
bad=$WORK/bad/step_00000004
mkdir -p "$WORK/bad"
cp -r "$ck" "$bad"
f=$bad/optim.shard-00003-of-00004.bin
printf '\x55' | dd of="$f" bs=1 seek=$(( $(stat -c %s "$f") / 2 )) conv=notrunc status=none
set +e
timeout 120 mpirun -np 4 "$TRAIN" configs/tiny-moe.yaml --set "run.dir=$WORK/badrun" --set run.threads=1 \
  --set eval.sample_every=0 "${common[@]}" --set train.micro_batch=1 --resume-from "$bad" >"$WORK/bad.log" 2>&1
rc=$?
set -e
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || { echo "FAIL: corrupted --resume-from: exit $rc (0 or 124 = hung)"; cat "$WORK/bad.log"; exit 1; }
grep -q "optim.shard-00003-of-00004.bin.*checksum mismatch" "$WORK/bad.log" ||
  { echo "FAIL: the corrupted file is not named"; cat "$WORK/bad.log"; exit 1; }
echo "PASS"
