// Element-wise adds and scaling (residual connections, gradient accumulation, clipping).
#include "backend/cpu/ops.hpp"

namespace competelm::cpu {

void residual_forward(float* out, const float* a, const float* b, size_t n) {
  const long len = static_cast<long>(n);
#pragma omp parallel for simd schedule(static)
  for (long i = 0; i < len; i++) out[i] = a[i] + b[i];
}

void accumulate(float* y, const float* x, size_t n) {
  const long len = static_cast<long>(n);
#pragma omp parallel for simd schedule(static)
  for (long i = 0; i < len; i++) y[i] += x[i];
}

void scale(float* x, float s, size_t n) {
  const long len = static_cast<long>(n);
#pragma omp parallel for simd schedule(static)
  for (long i = 0; i < len; i++) x[i] *= s;
}

}  // namespace competelm::cpu
