#pragma once
// Causal flash attention on bf16 tensor cores (nvcuda::wmma m16n16k16, fp32 accumulation), the
// attention of the CUDA backend's bf16 precision mode (attention.cu dispatches here). Same
// contract as the fp32 kernels in attention.cu: qkv (B,T,3C) with q, k, v of head h at columns
// h·hs, C + h·hs, 2C + h·hs; scale 1/sqrt(hs); key s ≤ query t; fp32 in and out (operands are
// rounded to bf16 once per call into `workspace`). Deterministic: no atomics.
#include <cuda_runtime.h>

#include <cstddef>

namespace competelm::cuda {

// Head sizes with a tensor-core kernel: 32, 64, 128.
bool attention_tc_supported(int hs);

// Bytes of device workspace both calls need (bf16 head-major copies of q, k, v, dO): a 16-byte
// aligned buffer, clobbered by each call, free again when the call's kernels are done.
size_t attention_tc_workspace_bytes(int B, int T, int C);

// out (B,T,C) overwritten; lse (B,NH,T) = natural log-sum-exp of each query row's scaled scores.
void attention_tc_forward(cudaStream_t st, float* out, float* lse, const float* qkv, int B, int T, int C, int NH,
                          void* workspace);

// dqkv (B,T,3C) += ∂L/∂qkv given dout (B,T,C), the forward's lse and delta (B,NH,T) =
// D = rowsum(dO ∘ O) (attention_delta, attention_prep.cuh).
void attention_tc_backward(cudaStream_t st, float* dqkv, const float* delta, const float* dout, const float* qkv,
                           const float* lse, int B, int T, int C, int NH, void* workspace);

}  // namespace competelm::cuda
