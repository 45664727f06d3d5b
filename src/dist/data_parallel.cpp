#include "dist/data_parallel.hpp"

#include <algorithm>
#include <cstring>

namespace competelm {

DataParallel::DataParallel(const DistContext& dist, size_t expert_begin, size_t total, Backend* device)
    : dist_(dist),
      staging_device_(device && !device->memory_is_host() && dist.info.world > 1 ? device : nullptr),
      total_(total) {
  auto add = [&](size_t begin, size_t end, Comm* comm) {
    if (end <= begin) return;
    Region r;
    r.begin = begin, r.end = end, r.comm = comm, r.n = comm->size(), r.index = comm->rank();
    r.shard = (end - begin + r.n - 1) / r.n;
    regions_.push_back(r);
    const ParamRange o = owned_range(r);
    if (o.size() > 0) owned_.push_back(o);
  };
  add(0, expert_begin, dist.world.get());
  add(expert_begin, total, dist.edp.get());
}

ParamRange DataParallel::owned_range(const Region& r) const {
  const size_t lo = std::min(r.end, r.begin + size_t(r.index) * r.shard);
  return {lo, std::min(r.end, lo + r.shard)};
}

void DataParallel::reduce_gradients(float* grads) {
  if (dist_.info.world == 1) return;
  if (!staging_device_) return reduce_host(grads);
  host_.resize(total_);
  staging_device_->download(host_.data(), grads, total_ * sizeof(float));
  reduce_host(host_.data());
  for (const ParamRange& o : owned_)  // only the owned shards are read by the optimizer
    staging_device_->upload(grads + o.begin, host_.data() + o.begin, o.size() * sizeof(float));
}

void DataParallel::gather(float* buf) {
  if (dist_.info.world == 1) return;
  if (!staging_device_) return gather_host(buf);
  host_.resize(total_);
  for (const ParamRange& o : owned_)
    staging_device_->download(host_.data() + o.begin, buf + o.begin, o.size() * sizeof(float));
  gather_host(host_.data());
  staging_device_->upload(buf, host_.data(), total_ * sizeof(float));
}

void DataParallel::reduce_host(float* grads) {
  const int W = dist_.info.world;
  const float inv_world = 1.0f / float(W);
  for (const Region& r : regions_) {
    const ParamRange o = owned_range(r);
    if (r.n > 1) {
      send_.assign(r.shard * r.n, 0.0f);  // zero padding past the region's end
      std::memcpy(send_.data(), grads + r.begin, (r.end - r.begin) * sizeof(float));
      recv_.resize(r.shard);
      r.comm->reduce_scatter_sum(send_.data(), recv_.data(), r.shard);
      std::memcpy(grads + o.begin, recv_.data(), o.size() * sizeof(float));
    }
    // Every rank's loss is a mean over its own tokens: the global mean divides the sum by W
    // (expert gradients already hold the whole expert-parallel group's contributions).
    for (size_t i = o.begin; i < o.end; ++i) grads[i] *= inv_world;
  }
}

void DataParallel::gather_host(float* buf) {
  for (const Region& r : regions_) {
    if (r.n == 1) continue;
    const ParamRange o = owned_range(r);
    send_.assign(r.shard, 0.0f);
    std::memcpy(send_.data(), buf + o.begin, o.size() * sizeof(float));
    recv_.resize(r.shard * r.n);
    r.comm->allgather(send_.data(), recv_.data(), r.shard * sizeof(float));
    std::memcpy(buf + r.begin, recv_.data(), (r.end - r.begin) * sizeof(float));
  }
}

double DataParallel::sum_over_ranks(double x) const {
  dist_.world->allreduce_sum(&x, 1);
  return x;
}

}  // namespace competelm
