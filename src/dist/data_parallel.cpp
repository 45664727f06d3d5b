#include "dist/data_parallel.hpp"

#include <algorithm>
#include <cstring>

#include "core/error.hpp"

namespace competelm {

DataParallel::DataParallel(const DistContext& dist, size_t expert_begin, size_t total, Backend* device)
    : dist_(dist), be_(device) {
  auto add = [&](size_t begin, size_t end, Comm* host, Comm* dev) {
    if (end <= begin) return;
    Region r;
    r.begin = begin, r.end = end, r.host = host, r.device = dev, r.n = host->size(), r.index = host->rank();
    CLM_ASSERT(dev && dev->size() == r.n && dev->rank() == r.index);
    r.shard = (end - begin + r.n - 1) / r.n;
    regions_.push_back(r);
    const ParamRange o = owned_range(r);
    if (o.size() > 0) owned_.push_back(o);
  };
  add(0, expert_begin, dist.world.get(), dist.dworld.get());
  add(expert_begin, total, dist.edp.get(), dist.dedp.get());
  if (dist.info.world == 1) return;
  if (!be_) fail("DataParallel over {} ranks needs the backend that holds the parameters", dist.info.world);
  size_t shard = 0, padded = 0;
  for (const Region& r : regions_) {
    if (r.n == 1) continue;
    shard = std::max(shard, r.shard);
    if (r.padded()) padded = std::max(padded, r.shard * size_t(r.n));
  }
  if (shard > 0) shard_buf_ = static_cast<float*>(be_->alloc(shard * sizeof(float)));
  if (padded > 0) padded_buf_ = static_cast<float*>(be_->alloc(padded * sizeof(float)));
}

DataParallel::~DataParallel() {
  if (shard_buf_) be_->dealloc(shard_buf_);
  if (padded_buf_) be_->dealloc(padded_buf_);
}

ParamRange DataParallel::owned_range(const Region& r) const {
  const size_t lo = std::min(r.end, r.begin + size_t(r.index) * r.shard);
  return {lo, std::min(r.end, lo + r.shard)};
}

void DataParallel::copy(float* dst, const float* src, size_t n) {
  if (n == 0) return;
  be_->zero(dst, n * sizeof(float));
  be_->accumulate(dst, src, n);
}

void DataParallel::reduce_gradients(float* grads) {
  if (dist_.info.world == 1) return;
  const float inv_world = 1.0f / float(dist_.info.world);
  for (const Region& r : regions_) {
    const ParamRange o = owned_range(r);
    if (r.n > 1) {
      const float* send = grads + r.begin;  // (n·shard)
      if (r.padded()) {  // zero padding past the region's end
        be_->zero(padded_buf_, r.shard * size_t(r.n) * sizeof(float));
        be_->accumulate(padded_buf_, grads + r.begin, r.end - r.begin);
        send = padded_buf_;
      }
      r.device->reduce_scatter_sum(send, shard_buf_, r.shard);
      copy(grads + o.begin, shard_buf_, o.size());
    }
    // Every rank's loss is a mean over its own tokens: the global mean divides the sum by W
    // (expert gradients already hold the whole expert-parallel group's contributions).
    if (o.size() > 0) be_->scale(grads + o.begin, inv_world, o.size());
  }
}

void DataParallel::gather(float* buf) {
  if (dist_.info.world == 1) return;
  for (const Region& r : regions_) {
    if (r.n == 1) continue;
    const ParamRange o = owned_range(r);
    be_->zero(shard_buf_, r.shard * sizeof(float));  // the last shards may be short or empty
    be_->accumulate(shard_buf_, buf + o.begin, o.size());
    float* recv = r.padded() ? padded_buf_ : buf + r.begin;  // (n·shard)
    r.device->allgather(shard_buf_, recv, r.shard * sizeof(float));
    if (r.padded()) copy(buf + r.begin, padded_buf_, r.end - r.begin);
  }
}

void DataParallel::gather_host(float* buf) {
  for (const Region& r : regions_) {
    if (r.n == 1) continue;
    const ParamRange o = owned_range(r);
    send_.assign(r.shard, 0.0f);
    std::memcpy(send_.data(), buf + o.begin, o.size() * sizeof(float));
    recv_.resize(r.shard * r.n);
    r.host->allgather(send_.data(), recv_.data(), r.shard * sizeof(float));
    std::memcpy(buf + r.begin, recv_.data(), (r.end - r.begin) * sizeof(float));
  }
}

double DataParallel::sum_over_ranks(double x) const {
  dist_.world->allreduce_sum(&x, 1);
  return x;
}

}  // namespace competelm
