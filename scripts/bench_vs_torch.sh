#!/usr/bin/env bash
# CPU training-step time of competelm against PyTorch eager (fp32) on the same GPT-2 shape,
# batch and thread count. One step = forward + backward + grad clipping + AdamW on both
# sides. Prints both ms/step and the ratio torch/ours (> 1: we are faster).
#
#   scripts/bench_vs_torch.sh [--L 12] [--C 768] [--NH 12] [--V 50257] [--B 4] [--T 64]
#                             [--threads 2] [--steps 10] [--warmup 2] [--config FILE]
#
# Env: BENCH (default build/bin/competelm-bench), PYTHON (default /usr/bin/python3, the
# interpreter with torch). Without --config a minimal config with the shape is generated.
set -euo pipefail
cd "$(dirname "$0")/.."

L=12 C=768 NH=12 V=50257 B=4 T=64 THREADS=2 STEPS=10 WARMUP=2 CONFIG=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --L) L=$2 ;; --C) C=$2 ;; --NH) NH=$2 ;; --V) V=$2 ;; --B) B=$2 ;; --T) T=$2 ;;
    --threads) THREADS=$2 ;; --steps) STEPS=$2 ;; --warmup) WARMUP=$2 ;; --config) CONFIG=$2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "bench_vs_torch.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift 2
done
BENCH=${BENCH:-build/bin/competelm-bench}
PYTHON=${PYTHON:-/usr/bin/python3}
if [[ ! -x "$BENCH" ]]; then
  echo "bench_vs_torch.sh: $BENCH not found; build first (cmake --build build)" >&2; exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [[ -z "$CONFIG" ]]; then
  CONFIG=$tmp/bench.yaml
  printf 'run:\n  device: cpu\n' > "$CONFIG"
fi

# `RESULT ms_per_step=<float> ...` -> <float>
ms_of() { sed -n 's/^RESULT .*ms_per_step=\([0-9.eE+-]*\).*/\1/p' "$1" | tail -n 1; }

echo "== competelm ($BENCH): L=$L C=$C NH=$NH V=$V B=$B T=$T threads=$THREADS"
"$BENCH" "$CONFIG" --set run.device=cpu --set run.threads="$THREADS" \
  --set model.n_layer="$L" --set model.d_model="$C" --set model.n_head="$NH" \
  --set model.vocab_size="$V" --set model.seq_len="$T" --set train.micro_batch="$B" \
  --steps "$STEPS" --warmup "$WARMUP" --no-profile | tee "$tmp/ours.txt"
ours=$(ms_of "$tmp/ours.txt")

echo "== PyTorch eager fp32"
OMP_NUM_THREADS=$THREADS "$PYTHON" tests/reference/bench_torch.py --L "$L" --C "$C" --NH "$NH" \
  --V "$V" --B "$B" --T "$T" --maxT "$T" --threads "$THREADS" --steps "$STEPS" \
  --warmup "$WARMUP" | tee "$tmp/torch.txt"
torch_ms=$(ms_of "$tmp/torch.txt")

if [[ -z "$ours" || -z "$torch_ms" ]]; then
  echo "bench_vs_torch.sh: missing a 'RESULT ms_per_step=' line (ours='$ours' torch='$torch_ms')" >&2
  exit 1
fi
awk -v o="$ours" -v t="$torch_ms" 'BEGIN {
  printf "competelm %.1f ms/step | torch %.1f ms/step | torch/competelm = %.2fx\n", o, t, t / o }'
