#pragma once
// The pre-passes shared by the attention paths (attention_prep.cu): the bf16 head-major operand
// copies of the tensor-core kernels (attention_tc.cu, attention_mma.cu) and the backward's
// per-row D = rowsum(dO ∘ O) (every path).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "cuda_common.cuh"

namespace competelm::cuda {

// Base of head h of batch b in a (B,T,3C) qkv-shaped tensor: the q columns; k at +C, v at +2C.
__device__ inline size_t head_base(int b, int h, int T, int C, int hs) {
  return static_cast<size_t>(b) * T * (3 * static_cast<size_t>(C)) + static_cast<size_t>(h) * hs;
}

// The tensor-core kernels' grid: one block per (b, h, tile of `tile_rows` rows), B·NH·tiles
// blocks. Block → (b, h, tile): reversed, the last tiles (most work in the forward / dQ) first;
// otherwise the first tiles (most work in dK/dV) first.
struct BlockPos {
  int b, h, bh, tile;
};
__device__ inline BlockPos block_pos(int NH, int T, int tile_rows, bool reversed) {
  const int tiles = (T + tile_rows - 1) / tile_rows;
  const int BH = static_cast<int>(gridDim.x) / tiles;
  const int bh = static_cast<int>(blockIdx.x) % BH;
  const int i = static_cast<int>(blockIdx.x) / BH;
  return {bh / NH, bh % NH, bh, reversed ? tiles - 1 - i : i};
}
// B·NH·ceil(T/tile_rows), refused (naming `path`) past the grid's limit.
unsigned attention_grid(int B, int NH, int T, int tile_rows, const char* path);

// Opt in to more than 48 KiB of dynamic shared memory (set on every launch: cheap, and right on
// whichever device is current).
template <typename Kernel>
void allow_smem(Kernel kernel, size_t bytes) {
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
}

// Two floats rounded to bf16 (nearest even), the first in the low half (memory order).
__device__ inline uint32_t pack_bf16(float lo, float hi) {
  return static_cast<uint32_t>(__bfloat16_as_ushort(__float2bfloat16_rn(lo))) |
         (static_cast<uint32_t>(__bfloat16_as_ushort(__float2bfloat16_rn(hi))) << 16);
}

// Bytes of the workspace attention_to_heads fills: 4 head-major bf16 tensors (q, k, v, dO).
size_t attention_heads_bytes(int B, int T, int C);

// workspace (16-byte aligned, attention_heads_bytes) ← q, k, v of qkv (B,T,3C) and, when dout
// (B,T,C) is given, dO, each rounded to bf16 (nearest even) and head-major (B,NH,T,hs), B·T·C
// elements apart; returns the workspace as bf16. C/NH must be a multiple of 8.
__nv_bfloat16* attention_to_heads(cudaStream_t st, void* workspace, const float* qkv, const float* dout, int B,
                                  int T, int C, int NH);

// delta (B,NH,T) = D[b,h,t] = Σ_d dout[b,t,h·hs+d]·out[b,t,h·hs+d] in fp32, in a fixed order
// (deterministic): the backward's softmax correction, from the forward's output.
void attention_delta(cudaStream_t st, float* delta, const float* dout, const float* out, int B, int T, int C,
                     int NH);

}  // namespace competelm::cuda
