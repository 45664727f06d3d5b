// GELU, tanh approximation as GPT-2: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
#include <omp.h>

#include <algorithm>

#include "backend/cpu/ops.hpp"
#include "backend/cpu/simd.hpp"

namespace competelm::cpu {
namespace {
constexpr size_t kVec = 16;
// Splits [0, n) into per-thread chunks that start on a 16-float vector boundary.
template <class Body>
void parallel_chunks(size_t n, Body&& body) {
#pragma omp parallel
  {
    const size_t nth = static_cast<size_t>(omp_get_num_threads()), tid = static_cast<size_t>(omp_get_thread_num());
    const size_t vecs = (n + kVec - 1) / kVec;
    const size_t lo = std::min(n, vecs * tid / nth * kVec);
    const size_t hi = std::min(n, vecs * (tid + 1) / nth * kVec);
    if (hi > lo) body(lo, hi - lo);
  }
}
}  // namespace

void gelu_forward(float* out, const float* inp, size_t n) {
  parallel_chunks(n, [&](size_t lo, size_t len) { simd::kernels().gelu_forward(out + lo, inp + lo, len); });
}

void gelu_backward(float* dinp, const float* inp, const float* dout, size_t n, GradMode mode) {
  const simd::Kernels& k = simd::kernels();
  const auto kernel = mode == GradMode::overwrite ? k.gelu_backward_set : k.gelu_backward;
  parallel_chunks(n, [&](size_t lo, size_t len) { kernel(dinp + lo, inp + lo, dout + lo, len); });
}

}  // namespace competelm::cpu
