#!/usr/bin/env bash
# cuda_emu.nccl_comm: competelm-nccl-emu (NcclComm on the emulated NCCL vs MpiComm) under mpirun
# on 1, 2, 3 and 4 ranks (oversubscribed: any core count). Exits 77 (Skipped) without mpirun.
set -euo pipefail
EMU=$1
if ! command -v mpirun >/dev/null; then echo "SKIPPED: mpirun not found (scripts/install_deps.sh installs OpenMPI)"; exit 77; fi
# As tests/mpi/mpi_common.sh: containers and CI run as root; quiet shared-memory probing.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_rmaps_base_oversubscribe=1
for np in 1 2 3 4; do
  echo "== $np rank(s)"
  timeout 120 mpirun -np "$np" --oversubscribe "$EMU"
done
