#include "dist/data_parallel.hpp"

#include <algorithm>
#include <set>

#include "core/error.hpp"

namespace competelm {

std::vector<GradBucket> plan_grad_buckets(const std::vector<GradRegion>& regions,
                                          const std::vector<ParamRange>& ready_order, size_t bucket_elements) {
  std::vector<GradBucket> out;
  for (size_t ri = 0; ri < regions.size(); ++ri) {
    const GradRegion& region = regions[ri];
    if (region.end <= region.begin) continue;
    CLM_ASSERT(region.ranks >= 1);
    const size_t n = size_t(region.ranks);
    // Bucket edges from the ready ranges (clipped to the region), in the backward's order.
    std::vector<size_t> edges;
    if (bucket_elements > 0) {
      bool open = false;
      ParamRange cur;
      auto close = [&] {
        if (open) edges.insert(edges.end(), {cur.begin, cur.end});
        open = false;
      };
      for (const ParamRange& g : ready_order) {
        const size_t lo = std::max(g.begin, region.begin), hi = std::min(g.end, region.end);
        if (lo >= hi) continue;
        if (open && lo != cur.end && hi != cur.begin) close();
        if (!open) {
          cur = {lo, hi};
          open = true;
        } else {
          cur = {std::min(cur.begin, lo), std::max(cur.end, hi)};
        }
        if (cur.size() >= bucket_elements) close();
      }
      close();
    }
    // Rounded up to a multiple of n from the region's start; the region's own ends stay.
    std::set<size_t> bounds{region.begin, region.end};
    for (size_t x : edges) bounds.insert(std::min(region.end, region.begin + (x - region.begin + n - 1) / n * n));
    for (auto it = bounds.begin(); std::next(it) != bounds.end(); ++it)
      out.push_back({*it, *std::next(it), int(ri)});
  }
  return out;
}

DataParallel::DataParallel(const DistContext& dist, size_t expert_begin, size_t total, Backend* device,
                           const std::vector<ParamRange>& ready_order, size_t bucket_elements)
    : dist_(dist), be_(device), overlap_(bucket_elements > 0 && !ready_order.empty()) {
  std::vector<GradRegion> spans;
  auto add = [&](size_t begin, size_t end, Comm* host, Comm* dev) {
    CLM_ASSERT(dev && dev->size() == host->size() && dev->rank() == host->rank());
    Region r;
    r.device = dev, r.n = host->size(), r.index = host->rank();
    // NCCL: a communicator may not run a collective on the backend's stream while one of ours
    // is in flight on its own stream. The expert-parallel exchange inside the backward uses
    // dep, so a region on that same communicator reduces after the backward.
    r.overlap = dev != dist.dep.get();
    regions_.push_back(r);
    spans.push_back({begin, end, r.n});
  };
  add(0, expert_begin, dist.world.get(), dist.dworld.get());
  add(expert_begin, total, dist.edp.get(), dist.dedp.get());
  // One rank: nothing to overlap, one bucket per region.
  const bool several = dist.info.world > 1;
  const std::vector<GradBucket> buckets =
      plan_grad_buckets(spans, several ? ready_order : std::vector<ParamRange>{}, several ? bucket_elements : 0);

  size_t recv = 0, pad = 0;
  for (const GradBucket& g : buckets) {
    const Region& r = regions_[size_t(g.region)];
    Bucket b;
    b.span = g;
    b.shard = (g.size() + size_t(r.n) - 1) / size_t(r.n);
    if (r.n > 1) {
      b.recv_offset = recv, recv += b.shard;
      if (b.padded(r.n)) b.pad_offset = pad, pad += b.shard * size_t(r.n);
    }
    const ParamRange o = owned_range(b);
    // Whole buckets (one rank per region) join up: one owned range per region.
    if (o.size() > 0) {
      if (r.n == 1 && !owned_.empty() && owned_.back().end == o.begin && state_.back().span.region == g.region)
        owned_.back().end = o.end;
      else
        owned_.push_back(o);
    }
    state_.push_back(std::move(b));
  }
  if (dist.info.world == 1) return;
  if (!be_) fail("DataParallel over {} ranks needs the backend that holds the parameters", dist.info.world);
  if (recv > 0) recv_buf_ = static_cast<float*>(be_->alloc(recv * sizeof(float)));
  if (pad > 0) pad_buf_ = static_cast<float*>(be_->alloc(pad * sizeof(float)));
}

DataParallel::~DataParallel() {
  // In-flight reductions finish (or, when unwinding from an error, are abandoned) first.
  state_.clear();
  if (recv_buf_) be_->dealloc(recv_buf_);
  if (pad_buf_) be_->dealloc(pad_buf_);
}

ParamRange DataParallel::owned_range(const Bucket& b) const {
  const Region& r = regions_[size_t(b.span.region)];
  const size_t lo = std::min(b.span.end, b.span.begin + size_t(r.index) * b.shard);
  return {lo, std::min(b.span.end, lo + b.shard)};
}

void DataParallel::copy(float* dst, const float* src, size_t n) {
  if (n == 0) return;
  be_->zero(dst, n * sizeof(float));
  be_->accumulate(dst, src, n);
}

void DataParallel::begin_backward(float* grads) {
  if (dist_.info.world == 1 || !overlap_) return;
  CLM_ASSERT(started_.empty());
  grads_ = grads;
  for (Bucket& b : state_) b.pending = b.span.size();
}

void DataParallel::start(Bucket& b, float* grads) {
  const Region& r = regions_[size_t(b.span.region)];
  const float* send = grads + b.span.begin;  // (n·shard)
  if (b.padded(r.n)) {  // zero padding past the bucket's end
    float* padded = pad_buf_ + b.pad_offset;
    be_->zero(padded, b.shard * size_t(r.n) * sizeof(float));
    be_->accumulate(padded, send, b.span.size());
    send = padded;
  }
  b.request = r.device->start_reduce_scatter_sum(send, recv_buf_ + b.recv_offset, b.shard);
  started_.push_back(size_t(&b - state_.data()));
}

void DataParallel::grads_ready(ParamRange range) {
  if (!grads_) return;  // single process, or not armed
  for (Bucket& b : state_) {
    const size_t lo = std::max(range.begin, b.span.begin), hi = std::min(range.end, b.span.end);
    if (lo >= hi) continue;
    CLM_ASSERT(b.pending >= hi - lo);
    b.pending -= hi - lo;
    const Region& r = regions_[size_t(b.span.region)];
    if (b.pending == 0 && r.n > 1 && r.overlap) start(b, grads_);
  }
  for (size_t i : started_) state_[i].request->poll();  // MPI progresses only inside MPI calls
}

void DataParallel::reduce_gradients(float* grads) {
  if (dist_.info.world == 1) return;
  CLM_ASSERT(!grads_ || grads_ == grads);
  overlapped_ = int(started_.size());
  // The rest, in bucket order (the same on every rank, as the backward's order is).
  for (Bucket& b : state_)
    if (!b.request && regions_[size_t(b.span.region)].n > 1) start(b, grads);
  const float inv_world = 1.0f / float(dist_.info.world);
  for (size_t i : started_) {
    Bucket& b = state_[i];
    b.request->wait();
    b.request.reset();
    const ParamRange o = owned_range(b);
    copy(grads + o.begin, recv_buf_ + b.recv_offset, o.size());
  }
  started_.clear();
  grads_ = nullptr;
  // Every rank's loss is a mean over its own tokens: the global mean divides the sum by W
  // (expert gradients already hold the whole expert-parallel group's contributions).
  for (const ParamRange& o : owned_) be_->scale(grads + o.begin, inv_world, o.size());
}

void DataParallel::gather(float* buf) {
  if (dist_.info.world == 1) return;
  for (Bucket& b : state_) {
    const Region& r = regions_[size_t(b.span.region)];
    if (r.n == 1) continue;
    const ParamRange o = owned_range(b);
    float* shard = recv_buf_ + b.recv_offset;
    be_->zero(shard, b.shard * sizeof(float));  // the last shards may be short or empty
    be_->accumulate(shard, buf + o.begin, o.size());
    float* recv = b.padded(r.n) ? pad_buf_ + b.pad_offset : buf + b.span.begin;  // (n·shard)
    r.device->allgather(shard, recv, b.shard * sizeof(float));
    if (b.padded(r.n)) copy(buf + b.span.begin, recv, b.span.size());
  }
}

double DataParallel::sum_over_ranks(double x) const {
  dist_.world->allreduce_sum(&x, 1);
  return x;
}

}  // namespace competelm
