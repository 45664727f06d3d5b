// Causal multi-head self-attention with the (B,NH,T,T) attention matrix materialised (the
// CPU oracle). Work is split over the B·NH (batch, head) pairs; each pair reads and writes
// only its own head's columns, so the threads never touch the same memory. Within a head,
// the products are single-threaded sgemm calls on blocks of kBlock query rows, so the
// masked (future) half of the T×T matrix is skipped except inside the diagonal blocks.
#include <cblas.h>

#include <algorithm>
#include <cmath>

#include "backend/cpu/ops.hpp"
#include "backend/cpu/simd.hpp"

namespace competelm::cpu {
namespace {
constexpr int kBlock = 64;
}  // namespace

void attention_forward(float* out /*(B,T,C)*/, float* att /*(B,NH,T,T)*/,
                       const float* qkv /*(B,T,3C)*/, int B, int T, int C, int NH) {
  const int hs = C / NH;
  const int C3 = 3 * C;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
#pragma omp parallel for schedule(static)
  for (int bh = 0; bh < B * NH; bh++) {
    const int b = bh / NH, h = bh % NH;
    const float* q = qkv + static_cast<size_t>(b) * T * C3 + static_cast<size_t>(h) * hs;  // (T,hs), stride 3C
    const float* k = q + C;
    const float* v = q + 2 * C;
    float* a = att + static_cast<size_t>(bh) * T * T;  // (T,T)
    float* o = out + static_cast<size_t>(b) * T * C + static_cast<size_t>(h) * hs;  // (T,hs), stride C
    for (int r0 = 0; r0 < T; r0 += kBlock) {
      const int r1 = std::min(T, r0 + kBlock);
      // preatt[r0:r1, 0:r1] = scale · q[r0:r1] · k[0:r1]ᵀ
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r1 - r0, r1, hs, scale,
                  q + static_cast<size_t>(r0) * C3, C3, k, C3, 0.0f, a + static_cast<size_t>(r0) * T, T);
      for (int t = r0; t < r1; t++) {
        float* row = a + static_cast<size_t>(t) * T;
        float maxv = -INFINITY;
        for (int t2 = 0; t2 <= t; t2++) maxv = std::max(maxv, row[t2]);
        simd::kernels().exp_shifted(row, row, static_cast<size_t>(t) + 1, maxv, 1.0f);
        float sum = 0.0f;
        for (int t2 = 0; t2 <= t; t2++) sum += row[t2];
        const float inv = 1.0f / sum;
#pragma omp simd
        for (int t2 = 0; t2 <= t; t2++) row[t2] *= inv;
        for (int t2 = t + 1; t2 < T; t2++) row[t2] = 0.0f;  // masked (future) positions
      }
      // out[r0:r1] = att[r0:r1, 0:r1] · v[0:r1]
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r1 - r0, hs, r1, 1.0f,
                  a + static_cast<size_t>(r0) * T, T, v, C3, 0.0f, o + static_cast<size_t>(r0) * C, C);
    }
  }
}

void attention_backward(float* dqkv /*(B,T,3C)*/, float* scratch /*(B,NH,T,T)*/,
                        const float* dout /*(B,T,C)*/, const float* qkv /*(B,T,3C)*/,
                        const float* att /*(B,NH,T,T)*/, int B, int T, int C, int NH) {
  const int hs = C / NH;
  const int C3 = 3 * C;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
#pragma omp parallel for schedule(static)
  for (int bh = 0; bh < B * NH; bh++) {
    const int b = bh / NH, h = bh % NH;
    const size_t head = static_cast<size_t>(b) * T * C3 + static_cast<size_t>(h) * hs;
    const float* q = qkv + head;
    const float* k = q + C;
    const float* v = q + 2 * C;
    float* dq = dqkv + head;
    float* dk = dq + C;
    float* dv = dq + 2 * C;
    const float* a = att + static_cast<size_t>(bh) * T * T;     // (T,T), 0 above the diagonal
    float* dp = scratch + static_cast<size_t>(bh) * T * T;      // ∂L/∂att, then ∂L/∂preatt
    const float* d = dout + static_cast<size_t>(b) * T * C + static_cast<size_t>(h) * hs;  // (T,hs), stride C

    // Pass 1, per block of query rows: datt = dO·vᵀ, then the softmax backward into
    // dpreatt (scaled), zero above the diagonal; then dq += dpreatt·k.
    for (int r0 = 0; r0 < T; r0 += kBlock) {
      const int r1 = std::min(T, r0 + kBlock);
      float* dpr = dp + static_cast<size_t>(r0) * T;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r1 - r0, r1, hs, 1.0f,
                  d + static_cast<size_t>(r0) * C, C, v, C3, 0.0f, dpr, T);
      for (int t = r0; t < r1; t++) {
        const float* arow = a + static_cast<size_t>(t) * T;
        float* row = dp + static_cast<size_t>(t) * T;
        float dsum = 0.0f;  // Σ att·datt
#pragma omp simd reduction(+ : dsum)
        for (int t2 = 0; t2 <= t; t2++) dsum += arow[t2] * row[t2];
#pragma omp simd
        for (int t2 = 0; t2 <= t; t2++) row[t2] = arow[t2] * (row[t2] - dsum) * scale;
        for (int t2 = t + 1; t2 < r1; t2++) row[t2] = 0.0f;
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r1 - r0, hs, r1, 1.0f, dpr, T, k, C3,
                  1.0f, dq + static_cast<size_t>(r0) * C3, C3);
    }
    // Pass 2, per block of key rows c0..c1 (only queries t ≥ c0 attend to them):
    // dk += dpreatt[c0:T, c0:c1]ᵀ · q[c0:T],  dv += att[c0:T, c0:c1]ᵀ · dO[c0:T]
    for (int c0 = 0; c0 < T; c0 += kBlock) {
      const int c1 = std::min(T, c0 + kBlock);
      const size_t off = static_cast<size_t>(c0) * T + c0;
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, c1 - c0, hs, T - c0, 1.0f, dp + off, T,
                  q + static_cast<size_t>(c0) * C3, C3, 1.0f, dk + static_cast<size_t>(c0) * C3, C3);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, c1 - c0, hs, T - c0, 1.0f, a + off, T,
                  d + static_cast<size_t>(c0) * C, C, 1.0f, dv + static_cast<size_t>(c0) * C3, C3);
    }
  }
}

}  // namespace competelm::cpu
