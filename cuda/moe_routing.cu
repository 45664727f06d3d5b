// MoE router math on the GPU: softmax / normalised-sigmoid gating, top-K selection, gate
// renormalisation and their backward passes (src/backend/cpu/moe_routing.cpp is the oracle).
// (N,E) row ops: one warp per row (moe_common.cuh); (N,K) ops and top-K: one thread per row.
// Rows are independent, so nothing is accumulated across threads: deterministic.
#include <cmath>

#include "cuda_backend.cuh"
#include "cuda_common.cuh"
#include "moe_common.cuh"

namespace competelm::cuda {
namespace {
using namespace moe;

// out = softmax(in) on one row, the warp's lanes striding over columns. The exps are written
// first and scaled in place, so out may alias in (as on the CPU).
__device__ void softmax_row_warp(float* out, const float* in, int E, int lane) {
  float mx = -INFINITY;
  for (int e = lane; e < E; e += kWarp) mx = fmaxf(mx, in[e]);
  mx = warp_max(mx);
  double sum = 0.0;
  for (int e = lane; e < E; e += kWarp) {
    const float x = expf(in[e] - mx);
    out[e] = x;
    sum += x;
  }
  sum = warp_sum(sum);
  const float inv = static_cast<float>(1.0 / sum);
  for (int e = lane; e < E; e += kWarp) out[e] *= inv;
}

__global__ void router_forward_kernel(float* act, float* probs, const float* logits, int N, int E, bool sigmoid) {
  const int n = warp_row();
  if (n >= N) return;
  const int lane = lane_id();
  const size_t row = static_cast<size_t>(n) * E;
  const float* g = logits + row;
  float* a = act + row;
  float* p = probs + row;
  if (!sigmoid) {
    softmax_row_warp(a, g, E, lane);
    if (p != a)
      for (int e = lane; e < E; e += kWarp) p[e] = a[e];  // each lane reads back its own writes
    return;
  }
  double sum = 0.0;
  for (int e = lane; e < E; e += kWarp) {
    const float s = sigmoidf_stable(g[e]);
    a[e] = s;
    sum += s;
  }
  sum = warp_sum(sum);
  const float inv = static_cast<float>(1.0 / sum);
  for (int e = lane; e < E; e += kWarp) p[e] = a[e] * inv;
}

// ∂L/∂act at column e from the top-K entries: dval summed over the k with idx = e, in k order
// from 0 (the CPU's scatter into a zeroed row).
__device__ inline float topk_grad(int e, const int32_t* id, const float* dv, int K) {
  float d = 0.0f;
  if (dv)
    for (int k = 0; k < K; k++)
      if (id[k] == e) d += dv[k];
  return d;
}

__global__ void router_backward_kernel(float* dlogits, const float* dval, const int32_t* idx, const float* dprobs,
                                       const float* act, const float* probs, int N, int E, int K, bool sigmoid) {
  const int n = warp_row();
  if (n >= N) return;
  const int lane = lane_id();
  const size_t row = static_cast<size_t>(n) * E;
  const float* a = act + row;
  const float* p = probs + row;
  const float* dp = dprobs ? dprobs + row : nullptr;
  const int32_t* id = idx + static_cast<size_t>(n) * K;
  const float* dv = dval ? dval + static_cast<size_t>(n) * K : nullptr;
  float* dg = dlogits + row;
  if (!sigmoid) {
    // d = dact + dprobs (act = probs); dg = p ⊙ (d − <d, p>). d is recomputed in the second
    // pass (same inputs, same value) rather than kept per column.
    double dot = 0.0;
    for (int e = lane; e < E; e += kWarp) {
      float d = topk_grad(e, id, dv, K);
      if (dp) d += dp[e];
      dot += static_cast<double>(d) * p[e];
    }
    const float fdot = static_cast<float>(warp_sum(dot));
    for (int e = lane; e < E; e += kWarp) {
      float d = topk_grad(e, id, dv, K);
      if (dp) d += dp[e];
      dg[e] = p[e] * (d - fdot);
    }
    return;
  }
  // probs = s / S: ∂L/∂s_e = dact_e + (dprobs_e − <dprobs, probs>) / S; dg = ∂L/∂s ⊙ s (1 − s).
  float invS = 0.0f, fdot = 0.0f;
  if (dp) {
    double S = 0.0, dot = 0.0;
    for (int e = lane; e < E; e += kWarp) {
      S += a[e];
      dot += static_cast<double>(dp[e]) * p[e];
    }
    S = warp_sum(S);
    dot = warp_sum(dot);
    invS = static_cast<float>(1.0 / S);
    fdot = static_cast<float>(dot);
  }
  for (int e = lane; e < E; e += kWarp) {
    float d = topk_grad(e, id, dv, K);
    if (dp) d += (dp[e] - fdot) * invS;
    dg[e] = d * a[e] * (1.0f - a[e]);
  }
}

// One thread per row: a sorted (descending) list of at most KMAX (value, index) entries in
// registers (KMAX ≤ 8) or local memory. Columns enter in increasing index order; an entry is
// ahead of another when its value is greater, or equal with a lower index (a total order),
// so the list is the CPU's repeated strict-'>' argmax: descending, ties → lowest index. A new
// column has the highest index so far, so it enters only when strictly greater than a held
// value; the entries it displaces bubble down one place each (their ties are resolved by
// index, keeping equal values in index order).
constexpr int kTopkThreads = 128;

template <int KMAX>
__global__ void topk_kernel(int32_t* idx, float* val, const float* x, int N, int E, int K) {
  constexpr int kUnroll = KMAX <= 32 ? KMAX : 1;  // registers for small K; local memory beyond
  const int n = blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= N) return;
  float v[KMAX];
  int32_t id[KMAX];
#pragma unroll kUnroll
  for (int j = 0; j < KMAX; j++) v[j] = 0.0f, id[j] = -1;  // id −1: empty (empties are the tail)
  const float* r = x + static_cast<size_t>(n) * E;
  for (int e = 0; e < E; e++) {
    float cv = r[e];
    int32_t ci = e;  // the carried entry; −1 once it has landed in an empty slot
#pragma unroll kUnroll
    for (int j = 0; j < KMAX; j++) {
      if (j >= K) break;
      const bool ahead = ci >= 0 && (id[j] < 0 || cv > v[j] || (cv == v[j] && ci < id[j]));
      if (ahead) {
        const float tv = v[j];
        const int32_t ti = id[j];
        v[j] = cv, id[j] = ci;
        cv = tv, ci = ti;
      }
    }
  }
  int32_t* oi = idx + static_cast<size_t>(n) * K;
  float* ov = val + static_cast<size_t>(n) * K;
#pragma unroll kUnroll
  for (int j = 0; j < KMAX; j++) {
    if (j >= K) break;
    oi[j] = id[j];
    ov[j] = v[j];
  }
}

__global__ void gate_forward_kernel(float* gate, const float* val, int N, int K, bool softmax) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= N) return;
  const float* v = val + static_cast<size_t>(n) * K;
  float* w = gate + static_cast<size_t>(n) * K;
  if (softmax) {
    softmax_serial(w, v, K);
    return;
  }
  double sum = 0.0;
  for (int k = 0; k < K; k++) sum += v[k];
  const float inv = static_cast<float>(1.0 / sum);
  for (int k = 0; k < K; k++) w[k] = v[k] * inv;
}

