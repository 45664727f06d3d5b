// Softmax cross-entropy over the first V of Vp logit columns, one block per row.
// Forward: ONE pass over the row (online softmax): each thread keeps a running max m and
// Σ exp(x − m) in double (a vocabulary row has ~50k terms, as on the CPU), rescaling the sum
// when its max grows; the threads' (m, Σ) pairs are then merged (warp butterflies, then the
// warps), and loss = log Σ + max − x[target]. The former max-then-sum passes read the 3.3 GB
// of GPT-2's (16384, 50304) logits twice; this reads them once.
// Backward: fused and in place capable (dlogits may be logits): the row's log-sum-exp is
// losses[i] + logits[i, target] (as the CPU oracle), read once before any write, and every
// thread then overwrites only the columns it has just read (one read + one write of the row).
// Rows of Vp % 4 == 0 floats at 16-byte aligned addresses (GPT-2's Vp = 50304) move as float4,
// several loads in flight per thread before any use; other shapes take scalar loops.
// A target outside [0, V) cannot be reported from the device without a synchronisation:
// its row gets a NaN loss (and NaN gradients), which the trainer's non-finite guard stops on.
#include <cfloat>
#include <cmath>
#include <cstdint>

#include "cuda_backend.cuh"
#include "cuda_common.cuh"

// Full unrolling keeps the small arrays these loops index in registers. The CUDA emulator
// (tests/cuda_emu) compiles this file with the host compiler, which knows no such pragma.
#ifdef __CUDACC__
#define COMPETELM_UNROLL _Pragma("unroll")
#else
#define COMPETELM_UNROLL
#endif

namespace competelm::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kUnroll = 4;  // float4 loads issued per thread before the first is used

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// A running softmax normaliser: sum = Σ exp(x − max) over the values seen. max starts at
// −FLT_MAX, not −inf, so that a −inf logit contributes exp(−inf) = 0 rather than exp(NaN).
struct MaxSum {
  float max;
  double sum;
};

// Absorbs a group of values whose largest is `group_max`: rescale the sum first if the max grows.
__device__ inline void raise_max(MaxSum& a, float group_max) {
  if (group_max > a.max) {
    a.sum *= static_cast<double>(expf(a.max - group_max));
    a.max = group_max;
  }
}
__device__ inline void absorb(MaxSum& a, float v) {
  raise_max(a, v);
  a.sum += static_cast<double>(expf(v - a.max));
}
__device__ inline void absorb(MaxSum& a, float4 v) {
  raise_max(a, fmaxf(fmaxf(v.x, v.y), fmaxf(v.z, v.w)));
  // Four terms in fp32 (each ≤ 1), then one double add: a quarter of the conversions.
  a.sum += static_cast<double>((expf(v.x - a.max) + expf(v.y - a.max)) + (expf(v.z - a.max) + expf(v.w - a.max)));
}

// The pair for the union of two sets of values. Symmetric in (a, b) bit for bit (fmaxf and +
// commute), so every lane of a butterfly ends with the same result.
__device__ inline MaxSum merge(MaxSum a, MaxSum b) {
  const float m = fmaxf(a.max, b.max);
  const double sa = a.max == m ? a.sum : a.sum * static_cast<double>(expf(a.max - m));
  const double sb = b.max == m ? b.sum : b.sum * static_cast<double>(expf(b.max - m));
  return MaxSum{m, sa + sb};
}

__device__ inline MaxSum warp_merge(MaxSum a) {
  for (int o = kWarp / 2; o > 0; o /= 2) {
    const MaxSum b{__shfl_xor_sync(0xffffffffu, a.max, o), __shfl_xor_sync(0xffffffffu, a.sum, o)};
    a = merge(a, b);
  }
  return a;
}

// The block's pair (blockDim.x a multiple of 32), valid in every thread. Fixed order: deterministic.
__device__ inline MaxSum block_merge(MaxSum a) {
  __shared__ float shared_max[kWarp];
  __shared__ double shared_sum[kWarp];
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
  a = warp_merge(a);
  if (lane == 0) {
    shared_max[warp] = a.max;
    shared_sum[warp] = a.sum;
  }
  __syncthreads();
  a = lane < warps ? MaxSum{shared_max[lane], shared_sum[lane]} : MaxSum{-FLT_MAX, 0.0};
  return warp_merge(a);
}

