#!/usr/bin/env bash
# GPU training throughput of competelm against PyTorch on the same model (the config's dense
# GPT-2 or MoE GPT-2), batch and sequence length: competelm-bench on CUDA, and
# tests/reference/bench_moe_torch.py eager and torch.compile'd, each in fp32 and bf16
# autocast. Prints a table of tokens/s and ours/torch against the issue's targets
# (≥ 1.5× eager, ≥ 1.2× compiled) and RESULT lines for scripts/gpu_check.sh's summary.
# competelm runs once per dtype: run.precision fp32 against torch fp32, and run.precision bf16
# (bf16 tensor-core products, fp32 storage) against torch's bf16 autocast.
#
#   scripts/bench_vs_torch_gpu.sh [CONFIG] [B] [T]     (default configs/gpt2-124m-moe.yaml 16 1024)
#
# Env: BENCH (default build-gpu/bin/competelm-bench, else build/bin/...), PYTHON (a python3 with
# torch built for CUDA; default the first such on PATH, then /usr/bin/python3), STEPS (10),
# WARMUP (3), DTYPES ("fp32 bf16"), MODES ("eager compiled").
set -uo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:-configs/gpt2-124m-moe.yaml}
B=${2:-16}
T=${3:-1024}
STEPS=${STEPS:-10}
WARMUP=${WARMUP:-3}
DTYPES=${DTYPES:-fp32 bf16}
MODES=${MODES:-eager compiled}
die() { echo "bench_vs_torch_gpu.sh: $*" >&2; exit 1; }

[ -f "$CONFIG" ] || die "config '$CONFIG' not found"
if [ -z "${BENCH:-}" ]; then
  for b in build-gpu/bin/competelm-bench build/bin/competelm-bench; do
    [ -x "$b" ] && { BENCH=$b; break; }
  done
fi
[ -n "${BENCH:-}" ] && [ -x "$BENCH" ] ||
  die "competelm-bench not found (BENCH=${BENCH:-unset}); build with CUDA first: scripts/gpu_check.sh or cmake --build build-gpu"
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 ||
  die "no NVIDIA GPU here (nvidia-smi missing or it lists no GPU); this comparison needs one"
if [ -z "${PYTHON:-}" ]; then
  for p in $(which -a python3 2>/dev/null) /usr/bin/python3; do
    "$p" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null && { PYTHON=$p; break; }
  done
fi
[ -n "${PYTHON:-}" ] && "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null ||
  die "no python3 with a CUDA-enabled torch (PYTHON=${PYTHON:-unset}); set PYTHON=/path/to/python3"
CONFIG_TOOL=$(dirname "$BENCH")/competelm-config

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# `RESULT ... tokens_per_s=<float> ...` -> <float> (empty when the run printed no RESULT)
tps_of() { sed -n 's/^RESULT .*tokens_per_s=\([0-9.eE+-]*\).*/\1/p' "$1" | tail -n 1; }

# competelm in each dtype: fp32 = run.precision fp32 (exact fp32 products), bf16 = bf16
# tensor-core products with fp32 storage and master weights (torch: bf16 autocast).
declare -A ours_tps
for dtype in $DTYPES; do
  echo "== competelm ($BENCH) $CONFIG B=$B T=$T, run.precision=$dtype"
  "$BENCH" "$CONFIG" --device cuda --set train.micro_batch="$B" --set model.seq_len="$T" --set run.precision="$dtype" \
    --steps "$STEPS" --warmup "$WARMUP" --no-profile 2>&1 | tee "$tmp/ours_$dtype.txt"
  ours_tps[$dtype]=$(tps_of "$tmp/ours_$dtype.txt")
  [ -n "${ours_tps[$dtype]}" ] || die "competelm-bench printed no RESULT line (see above)"
done

declare -A torch_tps
for dtype in $DTYPES; do
  for mode in $MODES; do
    echo "== PyTorch $mode $dtype ($PYTHON)"
    flag=""
    [ "$mode" = compiled ] && flag=--compile
    "$PYTHON" tests/reference/bench_moe_torch.py --config "$CONFIG" --config-tool "$CONFIG_TOOL" \
      --B "$B" --T "$T" --device cuda --dtype "$dtype" $flag --steps "$STEPS" --warmup "$WARMUP" \
      2>&1 | tee "$tmp/torch_${mode}_$dtype.txt"
    torch_tps[$mode.$dtype]=$(tps_of "$tmp/torch_${mode}_$dtype.txt")
  done
done

# The table; a missing torch number (compile skipped or failed) prints n/a.
echo
echo "competelm vs PyTorch, $CONFIG, B=$B T=$T ($(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1))"
echo "each row: competelm in that precision (bf16 = bf16 tensor-core products, fp32 storage) vs torch (bf16 = autocast)."
printf "%-6s %14s %16s %16s %14s %14s\n" dtype "ours tok/s" "torch eager" "torch compiled" "ours/eager" "ours/compiled"
status=0
for dtype in $DTYPES; do
  e=${torch_tps[eager.$dtype]:-} c=${torch_tps[compiled.$dtype]:-} ours=${ours_tps[$dtype]}
  awk -v d="$dtype" -v o="$ours" -v e="$e" -v c="$c" 'BEGIN {
    re = (e == "") ? "n/a" : sprintf("%.2fx %s", o / e, (o / e >= 1.5) ? "ok" : "<1.5");
    rc = (c == "") ? "n/a" : sprintf("%.2fx %s", o / c, (o / c >= 1.2) ? "ok" : "<1.2");
    printf "%-6s %14.0f %16s %16s %14s %14s\n", d, o, (e == "") ? "n/a" : sprintf("%.0f", e),
           (c == "") ? "n/a" : sprintf("%.0f", c), re, rc }'
  awk -v d="$dtype" -v o="$ours" -v e="$e" -v c="$c" 'BEGIN {
    printf "RESULT vs_torch dtype=%s ours_tokens_per_s=%.1f torch_eager_tokens_per_s=%s torch_compiled_tokens_per_s=%s " \
           "ours_over_eager=%s ours_over_compiled=%s target_eager=1.5 target_compiled=1.2\n", d, o,
           (e == "") ? "na" : e, (c == "") ? "na" : c, (e == "") ? "na" : sprintf("%.3f", o / e),
           (c == "") ? "na" : sprintf("%.3f", o / c) }'
  [ -n "$e" ] || status=1
done
echo "targets: ours/eager ≥ 1.5×, ours/compiled ≥ 1.2× (issue); n/a = that torch run gave no result (see its log above)"
[ "$status" -eq 0 ] || die "a PyTorch eager run gave no RESULT line"
exit 0
