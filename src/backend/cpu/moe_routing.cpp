// MoE router math: softmax / normalised-sigmoid gating, top-K selection, gate
// renormalisation and their backward passes. Rows are independent, so every op is one
// OpenMP loop over tokens (deterministic: no cross-row reductions). E and K are small (≤ a few
// hundred), so per-row work is plain scalar code.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/ops.hpp"

namespace competelm::cpu {
namespace {

void softmax_row(float* out, const float* in, int E) {
  float mx = in[0];
  for (int e = 1; e < E; e++) mx = std::max(mx, in[e]);
  double sum = 0.0;
  for (int e = 0; e < E; e++) {
    out[e] = std::exp(in[e] - mx);
    sum += out[e];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int e = 0; e < E; e++) out[e] *= inv;
}

float sigmoid(float x) { return x >= 0 ? 1.0f / (1.0f + std::exp(-x)) : std::exp(x) / (1.0f + std::exp(x)); }

}  // namespace

void moe_router_forward(float* act, float* probs, const float* logits, int N, int E, bool sigmoid_gate) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const float* g = logits + static_cast<size_t>(n) * E;
    float* a = act + static_cast<size_t>(n) * E;
    float* p = probs + static_cast<size_t>(n) * E;
    if (!sigmoid_gate) {
      softmax_row(a, g, E);
      if (p != a) std::copy(a, a + E, p);
      continue;
    }
    double sum = 0.0;
    for (int e = 0; e < E; e++) {
      a[e] = sigmoid(g[e]);
      sum += a[e];
    }
    const float inv = static_cast<float>(1.0 / sum);
    for (int e = 0; e < E; e++) p[e] = a[e] * inv;
  }
}

// softmax: d = dact + dprobs (act = probs); dg = p ⊙ (d − <d, p>).
// sigmoid: probs = s / S, so ∂L/∂s_e = dact_e + (dprobs_e − <dprobs, probs>) / S, and
// dg = ∂L/∂s ⊙ s (1 − s).
void moe_router_backward(float* dlogits, const float* dval, const int32_t* idx, const float* dprobs,
                         const float* act, const float* probs, int N, int E, int K, bool sigmoid_gate) {
#pragma omp parallel
  {
    std::vector<float> d(static_cast<size_t>(E));
#pragma omp for schedule(static)
    for (int n = 0; n < N; n++) {
      const size_t row = static_cast<size_t>(n) * E;
      const float* a = act + row;
      const float* p = probs + row;
      std::fill(d.begin(), d.end(), 0.0f);
      if (dval)
        for (int k = 0; k < K; k++) d[idx[n * K + k]] += dval[n * K + k];
      float* dg = dlogits + row;
      if (!sigmoid_gate) {
        if (dprobs)
          for (int e = 0; e < E; e++) d[e] += dprobs[row + e];
        double dot = 0.0;
        for (int e = 0; e < E; e++) dot += static_cast<double>(d[e]) * p[e];
        for (int e = 0; e < E; e++) dg[e] = p[e] * (d[e] - static_cast<float>(dot));
        continue;
      }
      if (dprobs) {
        double S = 0.0, dot = 0.0;
        for (int e = 0; e < E; e++) {
          S += a[e];
          dot += static_cast<double>(dprobs[row + e]) * p[e];
        }
        const float invS = static_cast<float>(1.0 / S);
        for (int e = 0; e < E; e++) d[e] += (dprobs[row + e] - static_cast<float>(dot)) * invS;
      }
      for (int e = 0; e < E; e++) dg[e] = d[e] * a[e] * (1.0f - a[e]);
    }
  }
}

void moe_topk(int32_t* idx, float* val, const float* x, int N, int E, int K) {
#pragma omp parallel
  {
    std::vector<char> taken(static_cast<size_t>(E));
#pragma omp for schedule(static)
    for (int n = 0; n < N; n++) {
      const float* r = x + static_cast<size_t>(n) * E;
      std::fill(taken.begin(), taken.end(), 0);
      for (int k = 0; k < K; k++) {
        int best = -1;
        for (int e = 0; e < E; e++)  // strict '>' keeps the lowest index among equals
          if (!taken[e] && (best < 0 || r[e] > r[best])) best = e;
        taken[best] = 1;
        idx[n * K + k] = best;
        val[n * K + k] = r[best];
      }
    }
  }
}

void moe_gate_forward(float* gate, const float* val, int N, int K, bool softmax) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const float* v = val + static_cast<size_t>(n) * K;
    float* w = gate + static_cast<size_t>(n) * K;
    if (softmax) {
      softmax_row(w, v, K);
      continue;
    }
    double sum = 0.0;
    for (int k = 0; k < K; k++) sum += v[k];
    const float inv = static_cast<float>(1.0 / sum);
    for (int k = 0; k < K; k++) w[k] = v[k] * inv;
  }
}

// sum-normalise: w = v / S → ∂L/∂v_k = (dw_k − <dw, w>) / S.
// softmax:       ∂L/∂v_k = w_k (dw_k − <dw, w>).
void moe_gate_backward(float* dval, const float* dgate, const float* gate, const float* val, int N, int K,
                       bool softmax) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const size_t row = static_cast<size_t>(n) * K;
    double dot = 0.0, S = 0.0;
    for (int k = 0; k < K; k++) {
      dot += static_cast<double>(dgate[row + k]) * gate[row + k];
      S += val[row + k];
    }
    const float fdot = static_cast<float>(dot);
    if (softmax) {
      for (int k = 0; k < K; k++) dval[row + k] = gate[row + k] * (dgate[row + k] - fdot);
    } else {
      const float invS = static_cast<float>(1.0 / S);
      for (int k = 0; k < K; k++) dval[row + k] = (dgate[row + k] - fdot) * invS;
    }
  }
}

void moe_softmax_forward(float* out, const float* inp, int N, int E) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) softmax_row(out + static_cast<size_t>(n) * E, inp + static_cast<size_t>(n) * E, E);
}

void moe_softmax_backward(float* dinp, const float* dout, const float* out, int N, int E) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const size_t row = static_cast<size_t>(n) * E;
    double dot = 0.0;
    for (int e = 0; e < E; e++) dot += static_cast<double>(dout[row + e]) * out[row + e];
    for (int e = 0; e < E; e++) dinp[row + e] += out[row + e] * (dout[row + e] - static_cast<float>(dot));
  }
}

}  // namespace competelm::cpu
