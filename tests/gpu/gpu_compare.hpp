#pragma once
// Helpers for the CUDA-vs-CPU op tests: one CPU and one CUDA backend, random host inputs put
// on both, outputs brought back and compared with a stated tolerance.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.hpp"
#include "core/rng.hpp"

namespace competelm::gpu_testing {

struct Pair {
  std::unique_ptr<Backend> cpu = make_backend("cpu", 0);
  std::unique_ptr<Backend> cuda = make_backend("cuda", 0);
};

inline std::vector<float> randn(size_t n, uint64_t seed, float scale = 1.0f) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (float& x : v) x = scale * rng.normal();
  return v;
}

// randn rounded to bf16 (nearest even): a bf16 GEMM on these multiplies exactly, so it must
// match the fp32 CPU up to the order of fp32 accumulation.
inline std::vector<float> randn_bf16(size_t n, uint64_t seed, float scale = 1.0f) {
  std::vector<float> v = randn(n, seed, scale);
  for (float& x : v) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
    std::memcpy(&x, &u, 4);
  }
  return v;
}

// A buffer with the same contents on both backends (freed with the Pair's backends alive).
template <typename T>
struct Twin {
  Backend& a;
  Backend& b;
  T* cpu = nullptr;
  T* cuda = nullptr;
  size_t n = 0;
  Twin(Pair& p, const std::vector<T>& host) : a(*p.cpu), b(*p.cuda), n(host.size()) {
    cpu = static_cast<T*>(a.alloc(std::max<size_t>(n, 1) * sizeof(T)));
    cuda = static_cast<T*>(b.alloc(std::max<size_t>(n, 1) * sizeof(T)));
    a.upload(cpu, host.data(), n * sizeof(T));
    b.upload(cuda, host.data(), n * sizeof(T));
  }
  Twin(Pair& p, size_t count) : Twin(p, std::vector<T>(count, T{})) {}
  ~Twin() {
    a.dealloc(cpu);
    b.dealloc(cuda);
  }
  Twin(const Twin&) = delete;
  Twin& operator=(const Twin&) = delete;
  std::vector<T> host_cpu() const {
    std::vector<T> h(n);
    a.download(h.data(), cpu, n * sizeof(T));
    return h;
  }
  std::vector<T> host_cuda() const {
    std::vector<T> h(n);
    b.download(h.data(), cuda, n * sizeof(T));
    return h;
  }
};

// |cuda - cpu| ≤ atol + rtol·|cpu| everywhere; reports the worst element.
inline void require_close(const std::vector<float>& cpu, const std::vector<float>& cuda, double rtol, double atol,
                          const std::string& what) {
  REQUIRE(cpu.size() == cuda.size());
  size_t worst = 0;
  double worst_excess = -1e300;
  for (size_t i = 0; i < cpu.size(); ++i) {
    const double excess = std::abs(double(cuda[i]) - cpu[i]) - (atol + rtol * std::abs(double(cpu[i])));
    if (!std::isfinite(cuda[i])) {
      worst = i, worst_excess = 1e300;
      break;
    }
    if (excess > worst_excess) worst = i, worst_excess = excess;
  }
  INFO(what << ": worst element " << worst << " cpu " << cpu[worst] << " cuda " << cuda[worst] << " (rtol " << rtol
            << ", atol " << atol << ")");
  REQUIRE(worst_excess <= 0.0);
}

template <typename T>
void require_close(const Twin<T>& t, double rtol, double atol, const std::string& what) {
  require_close(t.host_cpu(), t.host_cuda(), rtol, atol, what);
}

}  // namespace competelm::gpu_testing
