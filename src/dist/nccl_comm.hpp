#pragma once
// A communicator whose collectives move DEVICE memory with NCCL (cuda/nccl_comm.cu), for the
// gradient/parameter exchange of data parallelism and the token rows of expert parallelism on
// GPUs. It is bootstrapped through a host communicator (MPI): rank 0 makes the NCCL unique id
// and broadcasts it.
//
// Buffer collectives (allreduce_sum, reduce_scatter_sum, allgather, alltoall, alltoallv,
// broadcast) take pointers into `device`'s memory and are enqueued on the backend's stream
// (stream-ordered with the kernels around them: no host synchronisation). The scalar ones
// (allreduce_max), barrier, split (a new NCCL communicator over bootstrap->split) and abort go
// through the bootstrap communicator.
#include <memory>

#include "dist/comm.hpp"

namespace competelm {

class Backend;

// Whether this binary was built with NCCL (a CUDA build that found nccl.h and libnccl).
bool nccl_built();

// Collective over every rank of `bootstrap`; `device` must be the CUDA backend and outlive the
// communicator (and every communicator split from it: each holds its own NCCL comm). Throws
// competelm::Error (with a hint) when the binary was built without NCCL or NCCL fails.
std::unique_ptr<Comm> make_nccl_comm(std::shared_ptr<Comm> bootstrap, Backend& device);

}  // namespace competelm
