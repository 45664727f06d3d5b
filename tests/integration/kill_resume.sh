#!/usr/bin/env bash
# kill -9 at random moments, 20 times in a row, resuming with --resume after each: no
# checkpoint is ever lost or left half-written, temporary directories are ignored and cleaned
# up, and the run ends with exactly the final loss of an uninterrupted run.
#
# The test-only COMPETELM_TEST_CHECKPOINT_SLOW_MS pauses between the files of each checkpoint
# write, so that a good share of the kills lands inside a write (detected by the writer's
# step_*.tmp-<pid> directory being there right after the kill).
# Usage: kill_resume.sh COMPETELM-TRAIN COMPETELM-INSPECT
# Env: KILL_RESUME_SEED (the delays; default 20240611), KILL_RESUME_KILLS (default 20).
set -euo pipefail
TRAIN=$1
INSPECT=$2
SRC=$(cd "$(dirname "$0")/../.." && pwd)
cd "$SRC"
WORK=$(mktemp -d /tmp/competelm-kill.XXXXXX)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill -9 "$pid" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
PYTHON=/usr/bin/python3
[ -x "$PYTHON" ] || PYTHON=python3
now_ms() { echo $(($(date +%s%N) / 1000000)); }
secs() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }  # ms → seconds
t_start=$(now_ms)

# Shards in llm.c's format (uint16 tokens) of a learnable pattern over 64 ids.
"$PYTHON" "$SRC/tests/integration/write_shards.py" shards "$WORK" k train_000000:60000 val_000000:2000

STEPS=400
KILLS=${KILL_RESUME_KILLS:-20}
RANDOM=${KILL_RESUME_SEED:-20240611}
SLOW_MS=20
common=(configs/tiny.yaml --set model.vocab_size=64 --set model.d_model=48 --set model.seq_len=32
        --set "data.train=$WORK/k_train_*.bin" --set "data.val=$WORK/k_val_*.bin"
        --set train.steps=$STEPS --set checkpoint.every=5 --set checkpoint.keep=2
        --set eval.every=0 --set eval.sample_every=0 --set run.threads=1 --quiet)

last_record() { tail -n 1 "$1/metrics.jsonl"; }
field() { sed -n "s/.*\"$2\": *\([^,}]*\).*/\1/p" <<<"$1"; }

# ---- the uninterrupted reference -----------------------------------------------------------
t0=$(now_ms)
"$TRAIN" "${common[@]}" --set "run.dir=$WORK/ref"
t_ref=$(secs $(($(now_ms) - t0)))
ref=$(last_record "$WORK/ref")
ref_loss=$(field "$ref" loss)
[ "$(field "$ref" step)" -eq "$STEPS" ] || fail "the reference run did not reach step $STEPS"
echo "reference: $STEPS steps in ${t_ref}s, final loss $ref_loss"

