#!/usr/bin/env bash
# A multi-rank checkpoint is committed only when every rank's shard files are written: a disk
# "full" on rank 1 alone (COMPETELM_TEST_CHECKPOINT_FULL_AFTER armed in that rank only) while
# it writes its shards of the step-4 checkpoint ends the job on every rank with rank 1's
# message (checkpoint.on_error = stop), leaves no step-4 checkpoint and no temporary
# directory, and the step-2 checkpoint verifies and resumes. Under on_error = continue every
# rank takes the same decision: training goes on with no partial checkpoint left.
TRAIN=$1
source "$(dirname "$0")/mpi_common.sh"
BIN=$(dirname "$TRAIN")
common=(--set train.steps=4 --set eval.every=0 --set checkpoint.every=2 --set checkpoint.keep=5
        --set train.micro_batch=1 --set dist.expert_parallel=2)
LIMIT=120

# Rank 1's shard bytes per checkpoint, from a clean 2-step run.
run_ranks 2 "$WORK/ref" configs/tiny-moe.yaml "${common[@]}" --set train.steps=2
ref=$WORK/ref/checkpoints/step_00000002
one=$(( $(stat -c %s "$ref/model.shard-00001-of-00002.bin") + $(stat -c %s "$ref/optim.shard-00001-of-00002.bin") ))
budget=$((one * 3 / 2))  # the first checkpoint fits, the second fails mid-file

# run_faulty NAME [--set ...]: 2 ranks, rank 1 alone with the fault armed; exit code in $rc.
run_faulty() {
  local name=$1
  shift
  set +e
  timeout $LIMIT mpirun -np 2 bash -c \
    'if [ "${OMPI_COMM_WORLD_RANK:-0}" = 1 ]; then export COMPETELM_TEST_CHECKPOINT_FULL_AFTER='"$budget"'; fi; exec "$0" "$@"' \
    "$TRAIN" configs/tiny-moe.yaml --set "run.dir=$WORK/$name" --set run.threads=1 --set eval.sample_every=0 \
    "${common[@]}" "$@" >"$WORK/$name.log" 2>&1
  rc=$?
  set -e
}

# 1. on_error = stop: the job ends, naming rank 1's file.
run_faulty stop
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || { echo "FAIL: stop: exit $rc (0 or 124 = hung)"; cat "$WORK/stop.log"; exit 1; }
grep -q "rank 1.*No space left on device" "$WORK/stop.log" && grep -q "shard-00001-of-00002.bin" "$WORK/stop.log" ||
  { echo "FAIL: stop: rank 1's message is missing"; cat "$WORK/stop.log"; exit 1; }
ck=$WORK/stop/checkpoints
[ -f "$ck/step_00000002/meta.json" ] || { echo "FAIL: stop: the step-2 checkpoint is gone"; ls -la "$ck"; exit 1; }
[ "$(ls "$ck")" = "step_00000002" ] || { echo "FAIL: stop: expected only step_00000002, found: $(ls "$ck")"; exit 1; }
"$BIN/competelm-inspect" "$ck/step_00000002" >/dev/null || { echo "FAIL: stop: step 2 does not verify"; exit 1; }
run_ranks 2 "$WORK/stop" configs/tiny-moe.yaml "${common[@]}" --resume >"$WORK/resume.log" 2>&1 ||
  { echo "FAIL: resume after the failure"; cat "$WORK/resume.log"; exit 1; }
[ -f "$ck/step_00000004/meta.json" ] || { echo "FAIL: the resumed run did not save step 4"; exit 1; }
echo "stop: exit $rc with: $(grep -m1 'No space left' "$WORK/stop.log" | cut -c1-220)"

# 2. on_error = continue: every rank takes the same decision and training goes on. The "disk"
# stays full on rank 1, so steps 4 and 6 fail too and the run exits non-zero (final checkpoint
# missing, docs/reliability.md); what matters: no partial checkpoint, no hang, all 6 steps.
run_faulty cont --set checkpoint.on_error=continue --set train.steps=6 --set log.every=1
[ "$rc" -ne 124 ] || { echo "FAIL: continue: hung"; cat "$WORK/cont.log"; exit 1; }
[ "$(ls "$WORK/cont/checkpoints")" = "step_00000002" ] ||
  { echo "FAIL: continue: expected only step_00000002, found: $(ls "$WORK/cont/checkpoints")"; exit 1; }
[ "$(wc -l <"$WORK/cont/metrics.jsonl")" -ge 6 ] || { echo "FAIL: continue: training stopped"; cat "$WORK/cont.log"; exit 1; }
echo "continue: exit $rc, $(grep -c 'Training continues' "$WORK/cont.log") warnings"
echo "PASS"
