#pragma once
// Data parallelism with sharded optimizer state (ZeRO stage 1) over a model's flat parameter
// buffer, which has two regions (see GPT2::params()):
//   replicated [0, expert_begin):     every rank holds it; reduced over all W ranks
//   experts    [expert_begin, total): this rank's experts; reduced over the W/P ranks that
//                                     hold the same experts (DistContext::edp)
// Each region is cut into equal shards, one per rank of its communicator. A step:
//   reduce_gradients: reduce-scatter → this rank's shards hold the gradient of the mean loss
//                     over every rank's tokens (others stale);
//   the optimizer updates the owned shards only (its moments exist only for them);
//   gather:           all-gather → every rank holds all current parameters.
// Single process: one shard covering everything; every call is a no-op.
#include <cstddef>
#include <vector>

#include "backend/backend.hpp"
#include "dist/dist_context.hpp"

namespace competelm {

struct ParamRange {
  size_t begin = 0, end = 0;  // elements [begin, end) of the flat buffer
  size_t size() const { return end - begin; }
};

class DataParallel {
 public:
  // device: the backend holding the buffers of reduce_gradients and gather (required when there
  // are several ranks). Those collectives run on the device communicators (DistContext::dworld,
  // dedp), which take the backend's memory: on the CPU the host communicators themselves, on a
  // GPU a host-staging or NCCL communicator (attach_device_comms). The copies around them use
  // the backend's ops, so no buffer leaves the device here.
  DataParallel(const DistContext& dist, size_t expert_begin, size_t total, Backend* device = nullptr);
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  // The ranges of the flat buffer this rank updates (non-empty ones, in order).
  const std::vector<ParamRange>& owned() const { return owned_; }

  // grads: the whole local layout (device's memory), holding ∂(this rank's mean loss)/∂θ.
  // Afterwards the owned ranges hold (1/W)·Σ_ranks of it = ∂(global mean loss)/∂θ.
  void reduce_gradients(float* grads);
  // buf: the device's memory, whose owned ranges are current; afterwards all of it is.
  void gather(float* buf);
  // The same for a buffer in host memory whatever the backend (e.g. exported optimizer moments),
  // over the host communicators.
  void gather_host(float* buf);
  // Σ over ranks (the world).
  double sum_over_ranks(double x) const;

 private:
  struct Region {
    size_t begin = 0, end = 0;  // of the flat buffer
    size_t shard = 0;           // elements per rank (padded: shard·n ≥ end - begin)
    Comm* host = nullptr;       // the group's communicator for host buffers
    Comm* device = nullptr;     // … and for the backend's buffers
    int n = 1, index = 0;       // communicator size, this rank's position
    bool padded() const { return shard * size_t(n) != end - begin; }
  };
  ParamRange owned_range(const Region& r) const;
  void copy(float* dst, const float* src, size_t n);  // device memory, n floats
  const DistContext& dist_;
  Backend* be_ = nullptr;
  std::vector<Region> regions_;
  std::vector<ParamRange> owned_;
  std::vector<float> send_, recv_;  // gather_host's staging, reused
  // Device scratch: one shard (the collectives' own-shard side, never aliasing the buffer),
  // and for a region whose length is not a multiple of its rank count the whole padded region.
  float* shard_buf_ = nullptr;
  float* padded_buf_ = nullptr;
};

}  // namespace competelm
