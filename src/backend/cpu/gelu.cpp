// GELU, tanh approximation as GPT-2: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
#include <omp.h>

#include <algorithm>

#include "backend/cpu/ops.hpp"
#include "backend/cpu/simd.hpp"

namespace competelm::cpu {
namespace {
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCubic = 0.044715f;

// Splits [0, n) into per-thread chunks that start on a vector boundary.
template <class Body>
void parallel_chunks(size_t n, Body&& body) {
#pragma omp parallel
  {
    const size_t nth = static_cast<size_t>(omp_get_num_threads()), tid = static_cast<size_t>(omp_get_thread_num());
    const size_t vecs = (n + simd::kWidth - 1) / simd::kWidth;
    const size_t lo = std::min(n, vecs * tid / nth * simd::kWidth);
    const size_t hi = std::min(n, vecs * (tid + 1) / nth * simd::kWidth);
    if (hi > lo) body(lo, hi - lo);
  }
}
}  // namespace

void gelu_forward(float* out, const float* inp, size_t n) {
  parallel_chunks(n, [&](size_t lo, size_t len) {
    simd::map(out + lo, len, [](simd::f32x4 x) {
      const simd::f32x4 u = kSqrt2OverPi * (x + kCubic * x * x * x);
      return 0.5f * x * (1.0f + simd::tanh(u));
    }, inp + lo);
  });
}

// d/dx = 0.5·(1 + tanh u) + 0.5·x·(1 - tanh² u)·√(2/π)·(1 + 3·0.044715·x²)
void gelu_backward(float* dinp, const float* inp, const float* dout, size_t n) {
  parallel_chunks(n, [&](size_t lo, size_t len) {
    simd::map(dinp + lo, len, [](simd::f32x4 x, simd::f32x4 d, simd::f32x4 acc) {
      const simd::f32x4 u = kSqrt2OverPi * (x + kCubic * x * x * x);
      const simd::f32x4 th = simd::tanh(u);
      const simd::f32x4 sech2 = 1.0f - th * th;
      const simd::f32x4 local = 0.5f * (1.0f + th) +
                                0.5f * x * sech2 * kSqrt2OverPi * (1.0f + 3.0f * kCubic * x * x);
      return acc + local * d;
    }, inp + lo, dout + lo, dinp + lo);
  });
}

}  // namespace competelm::cpu
