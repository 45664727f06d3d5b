// The optimizer's kernels: Σ x² in double for the gradient norm (two deterministic stages:
// fixed-size chunks reduced per block, then the partials summed in one block), and the AdamW
// update with exactly the CPU oracle's formula and operation order (torch's), its scalar
// coefficients computed in double on the host and rounded to float as there.
#include <algorithm>
#include <cmath>

#include "cuda_backend.cuh"
#include "cuda_common.cuh"

namespace competelm::cuda {
namespace {

constexpr int kThreads = 256;
constexpr size_t kChunk = 8192;  // elements per partial sum (fixed: the result does not depend on the GPU)

__global__ void sum_squares_partials_kernel(double* partial, const float* x, size_t n) {
  __shared__ double shared[kWarp];
  const size_t lo = blockIdx.x * kChunk, hi = min(n, lo + kChunk);
  double s = 0.0;
  for (size_t j = lo + threadIdx.x; j < hi; j += blockDim.x) {
    const double v = x[j];
    s += v * v;
  }
  s = block_sum(s, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void sum_partials_kernel(double* out, const double* partial, size_t count) {
  __shared__ double shared[kWarp];
  double s = 0.0;
  for (size_t j = threadIdx.x; j < count; j += blockDim.x) s += partial[j];
  s = block_sum(s, shared);
  if (threadIdx.x == 0) *out = s;
}

struct AdamwCoeffs {
  float grad_scale, decay, beta1, beta2, one_minus_b1, one_minus_b2, bc2_sqrt, eps, neg_step;
};

// The CPU's per-element steps (src/backend/cpu/adamw.cpp, simd_kernels.inc):
//   g = grad·grad_scale; p = p·decay; m = m·β1 + (1−β1)·g; v = v·β2 + (1−β2)·g·g;
//   p = p + neg_step · m / (sqrt(v)/sqrt(1−β2^t) + eps)
__global__ void adamw_kernel(float* params, const float* grads, float* m, float* v, size_t n, AdamwCoeffs k) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const float g = grads[i] * k.grad_scale;
    const float p = params[i] * k.decay;
    const float mi = m[i] * k.beta1 + k.one_minus_b1 * g;
    const float vi = v[i] * k.beta2 + k.one_minus_b2 * g * g;
    const float denom = sqrtf(vi) / k.bc2_sqrt + k.eps;
    params[i] = p + k.neg_step * mi / denom;
    m[i] = mi;
    v[i] = vi;
  }
}

}  // namespace

double CudaBackend::sum_squares(const float* x, size_t n) {
  if (n == 0) return 0.0;
  const size_t chunks = (n + kChunk - 1) / kChunk;
  // Scratch: the result, then the per-chunk partials.
  double* result = static_cast<double*>(scratch((1 + chunks) * sizeof(double)));
  double* partial = result + 1;
  sum_squares_partials_kernel<<<static_cast<unsigned>(chunks), kThreads, 0, stream_>>>(partial, x, n);
  CUDA_CHECK_LAUNCH();
  sum_partials_kernel<<<1, 1024, 0, stream_>>>(result, partial, chunks);
  CUDA_CHECK_LAUNCH();
  return fetch_double(result);
}

double CudaBackend::sum_squares_ranges(const float* x, const std::vector<std::pair<size_t, size_t>>& ranges) {
  // Every range's chunk partials side by side, then one sum over all of them in range order:
  // kernels are queued back to back and the host waits once.
  size_t chunks = 0;
  for (const auto& [begin, end] : ranges) {
    if (end < begin) fail("sum_squares_ranges: range [{}, {}) ends before it begins", begin, end);
    chunks += (end - begin + kChunk - 1) / kChunk;
  }
  if (chunks == 0) return 0.0;
  double* result = static_cast<double*>(scratch((1 + chunks) * sizeof(double)));
  double* partial = result + 1;
  for (const auto& [begin, end] : ranges) {
    const size_t n = end - begin, range_chunks = (n + kChunk - 1) / kChunk;
    if (range_chunks == 0) continue;
    sum_squares_partials_kernel<<<static_cast<unsigned>(range_chunks), kThreads, 0, stream_>>>(partial, x + begin, n);
    CUDA_CHECK_LAUNCH();
    partial += range_chunks;
  }
  sum_partials_kernel<<<1, 1024, 0, stream_>>>(result, result + 1, chunks);
  CUDA_CHECK_LAUNCH();
  return fetch_double(result);
}

void CudaBackend::adamw_update(float* params, const float* grads, float* m, float* v, size_t n, float lr,
                               float beta1, float beta2, float eps, float weight_decay, float grad_scale, int t) {
  if (n == 0) return;
  invalidate_param_copy(params, n * sizeof(float));  // the bf16 copy no longer matches: refresh_param_copy
  const double b1 = beta1, b2 = beta2;
  const double bc1 = 1.0 - std::pow(b1, t);
  const double bc2 = 1.0 - std::pow(b2, t);
  const AdamwCoeffs k{grad_scale,
                      static_cast<float>(1.0 - static_cast<double>(lr) * weight_decay),
                      beta1,
                      beta2,
                      static_cast<float>(1.0 - b1),
                      static_cast<float>(1.0 - b2),
                      static_cast<float>(std::sqrt(bc2)),
                      eps,
                      static_cast<float>(-static_cast<double>(lr) / bc1)};
  adamw_kernel<<<std::min<unsigned>(blocks_for(n, kThreads), 1u << 16), kThreads, 0, stream_>>>(params, grads, m, v,
                                                                                              n, k);
  CUDA_CHECK_LAUNCH();
}

}  // namespace competelm::cuda