// sum-normalise: ∂L/∂v_k = (dw_k − <dw, w>) / S;  softmax: ∂L/∂v_k = w_k (dw_k − <dw, w>).
__global__ void gate_backward_kernel(float* dval, const float* dgate, const float* gate, const float* val, int N,
                                     int K, bool softmax) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= N) return;
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

__global__ void softmax_forward_kernel(float* out, const float* inp, int N, int E) {
  const int n = warp_row();
  if (n >= N) return;
  const size_t row = static_cast<size_t>(n) * E;
  softmax_row_warp(out + row, inp + row, E, lane_id());
}

__global__ void softmax_backward_kernel(float* dinp, const float* dout, const float* out, int N, int E) {
  const int n = warp_row();
  if (n >= N) return;
  const int lane = lane_id();
  const size_t row = static_cast<size_t>(n) * E;
  double dot = 0.0;
  for (int e = lane; e < E; e += kWarp) dot += static_cast<double>(dout[row + e]) * out[row + e];
  const float fdot = static_cast<float>(warp_sum(dot));
  for (int e = lane; e < E; e += kWarp) dinp[row + e] += out[row + e] * (dout[row + e] - fdot);
}

}  // namespace

void CudaBackend::moe_router_forward(float* act, float* probs, const float* logits, int N, int E, bool sigmoid) {
  if (N <= 0) return;
  router_forward_kernel<<<row_blocks(N), kRowThreads, 0, stream()>>>(act, probs, logits, N, E, sigmoid);
  CUDA_CHECK_LAUNCH();
}

