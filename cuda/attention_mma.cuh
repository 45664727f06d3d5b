#pragma once
// Causal flash attention with register-resident scores (FlashAttention-2 on mma.sync m16n8k16,
// bf16 operands, fp32 accumulation; attention_mma.cu): the fast kernels of the bf16 precision
// mode, behind the gate kAttentionMmaVerified / COMPETELM_ATTENTION_MMA (cuda_backend.cuh);
// attention_tc.cu stays the fallback. Same contract and numerics as attention_tc.cuh: qkv
// (B,T,3C), scale 1/sqrt(hs), key s ≤ query t, operands rounded to bf16 once per call into
// `workspace` (attention_heads_bytes(B, T, C) bytes, 16-byte aligned), P and dS rounded to bf16
// before their products, lse the natural log-sum-exp per query row. Deterministic: no atomics,
// each output element written by one thread.
#include <cuda_runtime.h>

#include <cstddef>

namespace competelm::cuda {

// Head sizes with an mma kernel: 32, 64.
bool attention_mma_supported(int hs);

// out (B,T,C) overwritten; lse (B,NH,T) = natural log-sum-exp of each query row's scaled scores.
void attention_mma_forward(cudaStream_t st, float* out, float* lse, const float* qkv, int B, int T, int C, int NH,
                           void* workspace);

// dqkv (B,T,3C) += ∂L/∂qkv given dout (B,T,C), the forward's lse and delta (B,NH,T) =
// rowsum(dO ∘ O) (attention_delta).
void attention_mma_backward(cudaStream_t st, float* dqkv, const float* delta, const float* dout, const float* qkv,
                            const float* lse, int B, int T, int C, int NH, void* workspace);

}  // namespace competelm::cuda
