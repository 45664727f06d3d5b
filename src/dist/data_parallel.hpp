#pragma once
// Data parallelism with sharded optimizer state (ZeRO stage 1) over a model's flat parameter
// buffer, which has two regions (see GPT2::params()):
//   replicated [0, expert_begin):     every rank holds it; reduced over all W ranks
//   experts    [expert_begin, total): this rank's experts; reduced over the W/P ranks that
//                                     hold the same experts (DistContext::edp)
// Each region is cut into buckets (plan_grad_buckets), and each bucket into equal shards, one
// per rank of its region's communicator: a rank owns its shard of every bucket. A step:
//   begin_backward + grads_ready: during the last micro-step's backward, each bucket's
//                     reduce-scatter starts as soon as the backward has finished all of its
//                     gradients (Comm::start_reduce_scatter_sum), overlapping the backward
//                     of the layers before it;
//   reduce_gradients: starts the buckets not yet started and waits for all → this rank's
//                     shards hold the gradient of the mean loss over every rank's tokens;
//   the optimizer updates the owned shards only (its moments exist only for them);
//   gather:           all-gather per bucket → every rank holds all current parameters.
// Single process: one bucket owned whole; every call is a no-op.
#include <cstddef>
#include <memory>
#include <vector>

#include "backend/backend.hpp"
#include "core/param_range.hpp"
#include "dist/dist_context.hpp"

namespace competelm {

// A region of the flat buffer and the number of ranks its buckets are sharded over.
struct GradRegion {
  size_t begin = 0, end = 0;
  int ranks = 1;
};

// One reduction unit: [begin, end) inside region `region`.
struct GradBucket {
  size_t begin = 0, end = 0;
  int region = 0;
  size_t size() const { return end - begin; }
};

// Cuts each region into buckets of whole ready ranges (ready_order: the ranges the backward
// finalises, in its order), closing a bucket once it holds at least bucket_elements, or
// before a range that is not adjacent to it. Boundaries inside a region are then rounded up
// to a multiple of the region's rank count from its start (so only a region's last bucket
// needs padding to split evenly); the few elements a bucket gains come from the range after
// it in memory, which the backward finishes first. bucket_elements 0 or no ready_order: one
// bucket per region. Buckets come in memory order and tile every non-empty region.
std::vector<GradBucket> plan_grad_buckets(const std::vector<GradRegion>& regions,
                                          const std::vector<ParamRange>& ready_order, size_t bucket_elements);

class DataParallel final : public GradReadyListener {
 public:
  // device: the backend holding the buffers of reduce_gradients and gather (required when there
  // are several ranks). Those collectives run on the device communicators (DistContext::dworld,
  // dedp), which take the backend's memory: on the CPU the host communicators themselves, on a
  // GPU a host-staging or NCCL communicator (attach_device_comms). The copies around them use
  // the backend's ops, so no buffer leaves the device here. ready_order and bucket_elements:
  // see plan_grad_buckets.
  DataParallel(const DistContext& dist, size_t expert_begin, size_t total, Backend* device = nullptr,
               const std::vector<ParamRange>& ready_order = {}, size_t bucket_elements = 0);
  ~DataParallel() override;
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  // The ranges of the flat buffer this rank updates (non-empty ones, in buffer order).
  const std::vector<ParamRange>& owned() const { return owned_; }
  size_t bucket_count() const { return state_.size(); }

  // Before the backward whose gradients are final for this step (the last micro-step's): its
  // grads_ready calls then start the reductions of `grads` (the whole local layout). Without
  // buckets (bucket_elements 0) it does nothing: everything is reduced after the backward.
  void begin_backward(float* grads);
  void grads_ready(ParamRange range) override;
  // grads: the whole local layout (device's memory), holding ∂(this rank's mean loss)/∂θ.
  // Afterwards the owned ranges hold (1/W)·Σ_ranks of it = ∂(global mean loss)/∂θ.
  void reduce_gradients(float* grads);
  // Buckets whose reduction the last reduce_gradients found already started by the backward.
  int overlapped_buckets() const { return overlapped_; }
  // buf: the device's memory, whose owned ranges are current; afterwards all of it is.
  void gather(float* buf);
  // Σ over ranks (the world).
  double sum_over_ranks(double x) const;

 private:
  struct Region {
    Comm* device = nullptr;  // the group's communicator for the backend's buffers
    int n = 1, index = 0;    // communicator size, this rank's position
    bool overlap = false;    // may start during the backward (see the constructor)
  };
  struct Bucket {
    GradBucket span;
    size_t shard = 0;        // elements per rank (padded: shard·n ≥ span.size())
    size_t recv_offset = 0;  // of its shard in recv_buf_
    size_t pad_offset = 0;   // of its padded copy in pad_buf_ (padded buckets only)
    size_t pending = 0;      // elements the backward has not yet finished
    std::unique_ptr<CommRequest> request;  // its reduction, once started
    bool padded(int n) const { return shard * size_t(n) != span.size(); }
  };
  ParamRange owned_range(const Bucket& b) const;
  void start(Bucket& b, float* grads);
  void copy(float* dst, const float* src, size_t n);  // device memory, n floats
  const DistContext& dist_;
  Backend* be_ = nullptr;
  std::vector<Region> regions_;
  std::vector<Bucket> state_;     // per bucket
  std::vector<size_t> started_;   // bucket indices in the order their reductions started
  std::vector<ParamRange> owned_;
  bool overlap_ = false;          // buckets of ready ranges: begin_backward arms them
  float* grads_ = nullptr;        // armed by begin_backward
  int overlapped_ = 0;
  // Device scratch: every bucket's received shard, and the padded copies of the buckets whose
  // length is not a multiple of their rank count (never aliasing the gradient buffer).
  float* recv_buf_ = nullptr;
  float* pad_buf_ = nullptr;
};

}  // namespace competelm
