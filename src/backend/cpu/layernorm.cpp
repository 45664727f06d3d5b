// LayerNorm over the last dimension (eps 1e-5, biased variance, as torch.nn.LayerNorm).
#include <omp.h>

#include <cmath>
#include <vector>

#include "backend/cpu/ops.hpp"

namespace competelm::cpu {

namespace {

// The rest of one row's layernorm once Σ x is known: variance about the mean (two passes avoid
// the cancellation of E[x²]-E[x]²), then the normalised, scaled and shifted output. Shared by
// layernorm_forward and residual_layernorm_forward so that both run the same fp32 operations.
inline void normalize_row(float* o, float* mean, float* rstd, const float* x, const float* weight,
                          const float* bias, float sum, int C) {
  const float m = sum / static_cast<float>(C);
  float var = 0.0f;
#pragma omp simd reduction(+ : var)
  for (int c = 0; c < C; c++) {
    const float d = x[c] - m;
    var += d * d;
  }
  const float s = 1.0f / std::sqrt(var / static_cast<float>(C) + kLayerNormEps);
#pragma omp simd
  for (int c = 0; c < C; c++) o[c] = (x[c] - m) * s * weight[c] + bias[c];
  *mean = m;
  *rstd = s;
}

}  // namespace

void layernorm_forward(float* out /*(N,C)*/, float* mean /*(N)*/, float* rstd /*(N)*/,
                       const float* inp /*(N,C)*/, const float* weight /*(C)*/,
                       const float* bias /*(C)*/, int N, int C) {
#pragma omp parallel for schedule(static)
  for (int i = 0; i < N; i++) {
    const float* x = inp + static_cast<size_t>(i) * C;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int c = 0; c < C; c++) sum += x[c];
    normalize_row(out + static_cast<size_t>(i) * C, mean + i, rstd + i, x, weight, bias, sum, C);
  }
}

// The residual add folded into the mean's pass: each row is read from memory once (the later
// passes find it in cache). The sums are the same fp32 adds in the same order as accumulate +
// layernorm_forward, so the results are bit-identical to the two calls.
void residual_layernorm_forward(float* res /*(N,C)*/, const float* x /*(N,C)*/, float* out /*(N,C)*/,
                                float* mean /*(N)*/, float* rstd /*(N)*/, const float* weight /*(C)*/,
                                const float* bias /*(C)*/, int N, int C) {
#pragma omp parallel for schedule(static)
  for (int i = 0; i < N; i++) {
    float* r = res + static_cast<size_t>(i) * C;
    const float* xi = x + static_cast<size_t>(i) * C;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int c = 0; c < C; c++) {
      const float v = r[c] + xi[c];
      r[c] = v;
      sum += v;
    }
    normalize_row(out + static_cast<size_t>(i) * C, mean + i, rstd + i, r, weight, bias, sum, C);
  }
}

// dweight and dbias sum over rows: each thread sums a contiguous block of rows into its own
// partial (static split), and the partials are then added in thread order.
void layernorm_backward(float* dinp /*(N,C)*/, float* dweight /*(C)*/, float* dbias /*(C)*/,
                        const float* dout /*(N,C)*/, const float* inp /*(N,C)*/,
                        const float* weight /*(C)*/, const float* mean /*(N)*/,
                        const float* rstd /*(N)*/, int N, int C) {
  const int max_threads = omp_get_max_threads();
  std::vector<float> partial(static_cast<size_t>(max_threads) * 2 * C, 0.0f);  // (threads, 2, C)
  int used_threads = 1;
#pragma omp parallel
  {
    const int nth = omp_get_num_threads(), tid = omp_get_thread_num();
#pragma omp single
    used_threads = nth;
    float* pw = partial.data() + static_cast<size_t>(tid) * 2 * C;
    float* pb = pw + C;
    const int r0 = static_cast<int>(static_cast<long>(N) * tid / nth);
    const int r1 = static_cast<int>(static_cast<long>(N) * (tid + 1) / nth);
    for (int i = r0; i < r1; i++) {
      const float* x = inp + static_cast<size_t>(i) * C;
      const float* d = dout + static_cast<size_t>(i) * C;
      float* dx = dinp + static_cast<size_t>(i) * C;
      const float m = mean[i], s = rstd[i];
      // mean over c of dnorm and of dnorm·norm, where norm = (x-m)·s and dnorm = d·w
      float dnorm_mean = 0.0f, dnorm_norm_mean = 0.0f;
#pragma omp simd reduction(+ : dnorm_mean, dnorm_norm_mean)
      for (int c = 0; c < C; c++) {
        const float norm = (x[c] - m) * s;
        const float dnorm = d[c] * weight[c];
        dnorm_mean += dnorm;
        dnorm_norm_mean += dnorm * norm;
      }
      dnorm_mean /= static_cast<float>(C);
      dnorm_norm_mean /= static_cast<float>(C);
#pragma omp simd
      for (int c = 0; c < C; c++) {
        const float norm = (x[c] - m) * s;
        const float dnorm = d[c] * weight[c];
        pb[c] += d[c];
        pw[c] += norm * d[c];
        dx[c] += (dnorm - dnorm_mean - norm * dnorm_norm_mean) * s;
      }
    }
  }
  for (int th = 0; th < used_threads; th++) {
    const float* pw = partial.data() + static_cast<size_t>(th) * 2 * C;
    const float* pb = pw + C;
    for (int c = 0; c < C; c++) {
      dweight[c] += pw[c];
      dbias[c] += pb[c];
    }
  }
}

}  // namespace competelm::cpu
