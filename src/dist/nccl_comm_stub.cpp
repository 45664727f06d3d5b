// Builds without NCCL: make_nccl_comm explains why there is none.
#ifndef COMPETELM_HAVE_NCCL
#include "core/error.hpp"
#include "dist/nccl_comm.hpp"

namespace competelm {

bool nccl_built() { return false; }

std::unique_ptr<Comm> make_nccl_comm(std::shared_ptr<Comm>, Backend&) {
  fail_hint("set dist.gpu_comm: mpi (host-staged MPI collectives), or rebuild on a machine whose CUDA "
            "toolkit has NCCL (nccl.h and libnccl in /usr/local/cuda)",
            "dist.gpu_comm: nccl: this binary was built without NCCL");
}

}  // namespace competelm
#endif