// vec: the row is read as float4 (Vp % 4 == 0 and logits 16-byte aligned).
__global__ void __launch_bounds__(kThreads) crossentropy_forward_kernel(float* losses, const float* logits,
                                                                       const int32_t* targets, int V, int Vp,
                                                                       bool vec) {
  const int i = blockIdx.x;
  const float* x = logits + size_t(i) * Vp;
  MaxSum a{-FLT_MAX, 0.0};
  int tail = 0;  // first column the scalar loop reads
  if (vec) {
    const float4* x4 = reinterpret_cast<const float4*>(x);
    const int V4 = V / 4;  // float4s entirely inside the vocabulary
    int q = threadIdx.x;
    for (; q + (kUnroll - 1) * kThreads < V4; q += kUnroll * kThreads) {
      float4 v[kUnroll];
COMPETELM_UNROLL
      for (int u = 0; u < kUnroll; ++u) v[u] = x4[q + u * kThreads];
COMPETELM_UNROLL
      for (int u = 0; u < kUnroll; ++u) absorb(a, v[u]);
    }
    for (; q < V4; q += kThreads) absorb(a, x4[q]);
    tail = 4 * V4;
  }
  for (int j = tail + static_cast<int>(threadIdx.x); j < V; j += kThreads) absorb(a, x[j]);
  a = block_merge(a);
  if (threadIdx.x == 0) {
    const int t = targets[i];
    losses[i] = (t >= 0 && t < V) ? static_cast<float>(log(a.sum)) + a.max - x[t] : NAN;
  }
}

// One logit's gradient: dloss·p_j − dloss·[j == t], 0 in the padding columns (selected, not
// multiplied: a padding column may hold anything, NaN included). Branch-free.
__device__ inline float grad(float x, int j, float shift, float dloss, int t, int V) {
  const float p = dloss * expf(x - shift);
  const float g = j == t ? p - dloss : p;
  return j < V ? g : 0.0f;
}
__device__ inline float4 grad(float4 x, int j, float shift, float dloss, int t, int V) {
  return make_float4(grad(x.x, j, shift, dloss, t, V), grad(x.y, j + 1, shift, dloss, t, V),
                     grad(x.z, j + 2, shift, dloss, t, V), grad(x.w, j + 3, shift, dloss, t, V));
}

// vec: the row is read and written as float4 (Vp % 4 == 0, logits and dlogits 16-byte aligned).
__global__ void __launch_bounds__(kThreads) crossentropy_backward_kernel(float* dlogits, const float* logits,
                                                                        const float* losses,
                                                                        const int32_t* targets, float dloss, int V,
                                                                        int Vp, bool vec) {
  __shared__ float shared_shift;
  const int i = blockIdx.x;
  const float* x = logits + size_t(i) * Vp;
  float* dx = dlogits + size_t(i) * Vp;  // may be x itself
  const int t = targets[i];
  // x[t] is read before the barrier, and written (by its column's thread) only after it.
  if (threadIdx.x == 0) shared_shift = (t >= 0 && t < V) ? losses[i] + x[t] : NAN;
  __syncthreads();
  const float shift = shared_shift;
  if (vec) {
    // Each thread writes exactly the float4s it has read itself, after reading them: safe in place.
    const float4* x4 = reinterpret_cast<const float4*>(x);
    float4* dx4 = reinterpret_cast<float4*>(dx);
    const int Vp4 = Vp / 4;
    int q = threadIdx.x;
    for (; q + (kUnroll - 1) * kThreads < Vp4; q += kUnroll * kThreads) {
      float4 v[kUnroll];
COMPETELM_UNROLL
      for (int u = 0; u < kUnroll; ++u) v[u] = x4[q + u * kThreads];
COMPETELM_UNROLL
      for (int u = 0; u < kUnroll; ++u) dx4[q + u * kThreads] = grad(v[u], 4 * (q + u * kThreads), shift, dloss, t, V);
    }
    for (; q < Vp4; q += kThreads) dx4[q] = grad(x4[q], 4 * q, shift, dloss, t, V);
  } else {
    for (int j = threadIdx.x; j < Vp; j += kThreads) dx[j] = grad(x[j], j, shift, dloss, t, V);
  }
}

}  // namespace

void CudaBackend::crossentropy_forward(float* losses, const float* logits, const int32_t* targets, int N, int V,
                                       int Vp) {
  if (N == 0) return;
  const bool vec = Vp % 4 == 0 && aligned16(logits);
  crossentropy_forward_kernel<<<static_cast<unsigned>(N), kThreads, 0, stream_>>>(losses, logits, targets, V, Vp, vec);
  CUDA_CHECK_LAUNCH();
}

void CudaBackend::crossentropy_backward(float* dlogits, const float* logits, const float* losses,
                                        const int32_t* targets, float dloss, int N, int V, int Vp) {
  if (N == 0) return;
  const bool vec = Vp % 4 == 0 && aligned16(logits) && aligned16(dlogits);
  crossentropy_backward_kernel<<<static_cast<unsigned>(N), kThreads, 0, stream_>>>(dlogits, logits, losses,
                                                                                   targets, dloss, V, Vp, vec);
  CUDA_CHECK_LAUNCH();
}

}  // namespace competelm::cuda
