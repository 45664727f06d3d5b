// LayerNorm over the last dimension (eps 1e-5, biased variance), as the CPU oracle: two
// passes (mean, then variance about the mean), statistics kept for the backward. The residual
// add feeding a layernorm is fused into it (residual_layernorm_forward). One warp per row.
//
// Fast path (C % 4 == 0, C ≤ 1024, 16-byte aligned rows; GPT-2's C = 768): the warp loads its
// row once as float4 into registers (kVec float4 per lane) and computes both statistics and the
// output from there, so a forward moves exactly one read + one write of (N, C) (the residual
// variant: two reads + two writes). The backward is one fused kernel: per row, dinp from
// registers, and each lane accumulates its columns' dweight / dbias terms in registers over the
// block's kBwdRowsPerBlock rows; the block's 8 warps are then added in warp order into one
// partial row per block, and a second small kernel adds the partial rows in a fixed order
// (column-parallel, 16 slices per column combined in slice order). No atomics: deterministic.
// The former backward read dout and inp twice (dinp pass, then a partials pass) and its final
// reduction ran ceil(C / 256) blocks, each thread adding ceil(N / 32) partials serially.
//
// Generic path (any other C or alignment): scalar loops re-reading the row (from L1), and the
// same partial rows / final reduction.
#include <algorithm>
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

constexpr float kEps = 1e-5f;
constexpr int kThreads = 256;                 // 8 warps: 8 rows per block in the row kernels
constexpr int kRowsPerBlock = kThreads / kWarp;
constexpr int kRowsPerChunk = 32;             // rows per partial row of dweight / dbias
constexpr int kMaxVec = 8;                    // float4 per lane on the fast path: C ≤ 32·4·8
constexpr int kMaxC4 = kWarp * kMaxVec;       // float4 per row on the fast path
constexpr int kBwdWarps = kThreads / kWarp;   // fused backward: warp w takes rows w, w + 8, ...
static_assert(kRowsPerChunk % kBwdWarps == 0, "every warp of a backward block gets the same row count");

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// float4 per lane the fast path needs for C columns (a supported instantiation), 0: generic path.
int vec_per_lane(int C) {
  if (C % 4 != 0 || C / 4 > kMaxC4) return 0;
  const int need = (C / 4 + kWarp - 1) / kWarp;
  return need <= 2 ? 2 : need <= 4 ? 4 : need <= 6 ? 6 : 8;
}

// ---- fast path ------------------------------------------------------------------------------
// A lane holds the row's float4s c4 = lane + 32·i (i < kVec) for those c4 < C / 4.

// Σ over the lane's values (the caller has them in xv), in a fixed order.
template <int kVec>
__device__ inline float lane_sum(const float4 (&xv)[kVec], int lane, int C4) {
  float sum = 0.0f;
COMPETELM_UNROLL
  for (int i = 0; i < kVec; ++i) {
    if (lane + kWarp * i < C4) sum += ((xv[i].x + xv[i].y) + (xv[i].z + xv[i].w));
  }
  return sum;
}

// The rest of a row's layernorm once the lane sums are known: mean, variance about the mean,
// output. Shared by both forward kernels so that they run the same fp32 operations.
template <int kVec>
__device__ inline void normalize_row(const float4 (&xv)[kVec], float lane_total, float4* o4, float* mean, float* rstd,
                                     const float4* w4, const float4* b4, int row, int lane, int C) {
  const int C4 = C / 4;
  const float m = warp_sum(lane_total) / static_cast<float>(C);
  float var = 0.0f;
COMPETELM_UNROLL
  for (int i = 0; i < kVec; ++i) {
    if (lane + kWarp * i < C4) {
      const float dx = xv[i].x - m, dy = xv[i].y - m, dz = xv[i].z - m, dw = xv[i].w - m;
      var += ((dx * dx + dy * dy) + (dz * dz + dw * dw));
    }
  }
  const float s = 1.0f / sqrtf(warp_sum(var) / static_cast<float>(C) + kEps);
COMPETELM_UNROLL
  for (int i = 0; i < kVec; ++i) {
    const int c4 = lane + kWarp * i;
    if (c4 < C4) {
      const float4 w = w4[c4], b = b4[c4];
      float4 o;
      o.x = (xv[i].x - m) * s * w.x + b.x;
      o.y = (xv[i].y - m) * s * w.y + b.y;
      o.z = (xv[i].z - m) * s * w.z + b.z;
      o.w = (xv[i].w - m) * s * w.w + b.w;
      o4[c4] = o;
    }
  }
  if (lane == 0) {
    mean[row] = m;
    rstd[row] = s;
  }
}

