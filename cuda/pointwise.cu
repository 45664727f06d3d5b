// Element-wise ops: GELU (tanh approximation, as GPT-2) and its backward, residual adds,
// accumulation and scaling. n is a size_t and may exceed 2^31: grid-stride loops over a
// capped grid.
#include <algorithm>

#include "cuda_backend.cuh"
#include "cuda_common.cuh"

namespace competelm::cuda {
namespace {

constexpr int kThreads = 256;
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kGeluCubic = 0.044715f;

unsigned grid_for(size_t n) { return std::min<unsigned>(blocks_for(n, kThreads), 1u << 16); }

#define GRID_STRIDE(i, n) \
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < (n); i += size_t(gridDim.x) * blockDim.x)

// 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
__global__ void gelu_forward_kernel(float* out, const float* inp, size_t n) {
  GRID_STRIDE(i, n) {
    const float x = inp[i];
    const float u = kSqrt2OverPi * (x + kGeluCubic * x * x * x);
    out[i] = 0.5f * x * (1.0f + tanhf(u));
  }
}

// dinp += dout · (0.5·(1 + tanh u) + 0.5·x·(1 − tanh² u)·√(2/π)·(1 + 3·0.044715·x²));
// overwrite: dinp = the product, dinp never read.
__global__ void gelu_backward_kernel(float* dinp, const float* inp, const float* dout, size_t n, bool overwrite) {
  GRID_STRIDE(i, n) {
    const float x = inp[i];
    const float u = kSqrt2OverPi * (x + kGeluCubic * x * x * x);
    const float th = tanhf(u);
    const float sech2 = 1.0f - th * th;
    const float local = 0.5f * (1.0f + th) + 0.5f * x * sech2 * kSqrt2OverPi * (1.0f + 3.0f * kGeluCubic * x * x);
    if (overwrite)
      dinp[i] = local * dout[i];
    else
      dinp[i] += local * dout[i];
  }
}

__global__ void residual_kernel(float* out, const float* a, const float* b, size_t n) {
  GRID_STRIDE(i, n) out[i] = a[i] + b[i];
}

__global__ void accumulate_kernel(float* y, const float* x, size_t n) {
  GRID_STRIDE(i, n) y[i] += x[i];
}

__global__ void scale_kernel(float* x, float s, size_t n) {
  GRID_STRIDE(i, n) x[i] *= s;
}

#undef GRID_STRIDE

}  // namespace

void CudaBackend::gelu_forward(float* out, const float* inp, size_t n) {
  if (n == 0) return;
  gelu_forward_kernel<<<grid_for(n), kThreads, 0, stream_>>>(out, inp, n);
  CUDA_CHECK_LAUNCH();
}

void CudaBackend::gelu_backward(float* dinp, const float* inp, const float* dout, size_t n, GradMode mode) {
  if (n == 0) return;
  gelu_backward_kernel<<<grid_for(n), kThreads, 0, stream_>>>(dinp, inp, dout, n, mode == GradMode::overwrite);
  CUDA_CHECK_LAUNCH();
}

void CudaBackend::residual_forward(float* out, const float* a, const float* b, size_t n) {
  if (n == 0) return;
  residual_kernel<<<grid_for(n), kThreads, 0, stream_>>>(out, a, b, n);
  CUDA_CHECK_LAUNCH();
}

void CudaBackend::accumulate(float* y, const float* x, size_t n) {
  if (n == 0) return;
  accumulate_kernel<<<grid_for(n), kThreads, 0, stream_>>>(y, x, n);
  CUDA_CHECK_LAUNCH();
}

void CudaBackend::scale(float* x, float s, size_t n) {
  if (n == 0) return;
  scale_kernel<<<grid_for(n), kThreads, 0, stream_>>>(x, s, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace competelm::cuda
