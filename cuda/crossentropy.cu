// Softmax cross-entropy over the first V of Vp logit columns, one block per row.
// Forward: the row's max, then Σ exp(x − max) accumulated in double (a vocabulary row has
// ~50k terms, as on the CPU), loss = log Σ + max − x[target].
// Backward: fused and in place capable (dlogits may be logits): the row's log-sum-exp is
// losses[i] + logits[i, target] (as the CPU oracle), read once before any write, and every
// thread then overwrites only the columns it has just read.
// A target outside [0, V) cannot be reported from the device without a synchronisation:
// its row gets a NaN loss (and NaN gradients), which the trainer's non-finite guard stops on.
#include <cmath>

#include "cuda_backend.cuh"
#include "cuda_common.cuh"

namespace competelm::cuda {
namespace {

constexpr int kThreads = 512;

// Max over the block (blockDim.x a multiple of 32); every thread gets the result.
__device__ float block_max(float v, float* shared) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < warps ? shared[lane] : -INFINITY;
  return warp_max(v);
}

__global__ void crossentropy_forward_kernel(float* losses, const float* logits, const int32_t* targets, int V,
                                            int Vp) {
  __shared__ float shared_max[kWarp];
  __shared__ double shared_sum[kWarp];
  const int i = blockIdx.x;
  const float* x = logits + size_t(i) * Vp;
  float m = -INFINITY;
  for (int j = threadIdx.x; j < V; j += blockDim.x) m = fmaxf(m, x[j]);
  m = block_max(m, shared_max);
  double s = 0.0;
  for (int j = threadIdx.x; j < V; j += blockDim.x) s += static_cast<double>(expf(x[j] - m));
  s = block_sum(s, shared_sum);
  if (threadIdx.x == 0) {
    const int t = targets[i];
    losses[i] = (t >= 0 && t < V) ? static_cast<float>(log(s)) + m - x[t] : NAN;
  }
}

__global__ void crossentropy_backward_kernel(float* dlogits, const float* logits, const float* losses,
                                             const int32_t* targets, float dloss, int V, int Vp) {
  __shared__ float shared_shift;
  const int i = blockIdx.x;
  const float* x = logits + size_t(i) * Vp;
  float* dx = dlogits + size_t(i) * Vp;  // may be x itself
  const int t = targets[i];
  // x[t] is read before the barrier, and written (by its column's thread) only after it.
  if (threadIdx.x == 0) shared_shift = (t >= 0 && t < V) ? losses[i] + x[t] : NAN;
  __syncthreads();
  const float shift = shared_shift;
  for (int j = threadIdx.x; j < Vp; j += blockDim.x) {
    float g = 0.0f;  // padding columns: 0
    if (j < V) {
      g = dloss * expf(x[j] - shift);
      if (j == t) g -= dloss;
    }
    dx[j] = g;
  }
}

}  // namespace

void CudaBackend::crossentropy_forward(float* losses, const float* logits, const int32_t* targets, int N, int V,
                                       int Vp) {
  if (N == 0) return;
  crossentropy_forward_kernel<<<static_cast<unsigned>(N), kThreads, 0, stream_>>>(losses, logits, targets, V, Vp);
  CUDA_CHECK_LAUNCH();
}

void CudaBackend::crossentropy_backward(float* dlogits, const float* logits, const float* losses,
                                        const int32_t* targets, float dloss, int N, int V, int Vp) {
  if (N == 0) return;
  crossentropy_backward_kernel<<<static_cast<unsigned>(N), kThreads, 0, stream_>>>(dlogits, logits, losses,
                                                                                   targets, dloss, V, Vp);
  CUDA_CHECK_LAUNCH();
}

}  // namespace competelm::cuda
