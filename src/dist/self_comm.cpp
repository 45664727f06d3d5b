// SelfComm: the communicator of a single-process run. Every collective is a copy (or nothing),
// so the trainer and the MoE layer have one code path for one rank and for many.
#include <cstdlib>
#include <cstring>

#include "core/error.hpp"
#include "dist/comm.hpp"

namespace competelm {
namespace {

class SelfComm final : public Comm {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void allreduce_sum(double*, size_t) override {}
  void allreduce_sum(int64_t*, size_t) override {}
  int allreduce_max(int value) override { return value; }
  void reduce_scatter_sum(const float* send, float* recv, size_t n) override { copy(recv, send, n * sizeof(float)); }
  void allgather(const void* send, void* recv, size_t bytes) override { copy(recv, send, bytes); }
  void alltoall(const void* send, void* recv, size_t bytes) override { copy(recv, send, bytes); }
  void alltoallv(const void* send, const std::vector<int64_t>& send_bytes, void* recv,
                 const std::vector<int64_t>& recv_bytes) override {
    CLM_ASSERT(send_bytes.size() == 1 && recv_bytes.size() == 1 && send_bytes[0] == recv_bytes[0]);
    copy(recv, send, static_cast<size_t>(send_bytes[0]));
  }
  void broadcast(void*, size_t, int) override {}
  void barrier() override {}
  std::unique_ptr<Comm> split(int, int) override { return make_self_comm(); }
  [[noreturn]] void abort(int code) override { std::exit(code); }

 private:
  static void copy(void* dst, const void* src, size_t bytes) {
    if (dst != src && bytes > 0) std::memmove(dst, src, bytes);
  }
};

}  // namespace

std::unique_ptr<Comm> make_self_comm() { return std::make_unique<SelfComm>(); }

}  // namespace competelm