void CudaBackend::moe_router_backward(float* dlogits, const float* dval, const int32_t* idx, const float* dprobs,
                                      const float* act, const float* probs, int N, int E, int K, bool sigmoid) {
  if (N <= 0) return;
  router_backward_kernel<<<row_blocks(N), kRowThreads, 0, stream()>>>(dlogits, dval, idx, dprobs, act, probs, N, E,
                                                                       K, sigmoid);
  CUDA_CHECK_LAUNCH();
}

void CudaBackend::moe_topk(int32_t* idx, float* val, const float* x, int N, int E, int K) {
  if (K < 1 || K > E) fail("cuda moe_topk: K = {} must be in [1, E = {}]", K, E);
  if (N <= 0) return;
  const unsigned grid = blocks_for(static_cast<size_t>(N), kTopkThreads);
  if (K <= 8)
    topk_kernel<8><<<grid, kTopkThreads, 0, stream()>>>(idx, val, x, N, E, K);
  else if (K <= 32)
    topk_kernel<32><<<grid, kTopkThreads, 0, stream()>>>(idx, val, x, N, E, K);
  else if (K <= 256)
    topk_kernel<256><<<grid, kTopkThreads, 0, stream()>>>(idx, val, x, N, E, K);
  else
    fail("cuda moe_topk: K = {} > 256 is not supported", K);
  CUDA_CHECK_LAUNCH();
}

void CudaBackend::moe_gate_forward(float* gate, const float* val, int N, int K, bool softmax) {
  if (N <= 0) return;
  gate_forward_kernel<<<blocks_for(static_cast<size_t>(N), 128), 128, 0, stream()>>>(gate, val, N, K, softmax);
  CUDA_CHECK_LAUNCH();
}

void CudaBackend::moe_gate_backward(float* dval, const float* dgate, const float* gate, const float* val, int N,
                                    int K, bool softmax) {
  if (N <= 0) return;
  gate_backward_kernel<<<blocks_for(static_cast<size_t>(N), 128), 128, 0, stream()>>>(dval, dgate, gate, val, N, K,
                                                                                      softmax);
  CUDA_CHECK_LAUNCH();
}

void CudaBackend::moe_softmax_forward(float* out, const float* inp, int N, int E) {
  if (N <= 0) return;
  softmax_forward_kernel<<<row_blocks(N), kRowThreads, 0, stream()>>>(out, inp, N, E);
  CUDA_CHECK_LAUNCH();
}

void CudaBackend::moe_softmax_backward(float* dinp, const float* dout, const float* out, int N, int E) {
  if (N <= 0) return;
  softmax_backward_kernel<<<row_blocks(N), kRowThreads, 0, stream()>>>(dinp, dout, out, N, E);
  CUDA_CHECK_LAUNCH();
}

}  // namespace competelm::cuda
