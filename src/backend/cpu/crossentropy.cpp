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

}  // namespace

void crossentropy_forward(float* losses /*(N)*/, const float* logits /*(N,Vp)*/,
                          const int32_t* targets /*(N)*/, int N, int V, int Vp) {
  check_targets(targets, N, V);
#pragma omp parallel for schedule(static)
  for (int i = 0; i < N; i++) {
    const float* x = logits + static_cast<size_t>(i) * Vp;
    const simd::SoftmaxStats s = simd::kernels().softmax_stats(x, static_cast<size_t>(V));
    losses[i] = static_cast<float>(std::log(s.sum_exp)) + s.max - x[targets[i]];
  }
}

void crossentropy_backward(float* dlogits /*(N,Vp)*/, const float* logits /*(N,Vp)*/,
                           const float* losses /*(N)*/, const int32_t* targets /*(N)*/, float dloss,
                           int N, int V, int Vp) {
  check_targets(targets, N, V);
#pragma omp parallel for schedule(static)
  for (int i = 0; i < N; i++) {
    const float* x = logits + static_cast<size_t>(i) * Vp;
    float* dx = dlogits + static_cast<size_t>(i) * Vp;  // may be x itself
    const int target = targets[i];
    // loss = log Σ exp(x) - x[target], so log Σ exp(x) = loss + x[target]: p_j = exp(x_j - shift).
    const float shift = losses[i] + x[target];
    // Each x[j] is read before dx[j] is written at the same index, so aliasing is safe.
    simd::kernels().exp_shifted(dx, x, static_cast<size_t>(V), shift, dloss);
    dx[target] -= dloss;
    for (int j = V; j < Vp; j++) dx[j] = 0.0f;
  }
}

}  // namespace competelm::cpu
