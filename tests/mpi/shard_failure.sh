#!/usr/bin/env bash
# A shard that cannot be read ends a multi-rank job quickly (no rank left hanging in a
# collective), non-zero, with the failing rank's message naming the shard:
#   1. a train shard whose body checksum does not match: every rank refuses it at start;
#   2. a train shard truncated mid-run so that only rank 1's samples are gone: rank 1 fails
#      its read while rank 0 is already waiting in the step's all-reduce.
TRAIN=$1
source "$(dirname "$0")/mpi_common.sh"
TOOL=(python3 "$SRC/tests/integration/write_shards.py")
LIMIT=60  # seconds within which the job must be gone (generous: a loaded CI machine)

# Shuffle off, so shard 0 is read first, then shard 1 from its first sample. Shard 0 holds
# (128001-1)/16 = 8000 samples = 2000 global micro-batches of 2 ranks × 2 (a second or more of
# steps, time to truncate shard 1 before it is reached): shard 1 then starts a global
# micro-batch, rank 0 taking its samples 0-1 (tokens 0..32), rank 1 samples 2-3 (32..64).
SHARD0_STEPS=2000
D=$WORK/data
mkdir -p "$D"
"${TOOL[@]}" shards "$D" s train_000000:128001 train_000001:4000 val_000000:1000
cp -a "$D" "$WORK/pristine"
cat >"$WORK/cfg.yaml" <<YAML
run: {seed: 5, device: cpu, threads: 1}
model: {n_layer: 1, d_model: 16, n_head: 2, seq_len: 16, vocab_size: 64}
data: {train: "$D/s_train_*.bin", val: "$D/s_val_*.bin", shuffle: false}
train: {steps: 100000, micro_batch: 2}
checkpoint: {every: 0}
eval: {every: 0, sample_every: 0}
log: {every: 1, level: warn}
YAML
VICTIM=$D/s_train_000001.bin

# run_job NAME: mpirun -np 2 in the background, its pid in $job, output in $WORK/NAME.log.
run_job() {
  mpirun -np 2 "$TRAIN" "$WORK/cfg.yaml" --set "run.dir=$WORK/$1" --quiet >"$WORK/$1.log" 2>&1 &
  job=$!
}
# finish NAME T0: waits ≤ LIMIT s from T0 for the job; checks a non-zero exit naming the shard.
finish() {
  for _ in $(seq 1 $((LIMIT * 10))); do kill -0 "$job" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$job" 2>/dev/null; then
    echo "FAIL: $1: job still running $LIMIT s later (hang)"; cat "$WORK/$1.log"; kill -9 "$job"; exit 1
  fi
  set +e; wait "$job"; rc=$?; set -e
  dt=$(python3 -c "import time; print(f'{time.time() - $2:.1f}')")
  [ "$rc" -ne 0 ] || { echo "FAIL: $1: job exited 0"; cat "$WORK/$1.log"; exit 1; }
  grep -q "rank [0-9].*$VICTIM" "$WORK/$1.log" ||
    { echo "FAIL: $1: no rank's message names $VICTIM"; cat "$WORK/$1.log"; exit 1; }
}

# 1. Corrupt body: refused before the first step.
"${TOOL[@]}" flip "$VICTIM" mid
t0=$(date +%s.%N)
run_job corrupt
finish corrupt "$t0"
grep -q "body checksum does not match" "$WORK/corrupt.log" || { echo "FAIL: corrupt: checksum not named"; cat "$WORK/corrupt.log"; exit 1; }
[ ! -s "$WORK/corrupt/metrics.jsonl" ] || { echo "FAIL: corrupt: steps were trained"; exit 1; }
echo "corrupt body: job ended in ${dt}s (exit $rc) with: $(grep -m1 'body checksum' "$WORK/corrupt.log" | cut -c1-200)"

# 2. Truncated mid-run, to 40 tokens: rank 0's first window of shard 1 (tokens 0..16, 16..32)
# is still there, rank 1's (32..48, 48..64) is not.
rm -rf "$D" && cp -a "$WORK/pristine" "$D"
run_job truncated
for _ in $(seq 1 300); do
  [ -f "$WORK/truncated/metrics.jsonl" ] && [ "$(wc -l <"$WORK/truncated/metrics.jsonl")" -ge 3 ] && break
  sleep 0.1
done
[ "$(wc -l <"$WORK/truncated/metrics.jsonl" 2>/dev/null || echo 0)" -ge 3 ] ||
  { echo "FAIL: truncated: the job never logged 3 steps"; cat "$WORK/truncated.log"; kill -9 "$job"; exit 1; }
truncate -s $((1024 + 2 * 40)) "$VICTIM"
t0=$(date +%s.%N)
finish truncated "$t0"
steps=$(wc -l <"$WORK/truncated/metrics.jsonl")
grep -q "rank 1.*$VICTIM.*read of tokens \[32, 49)" "$WORK/truncated.log" ||
  { echo "FAIL: truncated: rank 1's failed read not reported"; cat "$WORK/truncated.log"; exit 1; }
[ "$steps" -eq "$SHARD0_STEPS" ] ||
  { echo "FAIL: truncated: $steps steps logged, expected the failure at the first shard-1 step ($((SHARD0_STEPS + 1)))"; exit 1; }
echo "truncated mid-run: job ended ${dt}s after the truncation (exit $rc, $steps steps done) with: $(grep -m1 "rank 1.*$VICTIM" "$WORK/truncated.log" | cut -c1-200)"
echo "PASS"
