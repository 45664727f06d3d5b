// LayerNorm over the last dimension (eps 1e-5, biased variance), as the CPU oracle: two
// passes (mean, then variance about the mean), statistics kept for the backward. The residual
// add feeding a layernorm is fused into it (residual_layernorm_forward): one warp per row.
//
// Backward: dinp one warp per row; dweight / dbias are column sums over the rows, done in two
// deterministic stages (no atomics): per chunk of kRowsPerChunk rows a partial per column,
// then the partials added in chunk order.
#include <algorithm>

#include "cuda_backend.cuh"
#include "cuda_common.cuh"

namespace competelm::cuda {
namespace {

constexpr float kEps = 1e-5f;
constexpr int kThreads = 256;                 // 8 warps: 8 rows per block in the row kernels
constexpr int kRowsPerBlock = kThreads / kWarp;
constexpr int kRowsPerChunk = 32;             // rows per partial sum of dweight / dbias

__global__ void layernorm_forward_kernel(float* out, float* mean, float* rstd, const float* inp,
                                         const float* weight, const float* bias, int N, int C) {
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= N) return;  // whole warps exit together: the shuffles below see full warps
  const float* x = inp + size_t(row) * C;
  float* o = out + size_t(row) * C;
  float sum = 0.0f;
  for (int c = lane; c < C; c += kWarp) sum += x[c];
  const float m = warp_sum(sum) / static_cast<float>(C);
  float var = 0.0f;
  for (int c = lane; c < C; c += kWarp) {
    const float d = x[c] - m;
    var += d * d;
  }
  const float s = 1.0f / sqrtf(warp_sum(var) / static_cast<float>(C) + kEps);
  for (int c = lane; c < C; c += kWarp) o[c] = (x[c] - m) * s * weight[c] + bias[c];
  if (lane == 0) {
    mean[row] = m;
    rstd[row] = s;
  }
}

// res[row] += x[row], then the layernorm of the sum: the first pass reads x and res once and
// writes the sum back; the variance and output passes re-read it from res, each lane only the
// columns it wrote itself (c ≡ lane mod 32), so no synchronisation is needed. The statistics
// are summed in the same order as layernorm_forward_kernel's.
__global__ void residual_layernorm_forward_kernel(float* res, const float* x, float* out, float* mean,
                                                  float* rstd, const float* weight, const float* bias, int N,
                                                  int C) {
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= N) return;  // whole warps exit together: the shuffles below see full warps
  float* r = res + size_t(row) * C;
  const float* xr = x + size_t(row) * C;
  float* o = out + size_t(row) * C;
  float sum = 0.0f;
  for (int c = lane; c < C; c += kWarp) {
    const float v = r[c] + xr[c];
    r[c] = v;
    sum += v;
  }
  const float m = warp_sum(sum) / static_cast<float>(C);
  float var = 0.0f;
  for (int c = lane; c < C; c += kWarp) {
    const float d = r[c] - m;
    var += d * d;
  }
  const float s = 1.0f / sqrtf(warp_sum(var) / static_cast<float>(C) + kEps);
  for (int c = lane; c < C; c += kWarp) o[c] = (r[c] - m) * s * weight[c] + bias[c];
  if (lane == 0) {
    mean[row] = m;
    rstd[row] = s;
  }
}

// dinp[row] += (dnorm - mean(dnorm) - norm · mean(dnorm·norm)) · rstd, dnorm = dout · weight.
__global__ void layernorm_dinp_kernel(float* dinp, const float* dout, const float* inp, const float* weight,
                                      const float* mean, const float* rstd, int N, int C) {
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= N) return;
  const float* x = inp + size_t(row) * C;
  const float* d = dout + size_t(row) * C;
  float* dx = dinp + size_t(row) * C;
  const float m = mean[row], s = rstd[row];
  float dnorm_sum = 0.0f, dnorm_norm_sum = 0.0f;
  for (int c = lane; c < C; c += kWarp) {
    const float norm = (x[c] - m) * s;
    const float dnorm = d[c] * weight[c];
    dnorm_sum += dnorm;
    dnorm_norm_sum += dnorm * norm;
  }
  const float dnorm_mean = warp_sum(dnorm_sum) / static_cast<float>(C);
  const float dnorm_norm_mean = warp_sum(dnorm_norm_sum) / static_cast<float>(C);
  for (int c = lane; c < C; c += kWarp) {
    const float norm = (x[c] - m) * s;
    const float dnorm = d[c] * weight[c];
    dx[c] += (dnorm - dnorm_mean - norm * dnorm_norm_mean) * s;
  }
}

