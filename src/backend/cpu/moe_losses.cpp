// MoE auxiliary losses (balance, z-loss, router distillation, diversity) and routing
// statistics. Each loss is a mean computed in double; per-row terms are written to a vector by
// the OpenMP loop and summed serially afterwards, so the value does not depend on the thread
// count. Gradients ACCUMULATE scale·∂loss/∂x into the d pointer when it is not null.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "backend/cpu/ops.hpp"

namespace competelm::cpu {
namespace {
constexpr double kTiny = 1e-30;  // floor inside log() so an exactly-empty expert stays finite

double ordered_sum(const std::vector<double>& v) { return std::accumulate(v.begin(), v.end(), 0.0); }
}  // namespace

// loss = (1/B) Σ_b Σ_e P_be log P_be; ∂loss/∂p[b,t,e] = (log P_be + 1) / (B·T).
double moe_entropy_balance(float* dp, const float* p, int B, int T, int E, float scale) {
  std::vector<double> per_seq(static_cast<size_t>(B));
  std::vector<double> P(static_cast<size_t>(B) * E);
#pragma omp parallel for schedule(static)
  for (int b = 0; b < B; b++) {
    double* Pb = P.data() + static_cast<size_t>(b) * E;
    for (int t = 0; t < T; t++) {
      const float* r = p + (static_cast<size_t>(b) * T + t) * E;
      for (int e = 0; e < E; e++) Pb[e] += r[e];
    }
    double negH = 0.0;
    for (int e = 0; e < E; e++) {
      Pb[e] /= T;
      negH += Pb[e] * std::log(std::max(Pb[e], kTiny));
    }
    per_seq[b] = negH;
  }
  if (dp) {
    const double c = static_cast<double>(scale) / (static_cast<double>(B) * T);
#pragma omp parallel for schedule(static)
    for (int n = 0; n < B * T; n++) {
      const double* Pb = P.data() + static_cast<size_t>(n / T) * E;
      float* d = dp + static_cast<size_t>(n) * E;
      for (int e = 0; e < E; e++) d[e] += static_cast<float>(c * (std::log(std::max(Pb[e], kTiny)) + 1.0));
    }
  }
  return ordered_sum(per_seq) / B;
}

// loss = E Σ_e f_e P_e, f and P means over tokens; ∂/∂p[n,e] = E f_e / N (f held constant).
double moe_switch_balance(float* dp, const float* p, const int32_t* idx, int N, int E, int K, float scale) {
  std::vector<double> f(static_cast<size_t>(E)), P(static_cast<size_t>(E));
  for (int n = 0; n < N; n++) {
    f[idx[static_cast<size_t>(n) * K]] += 1.0;
    const float* r = p + static_cast<size_t>(n) * E;
    for (int e = 0; e < E; e++) P[e] += r[e];
  }
  double loss = 0.0;
  for (int e = 0; e < E; e++) {
    f[e] /= N;
    loss += f[e] * P[e] / N;
  }
  loss *= E;
  if (dp) {
    std::vector<float> g(static_cast<size_t>(E));
    for (int e = 0; e < E; e++) g[e] = static_cast<float>(static_cast<double>(scale) * E * f[e] / N);
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
      float* d = dp + static_cast<size_t>(n) * E;
      for (int e = 0; e < E; e++) d[e] += g[e];
    }
  }
  return loss;
}

// loss = mean_n lse_n²; ∂/∂g[n,e] = 2 lse_n softmax(g_n)_e / N.
double moe_z_loss(float* dlogits, const float* logits, int N, int E, float scale) {
  std::vector<double> per_row(static_cast<size_t>(N));
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const float* g = logits + static_cast<size_t>(n) * E;
    const double mx = *std::max_element(g, g + E);
    double sum = 0.0;
    for (int e = 0; e < E; e++) sum += std::exp(g[e] - mx);
    const double lse = mx + std::log(sum);
    per_row[n] = lse * lse;
    if (dlogits) {
      const double c = 2.0 * scale * lse / N;
      float* d = dlogits + static_cast<size_t>(n) * E;
      for (int e = 0; e < E; e++) d[e] += static_cast<float>(c * std::exp(g[e] - lse));
    }
  }
  return ordered_sum(per_row) / N;
}

