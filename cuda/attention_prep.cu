// The attention pre-passes (attention_prep.cuh): bf16 head-major operand copies and the
// backward's D = rowsum(dO ∘ O).
#include "attention_prep.cuh"

#include "core/error.hpp"
#include "cuda_common.cuh"

namespace competelm::cuda {
namespace {

using bf16 = __nv_bfloat16;

// dst = `groups`·8 bf16: tensors q, k, v (from qkv (B,T,3C)) and, past 3·per_tensor, dO (from
// dout (B,T,C)), each head-major (B,NH,T,hs) of per_tensor = B·T·C elements, rounded to
// nearest even. One thread per 8 consecutive elements of one head row (hs % 8 == 0): two
// 16-byte loads (`vec`: sources 16-byte aligned; otherwise 8 scalar loads), one 16-byte store.
__global__ void __launch_bounds__(256)
    to_heads_kernel(bf16* dst, const float* qkv, const float* dout, size_t groups, size_t per_tensor, int T, int C,
                    int NH, bool vec) {
  const size_t g = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (g >= groups) return;
  const int hs = C / NH;
  const size_t e = 8 * g;  // first element, in dst
  const size_t m = e / per_tensor, i = e % per_tensor;  // tensor, head-major index within it
  const int d = static_cast<int>(i % static_cast<size_t>(hs));
  const size_t row = i / static_cast<size_t>(hs);  // (b·NH + h)·T + t
  const int t = static_cast<int>(row % static_cast<size_t>(T));
  const size_t bh = row / static_cast<size_t>(T);
  const int h = static_cast<int>(bh % static_cast<size_t>(NH));
  const size_t bt = bh / static_cast<size_t>(NH) * T + t;  // token b·T + t
  const size_t col = static_cast<size_t>(h) * hs + d;
  const float* src = m < 3 ? qkv + bt * 3 * static_cast<size_t>(C) + m * C + col : dout + bt * C + col;
  float x[8];
  if (vec) {
    const float4 a = reinterpret_cast<const float4*>(src)[0], b = reinterpret_cast<const float4*>(src)[1];
    x[0] = a.x;
    x[1] = a.y;
    x[2] = a.z;
    x[3] = a.w;
    x[4] = b.x;
    x[5] = b.y;
    x[6] = b.z;
    x[7] = b.w;
  } else {
#pragma unroll
    for (int j = 0; j < 8; ++j) x[j] = src[j];
  }
  uint4 y;
  y.x = pack_bf16(x[0], x[1]);
  y.y = pack_bf16(x[2], x[3]);
  y.z = pack_bf16(x[4], x[5]);
  y.w = pack_bf16(x[6], x[7]);
  *reinterpret_cast<uint4*>(dst + e) = y;  // e % 8 == 0 and dst 16-byte aligned
}


// One warp per (b,h,t) row of delta (rows in that order): lane sums d = lane, lane + 32, … in
// order, then warp_sum's fixed tree. 8 warps per block; a warp past the last row returns whole.
__global__ void __launch_bounds__(256)
    delta_kernel(float* delta, const float* dout, const float* out, size_t rows, int T, int C, int NH) {
  const size_t row = (static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int lane = static_cast<int>(threadIdx.x) % kWarp;
  if (row >= rows) return;  // warp-uniform
  const int hs = C / NH;
  const int t = static_cast<int>(row % static_cast<size_t>(T));
  const size_t bh = row / static_cast<size_t>(T);
  const int h = static_cast<int>(bh % static_cast<size_t>(NH));
  const size_t b = bh / static_cast<size_t>(NH);
  const size_t base = (b * T + t) * static_cast<size_t>(C) + static_cast<size_t>(h) * hs;  // (B,T,C)
  float acc = 0.0f;
  for (int d = lane; d < hs; d += kWarp) acc += dout[base + d] * out[base + d];
  acc = warp_sum(acc);
  if (lane == 0) delta[row] = acc;
}

}  // namespace

size_t attention_heads_bytes(int B, int T, int C) {
  if (B <= 0 || T <= 0 || C <= 0) return 0;
  return 4 * static_cast<size_t>(B) * T * C * sizeof(bf16);
}

// The workspace's head-major bf16 copies: q, k, v, and dO when `dout` is given.
bf16* attention_to_heads(cudaStream_t st, void* workspace, const float* qkv, const float* dout, int B, int T, int C, int NH) {
  if (workspace == nullptr || (reinterpret_cast<uintptr_t>(workspace) & 15u) != 0)
    fail("cuda attention (bf16): the workspace must be a 16-byte aligned device buffer of "
         "attention_heads_bytes bytes");
  bf16* heads = static_cast<bf16*>(workspace);
  const size_t per_tensor = static_cast<size_t>(B) * T * C;
  const size_t groups = (dout ? 4 : 3) * per_tensor / 8;  // C = NH·hs, hs % 8 == 0
  const size_t blocks = (groups + 255) / 256;
  if (blocks > 0x7fffffffu) fail("cuda attention (bf16): B·T·C = {} is too large", per_tensor);
  // Row strides 3C and C floats and head offsets h·hs + 8j are multiples of 4 floats (C % 32 == 0).
  const bool vec = ((reinterpret_cast<uintptr_t>(qkv) | reinterpret_cast<uintptr_t>(dout)) & 15u) == 0;
  to_heads_kernel<<<static_cast<unsigned>(blocks), 256, 0, st>>>(heads, qkv, dout, groups, per_tensor, T, C, NH, vec);
  CUDA_CHECK_LAUNCH();
  return heads;
}

void attention_delta(cudaStream_t st, float* delta, const float* dout, const float* out, int B, int T, int C,
                     int NH) {
  const size_t rows = static_cast<size_t>(B) * NH * T;
  if (rows == 0) return;
  const size_t blocks = (rows + 7) / 8;  // 8 rows (warps) per 256-thread block
  if (blocks > 0x7fffffffu) fail("cuda attention: B·NH·T = {} rows is too many", rows);
  delta_kernel<<<static_cast<unsigned>(blocks), 256, 0, st>>>(delta, dout, out, rows, T, C, NH);
  CUDA_CHECK_LAUNCH();
}

unsigned attention_grid(int B, int NH, int T, int tile_rows, const char* path) {
  const size_t blocks = static_cast<size_t>(B) * NH * ((static_cast<size_t>(T) + tile_rows - 1) / tile_rows);
  if (blocks > 0x7fffffffu) fail("cuda attention ({}): B·NH·ceil(T/{}) = {} blocks is too many", path, tile_rows, blocks);
  return static_cast<unsigned>(blocks);
}

}  // namespace competelm::cuda
