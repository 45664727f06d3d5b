#include "dist/dist_context.hpp"

#include <algorithm>
#include <cstdlib>
#include <vector>

#include "backend/backend.hpp"
#include "core/error.hpp"
#include "dist/nccl_comm.hpp"
#include "dist/staging_comm.hpp"

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
  // Host memory until attach_device_comms says otherwise.
  d.dworld = d.world, d.dep = d.ep, d.dedp = d.edp;
  return d;
}

namespace {
// Σ bytes_sent over the distinct communicators of `comms` that are not in `exclude`.
uint64_t distinct_bytes_sent(std::vector<const Comm*> comms, const std::vector<const Comm*>& exclude = {}) {
  std::sort(comms.begin(), comms.end());
  comms.erase(std::unique(comms.begin(), comms.end()), comms.end());
  uint64_t n = 0;
  for (const Comm* c : comms)
    if (c && std::find(exclude.begin(), exclude.end(), c) == exclude.end()) n += c->bytes_sent();
  return n;
}
}  // namespace

// A StagingComm does not count the bytes it hands to its host communicator (that one does), so
// summing every distinct communicator counts each byte once, whichever gpu_comm is in use.
uint64_t DistContext::dp_bytes_sent() const {
  return distinct_bytes_sent({world.get(), edp.get(), dworld.get(), dedp.get()});
}

uint64_t DistContext::ep_bytes_sent() const {
  return distinct_bytes_sent({ep.get(), dep.get()}, {world.get(), edp.get(), dworld.get(), dedp.get()});
}

std::string attach_device_comms(DistContext& d, Backend& backend, const std::string& gpu_comm, bool force_staging) {
  if (gpu_comm != "auto" && gpu_comm != "nccl" && gpu_comm != "mpi")
    fail("dist.gpu_comm = '{}': expected auto, nccl or mpi", gpu_comm);
  const int W = d.info.world;
  if (backend.memory_is_host() && !force_staging) {
    d.dworld = d.world, d.dep = d.ep, d.dedp = d.edp;
    return fmt::format("none: the {} backend's memory is host memory, the MPI collectives use it in place",
                       backend.name());
  }
  const bool nccl = !backend.memory_is_host() && (gpu_comm == "nccl" || (gpu_comm == "auto" && kNcclVerified &&
                                                                         nccl_built() && W > 1));
  auto staged = [&](const std::shared_ptr<Comm>& host) -> std::shared_ptr<Comm> {
    return std::make_shared<StagingComm>(host, backend);
  };
  if (nccl) {
    d.dworld = make_nccl_comm(d.world, backend);
    // A group with the world's ranks (split keeps their order) shares its NCCL communicator;
    // a group of one rank never communicates.
    auto group = [&](const std::shared_ptr<Comm>& host) -> std::shared_ptr<Comm> {
      if (host->size() == W) return d.dworld;
      if (host->size() == 1) return staged(host);
      return make_nccl_comm(host, backend);
    };
    d.dep = group(d.ep);
    d.dedp = group(d.edp);
    return W == 1 ? "nccl (1 rank: nothing is exchanged)" : "nccl: device-memory collectives, no host copies";
  }
  d.dworld = staged(d.world);
  d.dep = d.ep == d.world ? d.dworld : staged(d.ep);
  d.dedp = d.edp == d.world ? d.dworld : d.edp == d.ep ? d.dep : staged(d.edp);
  std::string why;
  if (force_staging)
    why = " (COMPETELM_TEST_STAGED_COMM: staged on a host-memory backend)";
  else if (gpu_comm == "auto")
    why = !kNcclVerified ? " (auto: the NCCL communicator is not yet verified on a GPU)"
                         : !nccl_built() ? " (auto: this binary has no NCCL)" : "";
  if (W == 1) return "mpi-staged (1 rank: nothing is exchanged)" + why;
  return "mpi: host-staged MPI collectives (device → host, MPI, host → device)" + why;
}

bool launched_by_mpi() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"})
    if (std::getenv(var)) return true;
  return false;
}

}  // namespace competelm
