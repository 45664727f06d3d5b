#pragma once
// Causal flash attention on bf16 tensor cores (nvcuda::wmma m16n16k16, fp32 accumulation), the
// attention of the CUDA backend's bf16 precision mode (attention.cu dispatches here). Same
// contract as the fp32 kernels in attention.cu: qkv (B,T,3C) with q, k, v of head h at columns
// h·hs, C + h·hs, 2C + h·hs; scale 1/sqrt(hs); key s ≤ query t; fp32 in and out (operands are
// rounded to bf16 while staged into shared memory). Deterministic: no atomics.
#include <cuda_runtime.h>

namespace competelm::cuda {

// Head sizes with a tensor-core kernel: 32, 64, 128.
bool attention_tc_supported(int hs);

// out (B,T,C) overwritten; lse (B,NH,T) = natural log-sum-exp of each query row's scaled scores.
void attention_tc_forward(cudaStream_t st, float* out, float* lse, const float* qkv, int B, int T, int C, int NH);

// dqkv (B,T,3C) += ∂L/∂qkv given dout (B,T,C) and the forward's lse; delta (B,NH,T) is scratch
// (it receives D = rowsum(dO ∘ O), O recomputed by the forward kernel).
void attention_tc_backward(cudaStream_t st, float* dqkv, float* delta, const float* dout, const float* qkv,
                           const float* lse, int B, int T, int C, int NH);

}  // namespace competelm::cuda