template <int kVec>
__global__ void __launch_bounds__(kThreads) layernorm_forward_vec_kernel(float* out, float* mean, float* rstd,
                                                                        const float* inp, const float* weight,
                                                                        const float* bias, int N, int C) {
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= N) return;  // whole warps exit together: the shuffles below see full warps
  const int C4 = C / 4;
  const float4* x4 = reinterpret_cast<const float4*>(inp + size_t(row) * C);
  float4 xv[kVec];  // zeros past the row: never used, but never uninitialised either
COMPETELM_UNROLL
  for (int i = 0; i < kVec; ++i) xv[i] = lane + kWarp * i < C4 ? x4[lane + kWarp * i] : make_float4(0.f, 0.f, 0.f, 0.f);
  normalize_row(xv, lane_sum(xv, lane, C4), reinterpret_cast<float4*>(out + size_t(row) * C), mean, rstd,
                reinterpret_cast<const float4*>(weight), reinterpret_cast<const float4*>(bias), row, lane, C);
}

// res[row] += x[row] (one fp32 add per element, as the CPU), written back, then the layernorm
// of the sum from the registers: the same operations as layernorm_forward_vec_kernel on it.
template <int kVec>
__global__ void __launch_bounds__(kThreads) residual_layernorm_forward_vec_kernel(float* res, const float* x,
                                                                                 float* out, float* mean,
                                                                                 float* rstd, const float* weight,
                                                                                 const float* bias, int N, int C) {
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= N) return;  // whole warps exit together: the shuffles below see full warps
  const int C4 = C / 4;
  float4* r4 = reinterpret_cast<float4*>(res + size_t(row) * C);
  const float4* x4 = reinterpret_cast<const float4*>(x + size_t(row) * C);
  float4 rv[kVec], xv[kVec];
COMPETELM_UNROLL
  for (int i = 0; i < kVec; ++i) {
    const bool in = lane + kWarp * i < C4;
    rv[i] = in ? r4[lane + kWarp * i] : make_float4(0.f, 0.f, 0.f, 0.f);
    xv[i] = in ? x4[lane + kWarp * i] : make_float4(0.f, 0.f, 0.f, 0.f);
  }
COMPETELM_UNROLL
  for (int i = 0; i < kVec; ++i) {
    if (lane + kWarp * i < C4) {
      rv[i].x += xv[i].x;
      rv[i].y += xv[i].y;
      rv[i].z += xv[i].z;
      rv[i].w += xv[i].w;
      r4[lane + kWarp * i] = rv[i];
    }
  }
  normalize_row(rv, lane_sum(rv, lane, C4), reinterpret_cast<float4*>(out + size_t(row) * C), mean, rstd,
                reinterpret_cast<const float4*>(weight), reinterpret_cast<const float4*>(bias), row, lane, C);
}