# ---- 20 kills ------------------------------------------------------------------------------
RUN=$WORK/run
CK=$RUN/checkpoints
logged=0 kills=0 in_write=0 resumes=0 from_scratch=0 recomputed=0 lost=0 newest=-1
declare -A tmp_seen=()
export COMPETELM_TEST_CHECKPOINT_SLOW_MS=$SLOW_MS
for i in $(seq 1 "$KILLS"); do
  args=("${common[@]}" --set "run.dir=$RUN")
  if [ "$i" -gt 1 ]; then
    args+=(--resume)
    resumes=$((resumes + 1))
    [ "$newest" -lt 0 ] && from_scratch=$((from_scratch + 1))
  fi
  "$TRAIN" "${args[@]}" &
  pid=$!
  # One kill in five lands at a random moment of the start-up (0.3-1 s: a short sgemm
  # benchmark, model init, loading the checkpoint); the others at a random moment once this
  # process has logged a step past the last one logged before (a step takes ~6 ms, a
  # checkpoint with its pauses ~100).
  if [ $((RANDOM % 5)) -eq 0 ]; then
    delay=$((RANDOM % 600))
    when="${delay} ms after the start"
  else
    for _ in $(seq 1 3000); do  # ≤ 30 s
      [ -s "$RUN/metrics.jsonl" ] && [ "$(field "$(last_record "$RUN")" step)" -gt "$logged" ] && break
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.01
    done
    delay=$((RANDOM % 300))
    when="${delay} ms after its first new step"
  fi
  sleep "$(secs "$delay")"
  if ! kill -0 "$pid" 2>/dev/null; then
    wait "$pid" || true
    fail "kill $i: the trainer ended before it was killed (raise STEPS)"
  fi
  kill -9 "$pid"
  wait "$pid" 2>/dev/null || true
  kills=$((kills + 1))

  # Killed inside a checkpoint write: the writer's temporary directory is still there.
  during=no
  for d in "$CK"/step_*.tmp-"$pid"; do
    [ -d "$d" ] && during=yes
  done
  [ $during = yes ] && in_write=$((in_write + 1))
  for d in "$CK"/*.tmp-*; do
    [ -e "$d" ] && tmp_seen["$(basename "$d")"]=1
  done

  # Every checkpoint the trainer would consider (non-temporary) is complete and verifies.
  now=-1
  for d in "$CK"/step_*; do
    [ -d "$d" ] || continue
    case "$(basename "$d")" in *.tmp-*) continue ;; esac
    if ! "$INSPECT" "$d" >/dev/null 2>"$WORK/inspect.err"; then
      lost=$((lost + 1))
      echo "kill $i: $d does not verify: $(cat "$WORK/inspect.err")"
      continue
    fi
    s=$((10#$(basename "$d" | sed 's/step_//')))
    [ "$s" -gt "$now" ] && now=$s
  done
  if [ "$now" -lt "$newest" ]; then
    lost=$((lost + 1))
    echo "kill $i: the newest checkpoint went back from step $newest to $now"
  fi
  newest=$now
  logged=0
  [ -s "$RUN/metrics.jsonl" ] && logged=$(field "$(last_record "$RUN")" step)
  redo=$((logged - (newest < 0 ? 0 : newest)))
  [ "$redo" -ge 0 ] || fail "kill $i: metrics.jsonl ends at step $logged, before the checkpoint at $newest"
  recomputed=$((recomputed + redo))
  echo "kill $i ${when}: logged step $logged, newest checkpoint $newest, during a write: $during"
done
pid=

# ---- the last resume runs to the end ---------------------------------------------------------
unset COMPETELM_TEST_CHECKPOINT_SLOW_MS
"$TRAIN" "${common[@]}" --set "run.dir=$RUN" --resume
resumes=$((resumes + 1))
final=$(last_record "$RUN")
[ "$(field "$final" step)" -eq "$STEPS" ] || fail "the resumed run ended at step $(field "$final" step), not $STEPS"
for d in "$CK"/*; do
  case "$(basename "$d")" in *.tmp-*) fail "temporary directory $(basename "$d") was not cleaned up" ;; esac
  "$INSPECT" "$d" >/dev/null || fail "$d does not verify"
done
for t in "${!tmp_seen[@]}"; do
  [ ! -e "$CK/$t" ] || fail "temporary directory $t was not cleaned up"
done
# Every step's loss (metrics.jsonl is rewound on each resume) and the final one, as printed.
steps_logged=$(wc -l <"$RUN/metrics.jsonl")
[ "$steps_logged" -eq "$STEPS" ] || fail "metrics.jsonl has $steps_logged records, expected $STEPS"
diff <(sed 's/.*"loss": *\([^,}]*\).*/\1/' "$WORK/ref/metrics.jsonl") \
     <(sed 's/.*"loss": *\([^,}]*\).*/\1/' "$RUN/metrics.jsonl") >/dev/null ||
  fail "the losses of the interrupted run differ from the reference run's"
final_loss=$(field "$final" loss)
[ "$final_loss" = "$ref_loss" ] || fail "final loss $final_loss differs from the uninterrupted run's $ref_loss"
[ "$lost" -eq 0 ] || fail "$lost checkpoint(s) lost or corrupted"
[ "$in_write" -ge 1 ] || fail "no kill landed inside a checkpoint write (raise COMPETELM_TEST_CHECKPOINT_SLOW_MS)"

t_total=$(secs $(($(now_ms) - t_start)))
echo "kills: $kills, during a checkpoint write: $in_write, resumes: $resumes ($from_scratch from scratch)," \
     "steps recomputed: $recomputed, temporary dirs left by kills and cleaned: ${#tmp_seen[@]}," \
     "checkpoints lost: $lost"
echo "final loss $final_loss at step $STEPS = the uninterrupted run's; ${t_total}s in all"