double moe_distill_loss(float* dp, const float* p, const float* scores, const int32_t* idx, int N, int E,
                        int K, float theta, bool topk_target, float scale) {
  std::vector<double> per_row(static_cast<size_t>(N));
#pragma omp parallel
  {
    std::vector<double> t(static_cast<size_t>(E));
#pragma omp for schedule(static)
    for (int n = 0; n < N; n++) {
      const float* s = scores + static_cast<size_t>(n) * E;
      const float* pr = p + static_cast<size_t>(n) * E;
      const int32_t* w = idx + static_cast<size_t>(n) * K;
      // target (stop-gradient): softmax over all E, or over the K winners only
      std::fill(t.begin(), t.end(), 0.0);
      double mx = -INFINITY, sum = 0.0;
      if (topk_target) {
        for (int k = 0; k < K; k++) mx = std::max(mx, static_cast<double>(s[w[k]]));
        for (int k = 0; k < K; k++) sum += (t[w[k]] = std::exp(s[w[k]] - mx));
      } else {
        for (int e = 0; e < E; e++) mx = std::max(mx, static_cast<double>(s[e]));
        for (int e = 0; e < E; e++) sum += (t[e] = std::exp(s[e] - mx));
      }
      for (double& v : t) v /= sum;
      double full = 0.0, hyb = 0.0;
      for (int e = 0; e < E; e++) full += (pr[e] - t[e]) * (pr[e] - t[e]);
      for (int k = 0; k < K; k++) hyb += (pr[w[k]] - t[w[k]]) * (pr[w[k]] - t[w[k]]);
      per_row[n] = full / E + theta * hyb / K;
      if (dp) {
        float* d = dp + static_cast<size_t>(n) * E;
        const double cf = 2.0 * scale / (static_cast<double>(N) * E);
        const double ch = 2.0 * scale * theta / (static_cast<double>(N) * K);
        for (int e = 0; e < E; e++) d[e] += static_cast<float>(cf * (pr[e] - t[e]));
        for (int k = 0; k < K; k++) d[w[k]] += static_cast<float>(ch * (pr[w[k]] - t[w[k]]));
      }
    }
  }
  return ordered_sum(per_row) / N;
}

// L_n = (1/K²) Σ_{i≠j} <u_i, u_j>, u = o/|o|. ∂L_n/∂o_i = (2/K²)(Σ_{j≠i} u_j − c_i u_i)/|o_i|,
// c_i = Σ_{j≠i} <u_i, u_j>.
double moe_diversity_loss(float* drows, const float* rows, const int32_t* row_of_slot, int N, int K, int C,
                          float scale) {
  std::vector<double> per_row(static_cast<size_t>(N));
  if (K < 2) return 0.0;
#pragma omp parallel
  {
    std::vector<double> norm(static_cast<size_t>(K)), cos(static_cast<size_t>(K) * K);
    std::vector<float> U(static_cast<size_t>(C));
#pragma omp for schedule(static)
    for (int n = 0; n < N; n++) {
      const int32_t* r = row_of_slot + static_cast<size_t>(n) * K;
      auto row = [&](int k) { return rows + static_cast<size_t>(r[k]) * C; };
      for (int i = 0; i < K; i++) {
        double ss = 0.0;
        const float* oi = row(i);
        for (int c = 0; c < C; c++) ss += static_cast<double>(oi[c]) * oi[c];
        norm[i] = std::max(std::sqrt(ss), 1e-12);
      }
      double tot = 0.0;
      for (int i = 0; i < K; i++)
        for (int j = i + 1; j < K; j++) {
          const float *oi = row(i), *oj = row(j);
          double dot = 0.0;
          for (int c = 0; c < C; c++) dot += static_cast<double>(oi[c]) * oj[c];
          cos[i * K + j] = cos[j * K + i] = dot / (norm[i] * norm[j]);
          tot += 2.0 * cos[i * K + j];
        }
      per_row[n] = tot / (static_cast<double>(K) * K);
      if (drows) {
        // Σ_{j≠i} u_j = U − u_i with U = Σ_j u_j: O(K·C) per token.
        std::fill(U.begin(), U.end(), 0.0f);
        for (int j = 0; j < K; j++) {
          const float* oj = row(j);
          const float inv = static_cast<float>(1.0 / norm[j]);
          for (int c = 0; c < C; c++) U[c] += oj[c] * inv;
        }
        const double c0 = 2.0 * scale / (static_cast<double>(K) * K * N);
        for (int i = 0; i < K; i++) {
          double ci = 0.0;
          for (int j = 0; j < K; j++)
            if (j != i) ci += cos[i * K + j];
          float* di = drows + static_cast<size_t>(r[i]) * C;
          const float* oi = row(i);
          const float a = static_cast<float>(c0 / norm[i]);
          const float ui = static_cast<float>(1.0 / norm[i]);
          const float b = static_cast<float>(ci + 1.0);  // U − u_i − ci·u_i = U − (ci + 1)·u_i
#pragma omp simd
          for (int c = 0; c < C; c++) di[c] += a * (U[c] - b * ui * oi[c]);
        }
      }
    }
  }
  return ordered_sum(per_row) / N;
}

double moe_mean_entropy(const float* p, int N, int E) {
  std::vector<double> per_row(static_cast<size_t>(N));
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const float* r = p + static_cast<size_t>(n) * E;
    double h = 0.0;
    for (int e = 0; e < E; e++)
      if (r[e] > 0) h -= r[e] * std::log(static_cast<double>(r[e]));
    per_row[n] = h;
  }
  return ordered_sum(per_row) / N;
}

double moe_topk_overlap(const int32_t* a, const int32_t* b, int N, int K) {
  long hits = 0;
  for (int n = 0; n < N; n++)
    for (int i = 0; i < K; i++)
      for (int j = 0; j < K; j++) hits += a[n * K + i] == b[n * K + j];
  return static_cast<double>(hits) / (static_cast<double>(N) * K);
}

}  // namespace competelm::cpu