// Block b takes rows [b·kRowsPerChunk, +kRowsPerChunk): warp w rows w, w + 8, ... of them.
// Per row: dinp[row] += (dnorm − mean(dnorm) − norm · mean(dnorm·norm)) · rstd, dnorm = dout ·
// weight, from the row in registers; the lane's columns accumulate Σ norm·dout and Σ dout in
// registers. Then partial_w[b, c] / partial_b[b, c] = the 8 warps' sums added in warp order.
// Two blocks per SM for kVec ≤ 6 (≤ 128 registers: the row, its dout and the two accumulators).
template <int kVec>
__global__ void __launch_bounds__(kThreads, kVec <= 6 ? 2 : 1)
    layernorm_backward_vec_kernel(float* dinp, float* partial_w, float* partial_b, const float* dout,
                                  const float* inp, const float* weight, const float* mean, const float* rstd,
                                  int N, int C) {
  __shared__ float4 block_w[kMaxC4], block_b[kMaxC4];
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int C4 = C / 4;
  const float4* w4 = reinterpret_cast<const float4*>(weight);
  float4 pw[kVec], pb[kVec];
COMPETELM_UNROLL
  for (int i = 0; i < kVec; ++i) {
    pw[i] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    pb[i] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  }
  const int r0 = blockIdx.x * kRowsPerChunk, r1 = min(N, r0 + kRowsPerChunk);
  for (int row = r0 + warp; row < r1; row += kBwdWarps) {  // uniform per warp: full-warp shuffles
    const float4* x4 = reinterpret_cast<const float4*>(inp + size_t(row) * C);
    const float4* d4 = reinterpret_cast<const float4*>(dout + size_t(row) * C);
    float4* dx4 = reinterpret_cast<float4*>(dinp + size_t(row) * C);
    const float m = mean[row], s = rstd[row];
    float4 xv[kVec], dv[kVec];
COMPETELM_UNROLL
    for (int i = 0; i < kVec; ++i) {
      const bool in = lane + kWarp * i < C4;
      xv[i] = in ? x4[lane + kWarp * i] : make_float4(0.f, 0.f, 0.f, 0.f);
      dv[i] = in ? d4[lane + kWarp * i] : make_float4(0.f, 0.f, 0.f, 0.f);
    }
    float dnorm_sum = 0.0f, dnorm_norm_sum = 0.0f;
COMPETELM_UNROLL
    for (int i = 0; i < kVec; ++i) {
      const int c4 = lane + kWarp * i;
      if (c4 < C4) {
        const float4 w = w4[c4];
        const float nx = (xv[i].x - m) * s, ny = (xv[i].y - m) * s, nz = (xv[i].z - m) * s, nw = (xv[i].w - m) * s;
        const float gx = dv[i].x * w.x, gy = dv[i].y * w.y, gz = dv[i].z * w.z, gw = dv[i].w * w.w;
        dnorm_sum += ((gx + gy) + (gz + gw));
        dnorm_norm_sum += ((gx * nx + gy * ny) + (gz * nz + gw * nw));
      }
    }
    const float dnorm_mean = warp_sum(dnorm_sum) / static_cast<float>(C);
    const float dnorm_norm_mean = warp_sum(dnorm_norm_sum) / static_cast<float>(C);
COMPETELM_UNROLL
    for (int i = 0; i < kVec; ++i) {
      const int c4 = lane + kWarp * i;
      if (c4 < C4) {
        const float4 w = w4[c4];
        float4 g = dx4[c4];
        const float nx = (xv[i].x - m) * s, ny = (xv[i].y - m) * s, nz = (xv[i].z - m) * s, nw = (xv[i].w - m) * s;
        g.x += (dv[i].x * w.x - dnorm_mean - nx * dnorm_norm_mean) * s;
        g.y += (dv[i].y * w.y - dnorm_mean - ny * dnorm_norm_mean) * s;
        g.z += (dv[i].z * w.z - dnorm_mean - nz * dnorm_norm_mean) * s;
        g.w += (dv[i].w * w.w - dnorm_mean - nw * dnorm_norm_mean) * s;
        dx4[c4] = g;
        pw[i].x += nx * dv[i].x;
        pw[i].y += ny * dv[i].y;
        pw[i].z += nz * dv[i].z;
        pw[i].w += nw * dv[i].w;
        pb[i].x += dv[i].x;
        pb[i].y += dv[i].y;
        pb[i].z += dv[i].z;
        pb[i].w += dv[i].w;
      }
    }
  }
  // The warps' accumulators into the block's, in warp order (warp 0 stores, the others add).
  for (int w = 0; w < kBwdWarps; ++w) {
    if (warp == w) {
COMPETELM_UNROLL
      for (int i = 0; i < kVec; ++i) {
        const int c4 = lane + kWarp * i;
        if (c4 < C4) {
          if (w == 0) {
            block_w[c4] = pw[i];
            block_b[c4] = pb[i];
          } else {
            float4 a = block_w[c4], b = block_b[c4];
            a.x += pw[i].x;
            a.y += pw[i].y;
            a.z += pw[i].z;
            a.w += pw[i].w;
            b.x += pb[i].x;
            b.y += pb[i].y;
            b.z += pb[i].z;
            b.w += pb[i].w;
            block_w[c4] = a;
            block_b[c4] = b;
          }
        }
      }
    }
    __syncthreads();
  }
  const float* bw = reinterpret_cast<const float*>(block_w);
  const float* bb = reinterpret_cast<const float*>(block_b);
  for (int c = threadIdx.x; c < C; c += kThreads) {
    partial_w[size_t(blockIdx.x) * C + c] = bw[c];
    partial_b[size_t(blockIdx.x) * C + c] = bb[c];
  }
}

