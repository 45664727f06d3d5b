// GELU, tanh approximation as GPT-2: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
#include <cmath>

#include "backend/cpu/ops.hpp"

namespace competelm::cpu {
namespace {
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCubic = 0.044715f;
}  // namespace

void gelu_forward(float* out, const float* inp, size_t n) {
  const long len = static_cast<long>(n);
#pragma omp parallel for simd schedule(static)
  for (long i = 0; i < len; i++) {
    const float x = inp[i];
    const float u = kSqrt2OverPi * (x + kCubic * x * x * x);
    out[i] = 0.5f * x * (1.0f + std::tanh(u));
  }
}

// d/dx = 0.5·(1 + tanh u) + 0.5·x·(1 - tanh² u)·√(2/π)·(1 + 3·0.044715·x²)
void gelu_backward(float* dinp, const float* inp, const float* dout, size_t n) {
  const long len = static_cast<long>(n);
#pragma omp parallel for simd schedule(static)
  for (long i = 0; i < len; i++) {
    const float x = inp[i];
    const float u = kSqrt2OverPi * (x + kCubic * x * x * x);
    const float th = std::tanh(u);
    const float sech2 = 1.0f - th * th;
    const float local = 0.5f * (1.0f + th) +
                        0.5f * x * sech2 * kSqrt2OverPi * (1.0f + 3.0f * kCubic * x * x);
    dinp[i] += local * dout[i];
  }
}

}  // namespace competelm::cpu
