#pragma once
// The job's ranks and the communicators the trainer uses, made once at start-up.
//
// Layout with expert parallel size P (dist.expert_parallel) over W ranks: consecutive ranks
// form an expert-parallel group (ep), rank r holding experts [ (r mod P)·E/P, … ) of every
// MoE layer; the W/P ranks with the same r mod P hold the same experts (edp: their expert
// gradients are reduced among them). Every rank is data parallel: its own slice of each
// global batch; dense parameters are replicated on all W ranks.
//
// Each group has two communicators: world/ep/edp for host-memory buffers (counts, scores,
// losses, optimizer state), and dworld/dep/dedp for buffers in the backend's memory
// (gradients, parameters, activation rows). On a host-memory backend (CPU) they are the same
// objects; on a GPU backend attach_device_comms makes the device ones (dist.gpu_comm).
#include <cstdint>
#include <memory>
#include <string>

#include "dist/comm.hpp"
#include "train/dist.hpp"

namespace competelm {

struct DistContext {
  DistInfo info;                // global rank, world size, local rank
  std::shared_ptr<Comm> world;  // all ranks
  std::shared_ptr<Comm> ep;     // this rank's expert-parallel group (size P)
  std::shared_ptr<Comm> edp;    // ranks holding the same experts (size W/P)
  // The same groups for buffers in the backend's memory (see attach_device_comms).
  std::shared_ptr<Comm> dworld, dep, dedp;
  int ep_size = 1, ep_rank = 0;

  // Bytes this rank has sent for data parallelism (world, edp and their device communicators)
  // and for expert parallelism (ep, dep), each communicator counted once.
  uint64_t dp_bytes_sent() const;
  uint64_t ep_bytes_sent() const;
};

// The single-process context (no MPI).
DistContext single_process_context();

// Splits `world` for expert parallel size P (1 = none). P must divide the world size.
DistContext make_dist_context(std::shared_ptr<Comm> world, int local_rank, int expert_parallel);

class Backend;

// dist.gpu_comm: auto resolves to mpi (host-staged) while this is false. The NCCL communicator
// (dist/nccl_comm.hpp) is compiled but has not yet run on a GPU; once a multi-rank GPU test
// (tests/mpi/cuda_data_parallel.sh) has passed with it, set this to true and auto picks NCCL
// whenever the binary has it.
inline constexpr bool kNcclVerified = false;

// Makes d.dworld/dep/dedp for buffers in `backend`'s memory, per gpu_comm (auto|nccl|mpi):
//   host-memory backend:  the host communicators themselves (no copies), unless force_staging
//   mpi:                  a StagingComm over each host communicator (device ↔ host copies
//                         around every MPI collective)
//   nccl:                 an NCCL communicator per group (make_nccl_comm; collective)
// Groups of one rank never communicate and get a StagingComm (correct, never used); a group
// with the same ranks as the world reuses dworld. force_staging (test-only) stages even on a
// host-memory backend, so that the staged path runs in CPU tests. Collective over the world.
// The backend must outlive d's device communicators. Returns what was chosen, for the log.
std::string attach_device_comms(DistContext& d, Backend& backend, const std::string& gpu_comm,
                                bool force_staging = false);

// MPI for the lifetime of the process when it was launched by mpirun (or srun with PMI);
// otherwise a single-process run without MPI. Create one in main() before anything else.
class MpiSession {
 public:
  MpiSession(int* argc, char*** argv);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
  bool active() const { return active_; }   // MPI initialised by this session
  std::shared_ptr<Comm> world() const { return world_; }
  int local_rank() const { return local_rank_; }

 private:
  bool active_ = false;
  int local_rank_ = 0;
  std::shared_ptr<Comm> world_;
};

// True when the environment says this process is one rank of an MPI launch.
bool launched_by_mpi();

}  // namespace competelm
