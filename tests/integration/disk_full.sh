#!/usr/bin/env bash
# A checkpoint write that runs out of disk space, under checkpoint.on_error: stop and continue.
# The run directory lives on a real 2 MiB tmpfs (when this user may mount one), filled so that
# exactly one checkpoint fits; otherwise the test-only COMPETELM_TEST_CHECKPOINT_FULL_AFTER
# hook makes the checkpoint writer fail the same way after as many bytes.
#   stop:     exit non-zero, the error names the file, "No space left on device" and the fix;
#             the previous checkpoint verifies; with space again --resume finishes the run.
#   continue: a warning per failed write, training goes on to the last step with the same
#             losses, the summary counts the failures, exit code 4 (final state not saved);
#             with space again --resume finishes the run.
# Usage: disk_full.sh COMPETELM-TRAIN COMPETELM-INSPECT (DISK_FULL_USE_HOOK=1: the hook even as root)
set -euo pipefail
TRAIN=$1
INSPECT=$2
SRC=$(cd "$(dirname "$0")/../.." && pwd)
cd "$SRC"
WORK=$(mktemp -d /tmp/competelm-diskfull.XXXXXX)
DISK=$WORK/disk
mkdir -p "$DISK"
mounted=no
cleanup() {
  if [ $mounted = yes ]; then umount "$DISK" || umount -l "$DISK" || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
PYTHON=/usr/bin/python3
[ -x "$PYTHON" ] || PYTHON=python3

# Shards in llm.c's format (uint16 tokens) of a learnable pattern over 64 ids.
"$PYTHON" "$SRC/tests/integration/write_shards.py" shards "$WORK" d train_000000:20000 val_000000:2000
common=(configs/tiny.yaml --set model.vocab_size=64 --set model.d_model=32 --set model.seq_len=16
        --set "data.train=$WORK/d_train_*.bin" --set "data.val=$WORK/d_val_*.bin"
        --set train.steps=10 --set checkpoint.every=2 --set checkpoint.keep=2
        --set eval.every=0 --set eval.sample_every=0 --set run.threads=1 --quiet)
field() { sed -n "s/.*\"$2\": *\([^,}]*\).*/\1/p" <<<"$1"; }
losses() { sed 's/.*"loss": *\([^,}]*\).*/\1/' "$1/metrics.jsonl"; }

# The uninterrupted reference, and the size of one checkpoint (in 4 KiB pages, as tmpfs counts).
"$TRAIN" "${common[@]}" --set "run.dir=$WORK/ref" --set checkpoint.keep=10
one=0
for f in "$WORK"/ref/checkpoints/step_00000002/*; do
  one=$((one + ($(stat -c %s "$f") + 4095) / 4096 * 4096))
done
ref_loss=$(field "$(tail -n 1 "$WORK/ref/metrics.jsonl")" loss)

if [ -z "${DISK_FULL_USE_HOOK:-}" ] && [ "$(id -u)" -eq 0 ] && mount -t tmpfs -o size=2m tmpfs "$DISK" 2>/dev/null; then
  mounted=yes
  how="a real 2 MiB tmpfs"
else
  how="the COMPETELM_TEST_CHECKPOINT_FULL_AFTER hook (no tmpfs: not permitted here, or DISK_FULL_USE_HOOK set)"
fi
echo "disk full via $how; one checkpoint = $one bytes"

# Leaves room for one checkpoint and a half (plus 64 KiB for the logs): the write at step 2
# fits, the one at step 4 runs out of space.
fill_disk() {
  if [ $mounted = yes ]; then
    rm -f "$DISK/filler"
    local avail
    avail=$(df -B1 --output=avail "$DISK" | tail -n 1 | tr -d ' ')
    local fill=$(((avail - one * 3 / 2 - 65536) / 4096))
    [ "$fill" -gt 0 ] || fail "the tmpfs is too small for this test's checkpoints"
    dd if=/dev/zero of="$DISK/filler" bs=4096 count="$fill" status=none
  else
    export COMPETELM_TEST_CHECKPOINT_FULL_AFTER=$((one * 3 / 2))
  fi
}
free_disk() {
  if [ $mounted = yes ]; then rm -f "$DISK/filler"; else unset COMPETELM_TEST_CHECKPOINT_FULL_AFTER; fi
}
check_previous() {  # $1 = run dir: only the step-2 checkpoint, complete and verified
  local ck
  ck=$(ls "$1/checkpoints")
  [ "$ck" = step_00000002 ] || fail "checkpoints after the failure: $(echo $ck) (expected step_00000002 only)"
  "$INSPECT" "$1/checkpoints/step_00000002" >/dev/null || fail "the previous checkpoint does not verify"
}
resume_to_end() {  # $1 = run dir: with space again, --resume finishes with the reference's losses
  "$TRAIN" "${common[@]}" --set "run.dir=$1" --set checkpoint.on_error=stop --resume ||
    fail "resuming $1 after freeing space failed"
  [ "$(ls "$1/checkpoints" | tail -n 1)" = step_00000010 ] || fail "no final checkpoint in $1"
  diff <(losses "$WORK/ref") <(losses "$1") >/dev/null || fail "$1: losses differ from the reference run's"
}

# ---- stop --------------------------------------------------------------------------------------
fill_disk
set +e
"$TRAIN" "${common[@]}" --set "run.dir=$DISK/stop" 2>"$WORK/stop.err"
rc=$?
set -e
cat "$WORK/stop.err"
[ $rc -ne 0 ] || fail "stop: the run exited 0 although a checkpoint could not be written"
grep -q "No space left on device" "$WORK/stop.err" || fail "stop: the error does not give the cause"
grep -q "step_00000004.tmp-[0-9]*/[a-z]*\.[a-z]*" "$WORK/stop.err" || fail "stop: the error does not name the file"
grep -q "hint:.*free space.*checkpoint.on_error: continue" "$WORK/stop.err" || fail "stop: no hint"
[ "$(wc -l <"$DISK/stop/metrics.jsonl")" -eq 4 ] || fail "stop: the run did not end at step 4"
check_previous "$DISK/stop"
echo "stop: exit $rc at step 4, previous checkpoint step 2 intact"
free_disk
resume_to_end "$DISK/stop"
echo "stop: resumed after freeing space, final loss $ref_loss = the reference's"
rm -rf "$DISK/stop"

# ---- continue ------------------------------------------------------------------------------------
fill_disk
set +e
"$TRAIN" "${common[@]}" --set "run.dir=$DISK/cont" --set checkpoint.on_error=continue 2>"$WORK/cont.err"
rc=$?
set -e
[ $rc -eq 4 ] || { cat "$WORK/cont.err"; fail "continue: exit code $rc, expected 4 (final checkpoint not saved)"; }
warnings=$(grep -c "No space left on device.*Training continues" "$WORK/cont.err" || true)
[ "$warnings" -eq 4 ] || fail "continue: $warnings warnings, expected 4 (steps 4, 6, 8, 10)"
grep -q "done: 10 steps.*4 checkpoint write(s) failed" "$WORK/cont.err" || fail "continue: the summary does not count the failures"
diff <(losses "$WORK/ref") <(losses "$DISK/cont") >/dev/null || fail "continue: losses differ from the reference run's"
check_previous "$DISK/cont"
tail -n 1 "$WORK/cont.err"
echo "continue: exit $rc, $warnings failed writes warned, training reached step 10 with the reference's losses"
free_disk
resume_to_end "$DISK/cont"
echo "continue: resumed after freeing space, final loss $ref_loss = the reference's"
echo "disk full ($how): OK"
