#include "dist/dist_context.hpp"

#include <cstdlib>

#include "core/error.hpp"

namespace competelm {

DistContext single_process_context() { return make_dist_context(make_self_comm(), 0, 1); }

DistContext make_dist_context(std::shared_ptr<Comm> world, int local_rank, int expert_parallel) {
  DistContext d;
  const int W = world->size(), r = world->rank(), P = expert_parallel;
  if (P < 1 || W % P != 0)
    fail_hint(fmt::format("launch a multiple of {} ranks, or set dist.expert_parallel to a divisor of {}", P, W),
              "dist.expert_parallel = {} does not divide the world size {}", P, W);
  d.info.rank = r;
  d.info.world = W;
  d.info.local_rank = local_rank;
  d.world = world;
  d.ep_size = P;
  d.ep_rank = r % P;
  if (W == 1) {
    d.ep = world;
    d.edp = world;
  } else {
    d.ep = world->split(/*color=*/r / P, /*key=*/r);
    d.edp = world->split(/*color=*/r % P, /*key=*/r);
  }
  return d;
}

bool launched_by_mpi() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"})
    if (std::getenv(var)) return true;
  return false;
}

}  // namespace competelm
