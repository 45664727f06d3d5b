#!/usr/bin/env bash
# Bad input to the trainer: a clear message naming the key / file, a non-zero exit, and no
# run directory work started.
set -uo pipefail
TRAIN=$1
SRC=$(cd "$(dirname "$0")/../.." && pwd)
cd "$SRC"
TMP=$(mktemp -d /tmp/competelm-cli.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
fails=0
expect() {  # expect "what" "pattern" cmd...
  local what=$1 pattern=$2; shift 2
  out=$("$@" 2>&1); rc=$?
  if [ $rc -eq 0 ] || ! grep -q -- "$pattern" <<<"$out"; then
    echo "FAIL: $what (rc=$rc): $out"; fails=$((fails + 1))
  else
    echo "ok: $what -> $(grep -m1 -- "$pattern" <<<"$out")"
  fi
}
expect "unknown key in --set" "did you mean" "$TRAIN" configs/tiny.yaml --set optim.lrr=1 --set "run.dir=$TMP/a"
expect "wrong type" "optim.lr" "$TRAIN" configs/tiny.yaml --set optim.lr=fast --set "run.dir=$TMP/a"
expect "missing config" "nope.yaml" "$TRAIN" nope.yaml
expect "unknown option" "unknown option" "$TRAIN" configs/tiny.yaml --frobnicate
expect "data glob matches nothing" "data.train" "$TRAIN" configs/tiny.yaml --set "data.train=$TMP/none_*.bin" --set "run.dir=$TMP/b"
printf 'run:\n  dir: %s/c\nmodel:\n  n_layr: 2\n' "$TMP" >"$TMP/bad.yaml"
expect "unknown key in file names file and line" "bad.yaml:4" "$TRAIN" "$TMP/bad.yaml"
[ ! -e "$TMP/a" ] || { echo "FAIL: a bad config created the run dir"; fails=$((fails + 1)); }
[ $fails -eq 0 ] && echo "all CLI error checks passed"
exit $fails
