#!/usr/bin/env bash
# Corrupt inputs are refused, never trained on: a tiny run writes checkpoints; then every
# file of the newest checkpoint gets one flipped byte (in its middle), and separately is cut
# to half its size, and `competelm-train --resume` (checkpoint.fallback off) and
# `competelm-eval` must each exit non-zero (an error, not a signal or a hang) with a message
# naming that file. The same for token shards (header byte, checksum slot, body byte,
# truncation) and for YAML configs. Prints a table of the cases and a count.
#   corrupt_inputs.sh COMPETELM_TRAIN COMPETELM_EVAL
set -uo pipefail
TRAIN=$1
EVAL=$2
HERE=$(cd "$(dirname "$0")" && pwd)
TOOL=(python3 "$HERE/write_shards.py")
TMP=$(mktemp -d /tmp/competelm-corrupt.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
LIMIT=60  # seconds a refusal may take (a hang fails the case)

cases=0 fails=0
ROWS=()
# expect_refused NAME NEEDLE CMD...: CMD must exit 1..123 (124 = timeout, >= 128 = signal)
# with NEEDLE (a fixed string) in its output.
expect_refused() {
  local name=$1 needle=$2
  shift 2
  cases=$((cases + 1))
  timeout "$LIMIT" "$@" >"$TMP/out.log" 2>&1
  local rc=$? outcome=ok
  if [ "$rc" -eq 0 ]; then outcome="FAIL: accepted"
  elif [ "$rc" -eq 124 ]; then outcome="FAIL: hung (> ${LIMIT}s)"
  elif [ "$rc" -ge 128 ]; then outcome="FAIL: signal $((rc - 128))"
  elif ! grep -aqF -- "$needle" "$TMP/out.log"; then outcome="FAIL: '$needle' not in the message"
  fi
  local msg
  msg=$(grep -a -m1 -i "error" "$TMP/out.log" | sed "s|$TMP/||g" | cut -c1-150)
  [ -n "$msg" ] || msg=$(head -n 1 "$TMP/out.log" | cut -c1-150)
  ROWS+=("$(printf '%-44s rc=%-3s %-8s %s' "$name" "$rc" "${outcome%%:*}" "$msg")")
  if [ "$outcome" != ok ]; then
    fails=$((fails + 1))
    echo "---- $name: $outcome; output:"
    cat "$TMP/out.log"
  fi
}

# ---- a tiny run with checkpoints at steps 2 and 4 -----------------------------------------------
D=$TMP/data
mkdir -p "$D"
"${TOOL[@]}" shards "$D" t train_000000:6000 train_000001:6000 val_000000:2000
cat >"$TMP/tiny.yaml" <<YAML
run: {dir: $TMP/run, seed: 3, device: cpu, threads: 1}
model: {n_layer: 2, d_model: 32, n_head: 4, seq_len: 16, vocab_size: 64}
data: {train: "$D/t_train_*.bin", val: "$D/t_val_*.bin"}
train: {steps: 4, micro_batch: 4}
checkpoint: {every: 2, keep: 2, fallback: false}
eval: {every: 2, val_batches: 2, sample_every: 0}
log: {level: warn}
YAML
"$TRAIN" "$TMP/tiny.yaml" --quiet || { echo "FAIL: the clean run failed"; exit 1; }
CK=step_00000004
[ -f "$TMP/run/checkpoints/$CK/meta.json" ] || { echo "FAIL: no checkpoint $CK"; exit 1; }
cp -a "$TMP/run" "$TMP/pristine"
cp -a "$D" "$TMP/pristine_data"
restore() {
  rm -rf "$TMP/run" "$D"
  cp -a "$TMP/pristine" "$TMP/run"
  cp -a "$TMP/pristine_data" "$D"
}
# Sanity: the untouched checkpoint resumes and evaluates (so the refusals below are real).
timeout "$LIMIT" "$TRAIN" "$TMP/tiny.yaml" --quiet --resume --set train.steps=6 >"$TMP/out.log" 2>&1 ||
  { echo "FAIL: resuming the clean checkpoint failed"; cat "$TMP/out.log"; exit 1; }
timeout "$LIMIT" "$EVAL" "$TMP/pristine/checkpoints/$CK" --threads 1 --device cpu >"$TMP/out.log" 2>&1 ||
  { echo "FAIL: evaluating the clean checkpoint failed"; cat "$TMP/out.log"; exit 1; }

# ---- every file of the newest checkpoint: one flipped byte, then truncation --------------------
files=$(ls "$TMP/pristine/checkpoints/$CK")
[ "$(echo "$files" | wc -w)" -ge 4 ] || { echo "FAIL: expected >= 4 files in $CK, got: $files"; exit 1; }
for f in $files; do
  for how in flip truncate; do
    restore
    if [ $how = flip ]; then "${TOOL[@]}" flip "$TMP/run/checkpoints/$CK/$f" mid
    else "${TOOL[@]}" truncate "$TMP/run/checkpoints/$CK/$f" half; fi
    expect_refused "ckpt $f $how: train --resume" "$f" \
      "$TRAIN" "$TMP/tiny.yaml" --quiet --resume --set train.steps=6
    expect_refused "ckpt $f $how: eval" "$f" "$EVAL" "$TMP/run/checkpoints/$CK" --threads 1 --device cpu
  done
done

# ---- token shards -------------------------------------------------------------------------------
# A fresh run on damaged shards: refused at start, naming the shard (and the field).
fresh=(--quiet --set "run.dir=$TMP/fresh")
shard_case() {  # shard_case NAME SHARD NEEDLE CORRUPTION...
  local name=$1 shard=$2 needle=$3
  shift 3
  restore
  rm -rf "$TMP/fresh"
  "${TOOL[@]}" "$@"
  expect_refused "$name: train" "$shard" "$TRAIN" "$TMP/tiny.yaml" "${fresh[@]}"
  grep -aqF -- "$needle" "$TMP/out.log" || { echo "FAIL: $name: '$needle' not said"; fails=$((fails + 1)); }
}
T0=$D/t_train_000000.bin
V0=$D/t_val_000000.bin
shard_case "train shard magic byte flipped" "$T0" "bad magic" flip "$T0" 1
shard_case "train shard version byte flipped" "$T0" "version" flip "$T0" 4
shard_case "train shard count byte flipped" "$T0" "tokens" flip "$T0" 9
shard_case "train shard checksum tag flipped" "$T0" "header int 3" flip "$T0" 13
shard_case "train shard checksum flipped" "$T0" "body checksum does not match" flip "$T0" 17
shard_case "train shard reserved header byte flipped" "$T0" "byte offset 800" flip "$T0" 801
shard_case "train shard body byte flipped" "$T0" "body checksum does not match" flip "$T0" mid
shard_case "train shard last byte flipped" "$T0" "body checksum does not match" flip "$T0" $((1024 + 12000 - 1))
shard_case "train shard truncated" "$T0" "truncated" truncate "$T0" half
shard_case "val shard body byte flipped" "$V0" "body checksum does not match" flip "$V0" mid
# competelm-eval on a damaged shard (--shards and the config's data.val).
restore
"${TOOL[@]}" flip "$V0" mid
expect_refused "val shard body flipped: eval (data.val)" "$V0" "$EVAL" "$TMP/run/checkpoints/$CK" --threads 1 --device cpu
restore
"${TOOL[@]}" truncate "$T0" 2000
expect_refused "train shard truncated: eval --shards" "$T0" \
  "$EVAL" "$TMP/run/checkpoints/$CK" --threads 1 --device cpu --shards "$T0"
# llm.c shards carry no checksum: a flipped body byte there is caught only when it puts a token
# outside the vocabulary (here 64 → 65 at the last token).
restore
rm -f "$D"/t_*.bin
"${TOOL[@]}" shards "$D" t train_000000:6000 val_000000:2000 --no-checksum
python3 - "$T0" <<'PY'
import struct, sys
with open(sys.argv[1], "r+b") as f:
    f.seek(1024 + 2 * 3000)
    f.write(struct.pack("<H", 65))
PY
expect_refused "llm.c shard, token 65 >= vocab 64: train" "outside the vocabulary" \
  "$TRAIN" "$TMP/tiny.yaml" "${fresh[@]}" --set train.steps=2000 --set eval.every=0 --set checkpoint.every=0

# ---- configs ------------------------------------------------------------------------------------
# The YAML on the command line: one flipped byte in a key, in the structure, in a value's type.
yaml_case() {  # yaml_case NAME SED-EXPRESSION
  restore
  rm -rf "$TMP/fresh"
  sed "$2" "$TMP/tiny.yaml" >"$TMP/bad.yaml"
  cmp -s "$TMP/tiny.yaml" "$TMP/bad.yaml" && { echo "FAIL: $1: the sed changed nothing"; fails=$((fails + 1)); }
  expect_refused "$1" "bad.yaml" "$TRAIN" "$TMP/bad.yaml" "${fresh[@]}"
}
yaml_case "config: key byte flipped (steps -> stdps)" 's/steps: 4/stdps: 4/'
yaml_case "config: ':' flipped to ';'" 's/micro_batch: 4/micro_batch; 4/'
yaml_case "config: '{' flipped to 'z'" 's/^model: {/model: z/'
yaml_case "config: number flipped to a letter" 's/n_head: 4/n_head: t/'
yaml_case "config: byte 0xff in a key" "s/seed/s$(printf '\xff')ed/"
# The checkpoint's config.yaml still valid after an edit (n_head 4 -> 2): the checksum catches it.
restore
sed -i 's/n_head: 4 /n_head: 2 /' "$TMP/run/checkpoints/$CK/config.yaml"
expect_refused "ckpt config.yaml valid edit: eval" "config.yaml: checksum mismatch" \
  "$EVAL" "$TMP/run/checkpoints/$CK" --threads 1 --device cpu
expect_refused "ckpt config.yaml valid edit: train --resume" "config.yaml: checksum mismatch" \
  "$TRAIN" "$TMP/tiny.yaml" --quiet --resume --set train.steps=6
# RUN_DIR/config.yaml is an output (the resolved config, rewritten at every start), not read
# back: damaging it must not stop a resume, and the resume rewrites it.
restore
timeout "$LIMIT" "$TRAIN" "$TMP/tiny.yaml" --quiet --resume --set train.steps=6 >"$TMP/out.log" 2>&1
cp "$TMP/run/config.yaml" "$TMP/expected_config.yaml"
restore
"${TOOL[@]}" flip "$TMP/run/config.yaml" mid
cases=$((cases + 1))
row="run dir config.yaml flipped: train --resume"
if timeout "$LIMIT" "$TRAIN" "$TMP/tiny.yaml" --quiet --resume --set train.steps=6 >"$TMP/out.log" 2>&1 &&
   cmp -s "$TMP/run/config.yaml" "$TMP/expected_config.yaml"; then
  ROWS+=("$(printf '%-44s rc=%-3s %-8s %s' "$row" 0 ok "not an input: resumed, file rewritten")")
else
  fails=$((fails + 1))
  ROWS+=("$(printf '%-44s %-6s %-8s' "$row" "" FAIL)")
  cat "$TMP/out.log"
fi

echo
printf '%-44s %-6s %-8s %s\n' CASE EXIT OUTCOME "MESSAGE (paths relative to the test's temp dir)"
printf '%s\n' "${ROWS[@]}"
echo
echo "$((cases - fails)) of $cases cases as expected"
[ "$fails" -eq 0 ] && echo PASS || { echo "FAIL: $fails"; exit 1; }
