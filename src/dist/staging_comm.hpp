#pragma once
// A communicator for DEVICE memory built on a host-memory one (MPI): each collective copies its
// buffer arguments down from the device (Backend::download), runs the host collective, and
// copies the results up (Backend::upload). Scalars (allreduce_max), barrier and abort pass
// through; split wraps the host communicator's split.
//
// What it costs per call, in PCIe bytes (b = the call's buffer bytes on this rank, n ranks):
//   allreduce_sum      b down, b up
//   reduce_scatter_sum n·shard down, shard up
//   allgather          b down, n·b up
//   alltoall(v)        Σ sent down, Σ received up
//   broadcast          b down on the root, b up elsewhere
// plus the host collective itself. NCCL (dist/nccl_comm.hpp) moves none of this over PCIe.
//
// bytes_sent() stays 0: the host communicator counts the network traffic (DistContext sums
// the distinct communicators). Copies are synchronous (download waits for the device work before it), so the collective
// sees every kernel enqueued before the call, and the device sees the result after it.
#include <cstdint>
#include <memory>
#include <vector>

#include "dist/comm.hpp"

namespace competelm {

class Backend;

class StagingComm final : public Comm {
 public:
  // host: the communicator the collectives run on; device: the backend owning the buffers
  // (it must outlive this communicator).
  StagingComm(std::shared_ptr<Comm> host, Backend& device);

  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  void allreduce_sum(double* data, size_t n) override;
  void allreduce_sum(int64_t* data, size_t n) override;
  int allreduce_max(int value) override;
  void reduce_scatter_sum(const float* send, float* recv, size_t n) override;
  // Copies send down now and starts the host communicator's nonblocking reduce-scatter on
  // buffers of the request's own; wait() completes it and copies the shard up.
  std::unique_ptr<CommRequest> start_reduce_scatter_sum(const float* send, float* recv, size_t n) override;
  void allgather(const void* send, void* recv, size_t bytes) override;
  void alltoall(const void* send, void* recv, size_t bytes) override;
  void alltoallv(const void* send, const std::vector<int64_t>& send_bytes, void* recv,
                 const std::vector<int64_t>& recv_bytes) override;
  void broadcast(void* data, size_t bytes, int root) override;
  void barrier() override;
  std::unique_ptr<Comm> split(int color, int key) override;
  [[noreturn]] void abort(int code) override;

  // Bytes copied device → host and host → device by this communicator so far.
  uint64_t bytes_down() const { return bytes_down_; }
  uint64_t bytes_up() const { return bytes_up_; }

 private:
  void down(void* host, const void* device, size_t bytes);
  void up(void* device, const void* host, size_t bytes);

  std::shared_ptr<Comm> host_;
  Backend& device_;
  std::vector<unsigned char> send_, recv_;  // staging, reused across calls
  uint64_t bytes_down_ = 0, bytes_up_ = 0;
};

}  // namespace competelm
