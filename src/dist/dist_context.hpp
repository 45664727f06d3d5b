#pragma once
// The job's ranks and the communicators the trainer uses, made once at start-up.
//
// Layout with expert parallel size P (dist.expert_parallel) over W ranks: consecutive ranks
// form an expert-parallel group (ep), rank r holding experts [ (r mod P)·E/P, … ) of every
// MoE layer; the W/P ranks with the same r mod P hold the same experts (edp: their expert
// gradients are reduced among them). Every rank is data parallel: its own slice of each
// global batch; dense parameters are replicated on all W ranks.
#include <memory>

#include "dist/comm.hpp"
#include "train/dist.hpp"

namespace competelm {

struct DistContext {
  DistInfo info;                // global rank, world size, local rank
  std::shared_ptr<Comm> world;  // all ranks
  std::shared_ptr<Comm> ep;     // this rank's expert-parallel group (size P)
  std::shared_ptr<Comm> edp;    // ranks holding the same experts (size W/P)
  int ep_size = 1, ep_rank = 0;
};

// The single-process context (no MPI).
DistContext single_process_context();

// Splits `world` for expert parallel size P (1 = none). P must divide the world size.
DistContext make_dist_context(std::shared_ptr<Comm> world, int local_rank, int expert_parallel);

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