// Grid (chunks, ceil(C / kThreads)): thread c of chunk k sums rows [k·kRowsPerChunk, +kRowsPerChunk)
// in row order into partial_w[k, c] = Σ norm·dout and partial_b[k, c] = Σ dout.
__global__ void layernorm_param_partials_kernel(float* partial_w, float* partial_b, const float* dout,
                                                const float* inp, const float* mean, const float* rstd, int N,
                                                int C) {
  const int c = blockIdx.y * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const int k = blockIdx.x;
  const int r0 = k * kRowsPerChunk, r1 = min(N, r0 + kRowsPerChunk);
  float pw = 0.0f, pb = 0.0f;
  for (int r = r0; r < r1; ++r) {
    const float d = dout[size_t(r) * C + c];
    const float norm = (inp[size_t(r) * C + c] - mean[r]) * rstd[r];
    pw += norm * d;
    pb += d;
  }
  partial_w[size_t(k) * C + c] = pw;
  partial_b[size_t(k) * C + c] = pb;
}

// dweight[c] += Σ_k partial_w[k, c]; dbias[c] += Σ_k partial_b[k, c] (k in increasing order).
__global__ void layernorm_param_reduce_kernel(float* dweight, float* dbias, const float* partial_w,
                                              const float* partial_b, int chunks, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float w = 0.0f, b = 0.0f;
  for (int k = 0; k < chunks; ++k) {
    w += partial_w[size_t(k) * C + c];
    b += partial_b[size_t(k) * C + c];
  }
  dweight[c] += w;
  dbias[c] += b;
}

}  // namespace

void CudaBackend::layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                                    const float* bias, int N, int C) {
  if (N == 0 || C == 0) return;
  layernorm_forward_kernel<<<blocks_for(size_t(N), kRowsPerBlock), kThreads, 0, stream_>>>(out, mean, rstd, inp,
                                                                                          weight, bias, N, C);
  CUDA_CHECK_LAUNCH();
}

void CudaBackend::residual_layernorm_forward(float* res, const float* x, float* out, float* mean, float* rstd,
                                             const float* weight, const float* bias, int N, int C) {
  if (N == 0 || C == 0) return;
  residual_layernorm_forward_kernel<<<blocks_for(size_t(N), kRowsPerBlock), kThreads, 0, stream_>>>(
      res, x, out, mean, rstd, weight, bias, N, C);
  CUDA_CHECK_LAUNCH();
}

void CudaBackend::layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                                     const float* weight, const float* mean, const float* rstd, int N, int C) {
  if (N == 0 || C == 0) return;
  layernorm_dinp_kernel<<<blocks_for(size_t(N), kRowsPerBlock), kThreads, 0, stream_>>>(dinp, dout, inp, weight,
                                                                                       mean, rstd, N, C);
  CUDA_CHECK_LAUNCH();
  const int chunks = static_cast<int>(blocks_for(size_t(N), kRowsPerChunk));
  float* partial_w = static_cast<float*>(scratch(2 * size_t(chunks) * C * sizeof(float)));
  float* partial_b = partial_w + size_t(chunks) * C;
  const dim3 grid(static_cast<unsigned>(chunks), blocks_for(size_t(C), kThreads));
  layernorm_param_partials_kernel<<<grid, kThreads, 0, stream_>>>(partial_w, partial_b, dout, inp, mean, rstd, N,
                                                                  C);
  CUDA_CHECK_LAUNCH();
  layernorm_param_reduce_kernel<<<blocks_for(size_t(C), kThreads), kThreads, 0, stream_>>>(
      dweight, dbias, partial_w, partial_b, chunks, C);
  CUDA_CHECK_LAUNCH();
}

}  // namespace competelm::cuda
