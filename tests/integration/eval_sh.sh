#!/usr/bin/env bash
# scripts/eval.sh end to end: a tiny CompeteSMoE run on synthetic shards, then the standard
# evaluation of its newest checkpoint: RUN_DIR/eval/step_N.json and RUN_DIR/eval.json hold
# the trainer's own val_loss and the routing statistics, the checkpoint directory is left
# untouched, and a run without checkpoints is a clear error.
set -uo pipefail
TRAIN=$1
EVAL=$2
PYTHON=${3:-/usr/bin/python3}
SRC=$(cd "$(dirname "$0")/../.." && pwd)
TMP=$(mktemp -d /tmp/competelm-evalsh.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# Shards in llm.c's format (uint16 tokens) of a learnable pattern over 64 ids.
"$PYTHON" "$SRC/tests/integration/write_shards.py" shards "$TMP" t train_000000:20000 val_000000:2000
cat >"$TMP/tiny.yaml" <<YAML
run: {dir: $TMP/run, seed: 3, device: cpu, threads: 1}
model: {n_layer: 2, d_model: 32, n_head: 4, seq_len: 16, vocab_size: 64}
moe: {n_experts: 4, top_k: 2, router: competesmoe, competition_rate: 0.5}
data: {train: "$TMP/t_train_*.bin", val: "$TMP/t_val_*.bin"}
train: {steps: 6, micro_batch: 4}
checkpoint: {every: 3}
eval: {every: 3, val_batches: 3}
log: {level: warn}
YAML
"$TRAIN" "$TMP/tiny.yaml" --quiet || fail "training failed"
CK="$TMP/run/checkpoints/step_00000006"
before=$(ls "$CK")

out=$(EVAL_BIN=$EVAL EVAL_ARGS="--threads 1" bash "$SRC/scripts/eval.sh" "$TMP/run" 2>&1) || fail "eval.sh exited $?: $out"
echo "$out"
[ -f "$TMP/run/eval/step_00000006.json" ] || fail "eval/step_00000006.json not written"
[ -f "$TMP/run/eval/step_00000006.txt" ] || fail "eval/step_00000006.txt not written"
cmp -s "$TMP/run/eval/step_00000006.json" "$TMP/run/eval.json" || fail "eval.json is not a copy of the newest"
[ "$before" = "$(ls "$CK")" ] || fail "the checkpoint directory was written to"
"$PYTHON" - "$TMP/run" <<'PY' || fail "eval.json does not match the trainer"
import json, sys
run = sys.argv[1]
ev = json.load(open(f"{run}/eval.json"))
meta = json.load(open(f"{run}/checkpoints/step_00000006/meta.json"))
assert ev["step"] == 6, ev["step"]
assert abs(ev["lm"]["loss"] - meta["val_loss"]) <= 1e-5 * meta["val_loss"], (ev["lm"]["loss"], meta["val_loss"])
assert ev["lm"]["tokens"] == 3 * 4 * 16
layers = ev["routing"]["layers"]
assert len(layers) == 2 and all(sum(l["tokens_per_expert"]) == 2 * 3 * 4 * 16 for l in layers)
assert all(l["overlap"] is not None for l in layers)
print("ok: eval.json loss", ev["lm"]["loss"], "== meta.json val_loss", meta["val_loss"])
PY

# A given (older) checkpoint.
EVAL_BIN=$EVAL EVAL_ARGS="--threads 1" bash "$SRC/scripts/eval.sh" "$TMP/run" "$TMP/run/checkpoints/step_00000003" >/dev/null 2>&1 \
  || fail "eval.sh with a given checkpoint failed"
[ -f "$TMP/run/eval/step_00000003.json" ] || fail "eval/step_00000003.json not written"

# No checkpoint.
mkdir -p "$TMP/empty_run"
out=$(EVAL_BIN=$EVAL bash "$SRC/scripts/eval.sh" "$TMP/empty_run" 2>&1) && fail "no error for a run without checkpoints"
grep -q "has no checkpoint" <<<"$out" || fail "unclear error: $out"
echo "ok: $out"

[ $fails -eq 0 ] && echo "eval.sh checks passed"
exit $fails
