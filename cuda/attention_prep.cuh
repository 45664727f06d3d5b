#pragma once
// The pre-passes shared by the attention paths (attention_prep.cu): the bf16 head-major operand
// copies of the tensor-core kernels (attention_tc.cu, attention_mma.cu) and the backward's
// per-row D = rowsum(dO ∘ O) (every path).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace competelm::cuda {

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
