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
//
// start_reduce_scatter_sum runs on the communicator's own communication stream (made on the
// first start_* call): it starts after the work already queued on the backend's stream (which
// wrote `send`), and the request's wait() makes the backend's stream wait for it (an event: no
// host synchronisation), so kernels queued between start and wait overlap it. Several requests
// may be in flight at once; they run in start order. THE RULE: one NCCL communicator must never
// run two collectives concurrently (ranks could pair them up differently and deadlock), so a
// caller must wait() every request of a communicator before its next call that is not a start_*
// (those run on the backend's stream); waiting orders the backend's stream after the
// communication stream, which makes every use of the communicator serial. Collectives of another
// communicator (a split) may run meanwhile, as NCCL allows for distinct communicators issued in
// the same order on every rank.
//
// barrier() and the destructor wait on the host for both streams, polling NCCL's asynchronous
// error meanwhile (a failed peer leaves NCCL kernels spinning forever): barrier() throws
// competelm::Error on it; the destructor aborts the NCCL communicator instead of destroying it.
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
