// Causal multi-head self-attention with the (B,NH,T,T) attention matrix materialised (the
// CPU oracle). Work is split over the B·NH (batch, head) pairs; each pair reads and writes
// only its own head's columns, so the threads never touch the same memory.
#include <algorithm>
#include <cmath>

#include "backend/cpu/ops.hpp"

namespace competelm::cpu {
namespace {

float dot(const float* a, const float* b, int n) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int i = 0; i < n; i++) s += a[i] * b[i];
  return s;
}

void axpy(float* y, float a, const float* x, int n) {
#pragma omp simd
  for (int i = 0; i < n; i++) y[i] += a * x[i];
}

}  // namespace

void attention_forward(float* out /*(B,T,C)*/, float* att /*(B,NH,T,T)*/,
                       const float* qkv /*(B,T,3C)*/, int B, int T, int C, int NH) {
  const int hs = C / NH;
  const size_t C3 = 3 * static_cast<size_t>(C);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
#pragma omp parallel for schedule(static)
  for (int bh = 0; bh < B * NH; bh++) {
    const int b = bh / NH, h = bh % NH;
    const float* base = qkv + static_cast<size_t>(b) * T * C3 + static_cast<size_t>(h) * hs;
    for (int t = 0; t < T; t++) {
      const float* q = base + t * C3;  // (hs)
      float* a = att + (static_cast<size_t>(bh) * T + t) * T;  // row t of (T,T)
      float maxv = -INFINITY;
      for (int t2 = 0; t2 <= t; t2++) {
        a[t2] = dot(q, base + t2 * C3 + C, hs) * scale;
        maxv = std::max(maxv, a[t2]);
      }
      float sum = 0.0f;
      for (int t2 = 0; t2 <= t; t2++) {
        a[t2] = std::exp(a[t2] - maxv);
        sum += a[t2];
      }
      const float inv = 1.0f / sum;
      for (int t2 = 0; t2 <= t; t2++) a[t2] *= inv;
      for (int t2 = t + 1; t2 < T; t2++) a[t2] = 0.0f;  // masked (future) positions
      float* o = out + (static_cast<size_t>(b) * T + t) * C + static_cast<size_t>(h) * hs;
      for (int i = 0; i < hs; i++) o[i] = 0.0f;
      for (int t2 = 0; t2 <= t; t2++) axpy(o, a[t2], base + t2 * C3 + 2 * C, hs);
    }
  }
}

void attention_backward(float* dqkv /*(B,T,3C)*/, float* scratch /*(B,NH,T,T)*/,
                        const float* dout /*(B,T,C)*/, const float* qkv /*(B,T,3C)*/,
                        const float* att /*(B,NH,T,T)*/, int B, int T, int C, int NH) {
  const int hs = C / NH;
  const size_t C3 = 3 * static_cast<size_t>(C);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
#pragma omp parallel for schedule(static)
  for (int bh = 0; bh < B * NH; bh++) {
    const int b = bh / NH, h = bh % NH;
    const size_t head = static_cast<size_t>(b) * T * C3 + static_cast<size_t>(h) * hs;
    const float* base = qkv + head;
    float* dbase = dqkv + head;
    for (int t = 0; t < T; t++) {
      const float* a = att + (static_cast<size_t>(bh) * T + t) * T;
      float* da = scratch + (static_cast<size_t>(bh) * T + t) * T;  // ∂L/∂att, then ∂L/∂preatt
      const float* d = dout + (static_cast<size_t>(b) * T + t) * C + static_cast<size_t>(h) * hs;
      // out_t = Σ a[t2] v_t2  →  da[t2] = d·v_t2,  dv_t2 += a[t2] d
      float dsum = 0.0f;  // Σ a·da, for the softmax backward
      for (int t2 = 0; t2 <= t; t2++) {
        da[t2] = dot(d, base + t2 * C3 + 2 * C, hs);
        axpy(dbase + t2 * C3 + 2 * C, a[t2], d, hs);
        dsum += a[t2] * da[t2];
      }
      // softmax backward, then preatt = scale·q·k  →  dq_t += Σ dp·scale·k,  dk_t2 += dp·scale·q
      const float* q = base + t * C3;
      float* dq = dbase + t * C3;
      for (int t2 = 0; t2 <= t; t2++) {
        const float dp = a[t2] * (da[t2] - dsum) * scale;
        axpy(dq, dp, base + t2 * C3 + C, hs);
        axpy(dbase + t2 * C3 + C, dp, q, hs);
      }
    }
  }
}

}  // namespace competelm::cpu
