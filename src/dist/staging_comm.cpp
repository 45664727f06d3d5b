#include "dist/staging_comm.hpp"

#include <cstdlib>
#include <exception>
#include <functional>
#include <numeric>

#include "backend/backend.hpp"

namespace competelm {

StagingComm::StagingComm(std::shared_ptr<Comm> host, Backend& device) : host_(std::move(host)), device_(device) {}

void StagingComm::down(void* host, const void* device, size_t bytes) {
  if (bytes == 0) return;
  device_.download(host, device, bytes);
  bytes_down_ += bytes;
}

void StagingComm::up(void* device, const void* host, size_t bytes) {
  if (bytes == 0) return;
  device_.upload(device, host, bytes);
  bytes_up_ += bytes;
}

void StagingComm::allreduce_sum(double* data, size_t n) {
  const size_t bytes = n * sizeof(double);
  send_.resize(bytes);
  down(send_.data(), data, bytes);
  host_->allreduce_sum(reinterpret_cast<double*>(send_.data()), n);
  up(data, send_.data(), bytes);
}

void StagingComm::allreduce_sum(int64_t* data, size_t n) {
  const size_t bytes = n * sizeof(int64_t);
  send_.resize(bytes);
  down(send_.data(), data, bytes);
  host_->allreduce_sum(reinterpret_cast<int64_t*>(send_.data()), n);
  up(data, send_.data(), bytes);
}

int StagingComm::allreduce_max(int value) { return host_->allreduce_max(value); }

void StagingComm::reduce_scatter_sum(const float* send, float* recv, size_t n) {
  const size_t shard = n * sizeof(float);
  send_.resize(shard * size_t(size()));
  recv_.resize(shard);
  down(send_.data(), send, send_.size());
  host_->reduce_scatter_sum(reinterpret_cast<const float*>(send_.data()), reinterpret_cast<float*>(recv_.data()), n);
  up(recv, recv_.data(), shard);
}

namespace {
// A staged reduce-scatter in flight: its host buffers live as long as the host collective.
class StagedRequest final : public CommRequest {
 public:
  StagedRequest(std::vector<float> send, size_t n, float* device_recv, std::function<void(float*, const float*, size_t)> up)
      : send_(std::move(send)), recv_(n), device_recv_(device_recv), up_(std::move(up)) {}
  void start(Comm& host) { inner_ = host.start_reduce_scatter_sum(send_.data(), recv_.data(), recv_.size()); }
  ~StagedRequest() override {
    if (inner_ && std::uncaught_exceptions() == 0) wait();
  }
  void wait() override {
    if (!inner_) return;
    inner_->wait();
    inner_.reset();
    up_(device_recv_, recv_.data(), recv_.size());
  }
  void poll() override {
    if (inner_) inner_->poll();
  }

 private:
  std::vector<float> send_, recv_;
  float* device_recv_;
  std::function<void(float*, const float*, size_t)> up_;
  std::unique_ptr<CommRequest> inner_;
};
}  // namespace

std::unique_ptr<CommRequest> StagingComm::start_reduce_scatter_sum(const float* send, float* recv, size_t n) {
  std::vector<float> host_send(n * size_t(size()));
  down(host_send.data(), send, host_send.size() * sizeof(float));
  auto req = std::make_unique<StagedRequest>(std::move(host_send), n, recv, [this](float* d, const float* h, size_t k) {
    up(d, h, k * sizeof(float));
  });
  req->start(*host_);
  return req;
}

void StagingComm::allgather(const void* send, void* recv, size_t bytes) {
  send_.resize(bytes);
  recv_.resize(bytes * size_t(size()));
  down(send_.data(), send, bytes);
  host_->allgather(send_.data(), recv_.data(), bytes);
  up(recv, recv_.data(), recv_.size());
}

void StagingComm::alltoall(const void* send, void* recv, size_t bytes) {
  const size_t total = bytes * size_t(size());
  send_.resize(total);
  recv_.resize(total);
  down(send_.data(), send, total);
  host_->alltoall(send_.data(), recv_.data(), bytes);
  up(recv, recv_.data(), total);
}

void StagingComm::alltoallv(const void* send, const std::vector<int64_t>& send_bytes, void* recv,
                            const std::vector<int64_t>& recv_bytes) {
  const auto sent = size_t(std::accumulate(send_bytes.begin(), send_bytes.end(), int64_t{0}));
  const auto received = size_t(std::accumulate(recv_bytes.begin(), recv_bytes.end(), int64_t{0}));
  send_.resize(sent);
  recv_.resize(received);
  down(send_.data(), send, sent);
  host_->alltoallv(send_.data(), send_bytes, recv_.data(), recv_bytes);
  up(recv, recv_.data(), received);
}

void StagingComm::broadcast(void* data, size_t bytes, int root) {
  send_.resize(bytes);
  if (rank() == root) down(send_.data(), data, bytes);
  host_->broadcast(send_.data(), bytes, root);
  if (rank() != root) up(data, send_.data(), bytes);
}

void StagingComm::barrier() { host_->barrier(); }

std::unique_ptr<Comm> StagingComm::split(int color, int key) {
  return std::make_unique<StagingComm>(std::shared_ptr<Comm>(host_->split(color, key)), device_);
}

void StagingComm::abort(int code) {
  host_->abort(code);
  std::abort();  // unreachable: Comm::abort never returns (for the compiler)
}

}  // namespace competelm
