// CompeteSMoE scoring: each expert's output rows reduced to one score per token as they are
// produced, the backward of that reduction, and the running per-token top-K that keeps only
// the winners' output and hidden rows (so [N, E, C] is never materialised).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "backend/cpu/ops.hpp"

namespace competelm::cpu {
namespace {
double softplus(double x) { return std::max(x, 0.0) + std::log1p(std::exp(-std::abs(x))); }
}  // namespace

void moe_expert_score(float* scores, int stride, const float* o, int N, int C, bool l2) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const float* r = o + static_cast<size_t>(n) * C;
    double acc = 0.0;
    if (l2) {
      for (int c = 0; c < C; c++) acc += static_cast<double>(r[c]) * r[c];
      acc = std::sqrt(acc);
    } else {
      for (int c = 0; c < C; c++) acc += softplus(r[c]);
      acc /= C;
    }
    scores[static_cast<size_t>(n) * stride] = static_cast<float>(acc);
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
      double ss = 0.0;
      for (int c = 0; c < C; c++) ss += static_cast<double>(r[c]) * r[c];
      const float a = static_cast<float>(ds / std::max(std::sqrt(ss), 1e-12));
      for (int c = 0; c < C; c++) d[c] += a * r[c];
    } else {
      const float a = ds / static_cast<float>(C);
      for (int c = 0; c < C; c++) d[c] += a / (1.0f + std::exp(-r[c]));
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