// ---- generic path ---------------------------------------------------------------------------

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

// ---- final reduction (both paths) -------------------------------------------------------------
constexpr int kReduceCols = kWarp;   // columns per block (a warp reads 32 consecutive floats)
constexpr int kReduceSlices = 16;    // slice j adds partial rows j, j + 16, ...; slices in order
constexpr int kReduceThreads = kReduceCols * kReduceSlices;

// dweight[c] += Σ_k partial_w[k, c]; dbias[c] += Σ_k partial_b[k, c], in a fixed order: each
// slice sums its rows in increasing k, then the slices are added in slice order.
__global__ void __launch_bounds__(kReduceThreads) layernorm_param_reduce_kernel(float* dweight, float* dbias,
                                                                                const float* partial_w,
                                                                                const float* partial_b,
                                                                                int chunks, int C) {
  __shared__ float slice_w[kReduceSlices][kReduceCols], slice_b[kReduceSlices][kReduceCols];
  const int col = threadIdx.x % kReduceCols, slice = threadIdx.x / kReduceCols;
  const int c = blockIdx.x * kReduceCols + col;
  float w = 0.0f, b = 0.0f;
  if (c < C) {
    for (int k = slice; k < chunks; k += kReduceSlices) {
      w += partial_w[size_t(k) * C + c];
      b += partial_b[size_t(k) * C + c];
    }
  }
  slice_w[slice][col] = w;
  slice_b[slice][col] = b;
  __syncthreads();
  if (slice == 0 && c < C) {
    float tw = 0.0f, tb = 0.0f;
    for (int j = 0; j < kReduceSlices; ++j) {
      tw += slice_w[j][col];
      tb += slice_b[j][col];
    }
    dweight[c] += tw;
    dbias[c] += tb;
  }
}

}  // namespace

void CudaBackend::layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                                    const float* bias, int N, int C) {
  if (N == 0 || C == 0) return;
  const unsigned grid = blocks_for(size_t(N), kRowsPerBlock);
  const bool aligned = aligned16(out) && aligned16(inp) && aligned16(weight) && aligned16(bias);
  switch (aligned ? vec_per_lane(C) : 0) {
    case 2: layernorm_forward_vec_kernel<2><<<grid, kThreads, 0, stream_>>>(out, mean, rstd, inp, weight, bias, N, C); break;
    case 4: layernorm_forward_vec_kernel<4><<<grid, kThreads, 0, stream_>>>(out, mean, rstd, inp, weight, bias, N, C); break;
    case 6: layernorm_forward_vec_kernel<6><<<grid, kThreads, 0, stream_>>>(out, mean, rstd, inp, weight, bias, N, C); break;
    case 8: layernorm_forward_vec_kernel<8><<<grid, kThreads, 0, stream_>>>(out, mean, rstd, inp, weight, bias, N, C); break;
    default: layernorm_forward_kernel<<<grid, kThreads, 0, stream_>>>(out, mean, rstd, inp, weight, bias, N, C);
  }
  CUDA_CHECK_LAUNCH();
}

