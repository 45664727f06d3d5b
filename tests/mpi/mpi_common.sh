# Shared by the multi-rank tests: sourced, with TRAIN set to competelm-train.
# Exits 77 (ctest: Skipped) when this build or machine cannot run mpirun.
set -euo pipefail
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$SRC"
if ! command -v mpirun >/dev/null; then echo "SKIPPED: mpirun not found (scripts/install_deps.sh installs OpenMPI)"; exit 77; fi
# Containers and CI run as root; OpenMPI refuses that unless told.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Quiet the shared-memory transport's probing on machines without CMA / many cores.
export OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_rmaps_base_oversubscribe=1
WORK=$(mktemp -d /tmp/competelm-mpi.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
COMPARE=(python3 "$SRC/tests/mpi/compare_metrics.py")

# run_ranks N RUN_DIR CONFIG [--set ...]: one training run on N ranks (1 = plain process).
run_ranks() {
  local n=$1 dir=$2 cfg=$3
  shift 3
  local args=("$cfg" --set "run.dir=$dir" --set run.threads=1 --set eval.sample_every=0 --quiet "$@")
  if [ "$n" -eq 1 ]; then
    "$TRAIN" "${args[@]}"
  else
    mpirun -np "$n" "$TRAIN" "${args[@]}"
  fi
}
