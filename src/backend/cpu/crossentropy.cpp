// Softmax cross-entropy over the first V of Vp logit columns (the padding columns are never
// read). The backward recomputes the softmax row by row, so it can overwrite the logits in
// place and the (N,Vp) probability tensor is never stored.
#include <algorithm>
#include <cmath>

#include "backend/cpu/ops.hpp"
#include "backend/cpu/simd.hpp"
#include "core/error.hpp"

namespace competelm::cpu {
namespace {

void check_targets(const int32_t* targets, int N, int V) {
  for (int i = 0; i < N; i++)
    if (targets[i] < 0 || targets[i] >= V)
      fail("crossentropy: target {} at row {} is outside the vocabulary [0, {})", targets[i], i, V);
}

struct RowStats {
  float max;
  float log_sum;  // log Σ exp(x - max)
};

RowStats row_stats(const float* x, int V) {
  using simd::f32x4;
  const size_t n = static_cast<size_t>(V), full = n / simd::kWidth * simd::kWidth;
  f32x4 mv = simd::splat(-INFINITY);
  for (size_t j = 0; j < full; j += simd::kWidth) mv = simd::vmax(mv, simd::load(x + j));
  if (full < n) mv = simd::vmax(mv, simd::load_partial(x + full, n - full, -INFINITY));
  const float m = simd::hmax(mv);
  // Σ exp(x - m) in double (V is ~50k terms; the small ones must not be lost), 4 lanes
  // added in a fixed order.
  simd::f64x4 acc{};
  for (size_t j = 0; j < full; j += simd::kWidth)
    acc += __builtin_convertvector(simd::exp(simd::load(x + j) - m), simd::f64x4);
  if (full < n) {
    f32x4 e = simd::exp(simd::load_partial(x + full, n - full, 0.0f) - m);
    for (size_t k = n - full; k < simd::kWidth; k++) e[k] = 0.0f;  // padded lanes add nothing
    acc += __builtin_convertvector(e, simd::f64x4);
  }
  const double sum = (acc[0] + acc[1]) + (acc[2] + acc[3]);
  return {m, static_cast<float>(std::log(sum))};
}

}  // namespace

void crossentropy_forward(float* losses /*(N)*/, const float* logits /*(N,Vp)*/,
                          const int32_t* targets /*(N)*/, int N, int V, int Vp) {
  check_targets(targets, N, V);
#pragma omp parallel for schedule(static)
  for (int i = 0; i < N; i++) {
    const float* x = logits + static_cast<size_t>(i) * Vp;
    const RowStats s = row_stats(x, V);
    losses[i] = s.log_sum + s.max - x[targets[i]];
  }
}

void crossentropy_backward(float* dlogits /*(N,Vp)*/, const float* logits /*(N,Vp)*/,
                           const int32_t* targets /*(N)*/, float dloss, int N, int V, int Vp) {
  check_targets(targets, N, V);
#pragma omp parallel for schedule(static)
  for (int i = 0; i < N; i++) {
    const float* x = logits + static_cast<size_t>(i) * Vp;
    float* dx = dlogits + static_cast<size_t>(i) * Vp;  // may be x itself
    const RowStats s = row_stats(x, V);
    const float shift = s.max + s.log_sum;  // p_j = exp(x_j - shift)
    const int target = targets[i];
    // Each x[j] is read before dx[j] is written at the same index, so aliasing is safe.
    simd::map(dx, static_cast<size_t>(V), [&](simd::f32x4 xv) { return dloss * simd::exp(xv - shift); }, x);
    dx[target] -= dloss;
    for (int j = V; j < Vp; j++) dx[j] = 0.0f;
  }
}

}  // namespace competelm::cpu