void CudaBackend::residual_layernorm_forward(float* res, const float* x, float* out, float* mean, float* rstd,
                                             const float* weight, const float* bias, int N, int C) {
  if (N == 0 || C == 0) return;
  const unsigned grid = blocks_for(size_t(N), kRowsPerBlock);
  const bool aligned = aligned16(res) && aligned16(x) && aligned16(out) && aligned16(weight) && aligned16(bias);
  switch (aligned ? vec_per_lane(C) : 0) {
    case 2: residual_layernorm_forward_vec_kernel<2><<<grid, kThreads, 0, stream_>>>(res, x, out, mean, rstd, weight, bias, N, C); break;
    case 4: residual_layernorm_forward_vec_kernel<4><<<grid, kThreads, 0, stream_>>>(res, x, out, mean, rstd, weight, bias, N, C); break;
    case 6: residual_layernorm_forward_vec_kernel<6><<<grid, kThreads, 0, stream_>>>(res, x, out, mean, rstd, weight, bias, N, C); break;
    case 8: residual_layernorm_forward_vec_kernel<8><<<grid, kThreads, 0, stream_>>>(res, x, out, mean, rstd, weight, bias, N, C); break;
    default: residual_layernorm_forward_kernel<<<grid, kThreads, 0, stream_>>>(res, x, out, mean, rstd, weight, bias, N, C);
  }
  CUDA_CHECK_LAUNCH();
}

void CudaBackend::layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                                     const float* weight, const float* mean, const float* rstd, int N, int C) {
  if (N == 0 || C == 0) return;
  const int chunks = static_cast<int>(blocks_for(size_t(N), kRowsPerChunk));
  float* partial_w = static_cast<float*>(scratch(2 * size_t(chunks) * C * sizeof(float)));
  float* partial_b = partial_w + size_t(chunks) * C;
  const unsigned grid = static_cast<unsigned>(chunks);
  const bool aligned = aligned16(dinp) && aligned16(dout) && aligned16(inp) && aligned16(weight);
  switch (aligned ? vec_per_lane(C) : 0) {
    case 2: layernorm_backward_vec_kernel<2><<<grid, kThreads, 0, stream_>>>(dinp, partial_w, partial_b, dout, inp, weight, mean, rstd, N, C); break;
    case 4: layernorm_backward_vec_kernel<4><<<grid, kThreads, 0, stream_>>>(dinp, partial_w, partial_b, dout, inp, weight, mean, rstd, N, C); break;
    case 6: layernorm_backward_vec_kernel<6><<<grid, kThreads, 0, stream_>>>(dinp, partial_w, partial_b, dout, inp, weight, mean, rstd, N, C); break;
    case 8: layernorm_backward_vec_kernel<8><<<grid, kThreads, 0, stream_>>>(dinp, partial_w, partial_b, dout, inp, weight, mean, rstd, N, C); break;
    default: {
      layernorm_dinp_kernel<<<blocks_for(size_t(N), kRowsPerBlock), kThreads, 0, stream_>>>(dinp, dout, inp, weight, mean, rstd, N, C);
      CUDA_CHECK_LAUNCH();
      const dim3 pgrid(grid, blocks_for(size_t(C), kThreads));
      layernorm_param_partials_kernel<<<pgrid, kThreads, 0, stream_>>>(partial_w, partial_b, dout, inp, mean, rstd, N, C);
    }
  }
  CUDA_CHECK_LAUNCH();
  layernorm_param_reduce_kernel<<<blocks_for(size_t(C), kReduceCols), kReduceThreads, 0, stream_>>>(
      dweight, dbias, partial_w, partial_b, chunks, C);
  CUDA_CHECK_LAUNCH();
}

}  // namespace competelm::cuda
