#!/usr/bin/env bash
# Multi-rank scaling on the CPU: tokens/s for 1, 2 and 4 ranks (weak scaling: each rank keeps
# its micro-batch, so the global batch grows with the ranks) and the efficiency
# tok/s(N) / (N · tok/s(1)); plus the bytes each rank sends per step for data parallel
# (ZeRO-1 gradient reduce-scatter + parameter all-gather) and for expert parallel (token rows
# to and from the experts' ranks), measured at the communicator next to the formula.
#
#   scripts/bench_scaling.sh [CONFIG] [STEPS]      (default configs/quickstart.yaml, 12 steps)
#
# Each rank runs one thread, so N ranks want N free cores: on a machine with fewer cores the
# efficiency measures oversubscription, not the framework (the script prints the core count).
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
cd "$SRC"
CONFIG=${1:-configs/quickstart.yaml}
STEPS=${2:-12}
TRAIN=build/bin/competelm-train
[ -x "$TRAIN" ] || { echo "error: $TRAIN not built (scripts/build.sh)"; exit 1; }
command -v mpirun >/dev/null || { echo "error: mpirun not found (scripts/install_deps.sh)"; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
OUT=$(mktemp -d /tmp/competelm-scaling.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
common=(--set train.steps="$STEPS" --set checkpoint.every=0 --set checkpoint.at_end=false --set eval.every=0
        --set eval.sample_every=0 --set log.every=1 --set run.threads=1 --set train.batch_tokens=0 --quiet
        --set moe.competition_rate=0.07)
run() {  # run NAME RANKS EP [--set ...]
  local name=$1 ranks=$2 ep=$3
  shift 3
  local args=("$CONFIG" --set "run.dir=$OUT/$name" "${common[@]}" --set "dist.expert_parallel=$ep" "$@")
  if [ "$ranks" -eq 1 ]; then "$TRAIN" "${args[@]}"; else mpirun -np "$ranks" "$TRAIN" "${args[@]}"; fi
}
echo "config $CONFIG, $STEPS steps per run, 1 thread per rank, $(nproc) cores on this machine"
run dp1 1 1
run dp2 2 1
run dp4 4 1
run dp2s 2 1 --set dist.bucket_mb=0  # the gradient reduction after the backward, not overlapped
EXPERTS=$(build/bin/competelm-config "$CONFIG" | sed -n 's/^  n_experts: *\([0-9]*\).*/\1/p')
if [ "$EXPERTS" -gt 0 ] && [ $((EXPERTS % 4)) -eq 0 ]; then
  run ep2 2 2
  run ep4 4 4
fi
python3 - "$OUT" "$CONFIG" <<'PY'
import json, os, sys
out, config = sys.argv[1], sys.argv[2]
def stats(name):
    path = f"{out}/{name}/metrics.jsonl"
    if not os.path.exists(path):
        return None
    recs = [json.loads(l) for l in open(path)]
    steady = recs[2:] or recs  # the first steps warm caches and the allocator
    mean = lambda k: sum(r.get(k, 0) for r in steady) / len(steady)
    return {"tok_s": mean("tokens_per_s"), "dp": mean("comm_bytes_dp"), "ep": mean("comm_bytes_ep"),
            "ms": mean("step_ms")}
# The model, for the formulas: parse the resolved config the run wrote (section: key: value).
cfg, section = {}, ""
for line in open(f"{out}/dp1/config.yaml"):
    if not line.strip() or line.lstrip().startswith("#"):
        continue
    if not line.startswith(" "):
        section = line.split(":")[0]
        continue
    k, v = line.strip().split(":", 1)
    cfg[f"{section}.{k}"] = v.split("#")[0].strip().strip('"')
C, T, L = int(cfg["model.d_model"]), int(cfg["model.seq_len"]), int(cfg["model.n_layer"])
Vp = (int(cfg["model.vocab_size"]) + 127) // 128 * 128
B = int(cfg["train.micro_batch"])
E, K = int(cfg["moe.n_experts"]), int(cfg["moe.top_k"])
H = int(cfg["moe.expert_hidden"]) or -(-4 * C // K // 8) * 8
L_moe = L if E > 0 else 0  # (the formula assumes moe.layers: all)
replicated = Vp * C + T * C + L * (4 * C + 3 * C * C + 3 * C + C * C + C) + 2 * C
replicated += L_moe * E * C + (L - L_moe) * (8 * C * C + 5 * C)
experts = L_moe * E * (2 * H * C + H + C)
def dp_formula(W, P):
    D = W // P
    return 2 * (W - 1) / W * replicated * 4 + 2 * (D - 1) / D * experts / P * 4
def ep_formula(P):
    return 4 * (P - 1) / P * B * T * K * C * 4 * L_moe if P > 1 else 0.0
base = stats("dp1")
print(f"\n{'run':<6} {'ranks':>5} {'EP':>3} {'step ms':>9} {'tok/s':>10} {'efficiency':>10} "
      f"{'DP MB/rank/step':>16} {'(formula)':>10} {'EP MB/rank/step':>16} {'(formula)':>10}")
for name, n, ep in [("dp1", 1, 1), ("dp2", 2, 1), ("dp4", 4, 1), ("ep2", 2, 2), ("ep4", 4, 4)]:
    s = stats(name)
    if not s:
        continue
    eff = s["tok_s"] / (n * base["tok_s"])
    print(f"{name:<6} {n:>5} {ep:>3} {s['ms']:>9.1f} {s['tok_s']:>10.0f} {100 * eff:>9.1f}% "
          f"{s['dp'] / 1e6:>16.3f} {dp_formula(n, ep) / 1e6:>10.3f} {s['ep'] / 1e6:>16.3f} {ep_formula(ep) / 1e6:>10.3f}")
over, serial = stats("dp2"), stats("dp2s")
if over and serial:
    print(f"\n2 ranks, gradient reduction overlapped with the backward (dist.bucket_mb default) vs after it "
          f"(bucket_mb 0): {over['ms']:.1f} vs {serial['ms']:.1f} ms per step, {serial['ms'] / over['ms']:.3f}x")
PY
echo
echo "Formulas (per rank per step, fp32, ring collectives; S = replicated parameters, S_e = this"
echo "rank's expert parameters, W ranks, P expert parallel, D = W/P):"
echo "  DP: 2·(W-1)/W·S·4 + 2·(D-1)/D·S_e·4 bytes (reduce-scatter + all-gather), plus a few scalars"
echo "  EP, per MoE layer, routed step: 4·R_out·C·4 bytes, R_out = rows routed to other ranks"
echo "      (≈ (P-1)/P · tokens·K for balanced routing): x and o forward, ∂o and ∂x backward"
echo "  competesmoe competition steps add (P-1)·N·C·4 (all-gather of the tokens) + (P-1)·N·E/P·4 (scores)"
echo "      and with the affinity balance (P-1)·N·E/P·4 + (P-1)·N·C·4 in backward"
