// CompeteSMoE scoring: each expert's output rows reduced to one score per token as they are
// produced, the backward of that reduction, and the running per-token top-K that keeps only
// the winners' output and hidden rows (so [N, E, C] is never materialised).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "backend/cpu/ops.hpp"
#include "backend/cpu/simd.hpp"

namespace competelm::cpu {
namespace {

// Scratch of one row per thread for the vector exp kernel.
float* row_scratch(int C) {
  thread_local std::vector<float> buf;
  if (buf.size() < size_t(C)) buf.resize(C);
  return buf.data();
}

// Σ_c softplus(r[c]), softplus x = max(x, 0) + log1p(e^{-|x|}). With u = e^{-|x|} ∈ (0, 1]
// (the vector exp kernel), log(1 + u) = 2·atanh(t), t = u / (2 + u) ≤ 1/3, whose odd series
// to t¹³ is accurate to < 5e-8: no libm log in the loop, which the compiler vectorises (the
// score pass sees every expert's every output).
float sum_softplus(const float* r, int C) {
  float* u = row_scratch(C);
#pragma omp simd
  for (int c = 0; c < C; c++) u[c] = -std::fabs(r[c]);
  simd::kernels().exp_shifted(u, u, size_t(C), 0.0f, 1.0f);
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int c = 0; c < C; c++) {
    const float t = u[c] / (2.0f + u[c]), t2 = t * t;
    float p = 1.0f / 13;
    p = p * t2 + 1.0f / 11;
    p = p * t2 + 1.0f / 9;
    p = p * t2 + 1.0f / 7;
    p = p * t2 + 1.0f / 5;
    p = p * t2 + 1.0f / 3;
    p = p * t2 + 1.0f;
    s += std::max(r[c], 0.0f) + 2.0f * t * p;
  }
  return s;
}
float sum_squares_row(const float* r, int C) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int c = 0; c < C; c++) s += r[c] * r[c];
  return s;
}
}  // namespace

void moe_expert_score(float* scores, int stride, const float* o, int N, int C, bool l2) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const float* r = o + static_cast<size_t>(n) * C;
    scores[static_cast<size_t>(n) * stride] =
        l2 ? std::sqrt(sum_squares_row(r, C)) : sum_softplus(r, C) / static_cast<float>(C);
  }
}

// softplus_mean: ∂s/∂o_c = sigmoid(o_c) / C.  l2: ∂s/∂o = o / ||o||.
void moe_expert_score_backward(float* d_o, const float* dscores, int stride, const float* o, int N, int C,
                               bool l2) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const float ds = dscores[static_cast<size_t>(n) * stride];
    if (ds == 0.0f) continue;
    const float* r = o + static_cast<size_t>(n) * C;
    float* d = d_o + static_cast<size_t>(n) * C;
    if (l2) {
      const float a = ds / std::max(std::sqrt(sum_squares_row(r, C)), 1e-30f);
#pragma omp simd
      for (int c = 0; c < C; c++) d[c] += a * r[c];
    } else {
      const float a = ds / static_cast<float>(C);
      float* e = row_scratch(C);  // e^{-o}: sigmoid(o) = 1 / (1 + e^{-o})
#pragma omp simd
      for (int c = 0; c < C; c++) e[c] = -r[c];
      simd::kernels().exp_shifted(e, e, size_t(C), 0.0f, 1.0f);
#pragma omp simd
      for (int c = 0; c < C; c++) d[c] += a / (1.0f + e[c]);
    }
  }
}

void moe_compete_insert(int32_t* idx, float* best, float* keep_o, float* keep_h, const float* scores,
                        int stride, const float* o, const float* h, int expert, int N, int K, int C,
                        int H) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const float s = scores[static_cast<size_t>(n) * stride];
    int32_t* id = idx + static_cast<size_t>(n) * K;
    float* bs = best + static_cast<size_t>(n) * K;
    if (expert == 0)
      for (int k = 0; k < K; k++) id[k] = -1;
    // The slot to take: an empty one, else the worst held (lowest score; among equal scores
    // the highest expert index, which loses the tie).
    int slot = -1;
    for (int k = 0; k < K && slot < 0; k++)
      if (id[k] < 0) slot = k;
    if (slot < 0) {
      int worst = 0;
      for (int k = 1; k < K; k++)
        if (bs[k] < bs[worst] || (bs[k] == bs[worst] && id[k] > id[worst])) worst = k;
      if (!(s > bs[worst])) continue;  // ties keep the earlier (lower-index) expert
      slot = worst;
    }
    id[slot] = expert;
    bs[slot] = s;
    const size_t sl = static_cast<size_t>(n) * K + slot;
    std::memcpy(keep_o + sl * C, o + static_cast<size_t>(n) * C, sizeof(float) * C);
    std::memcpy(keep_h + sl * H, h + static_cast<size_t>(n) * H, sizeof(float) * H);
  }
}

}  // namespace competelm::cpu
