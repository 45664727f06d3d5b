// The CudaBackend members that competelm-cuda-emu does not emulate (attention.cu: not compiled
// into it). Each aborts, so that a test reaching one fails loudly instead of linking
// against nothing.
#include <cstdlib>

#include "cuda_backend.cuh"

namespace competelm::cuda {
size_t CudaBackend::attention_state_elements(int B, int NH, int T) const { std::abort(); }
size_t CudaBackend::attention_scratch_elements(int B, int NH, int T) const { std::abort(); }
void CudaBackend::attention_forward(float* out, float* att, const float* qkv, int B, int T, int C, int NH) { std::abort(); }
void CudaBackend::attention_backward(float* dqkv, float* scratch, const float* dout, const float* out, const float* qkv, const float* att, int B, int T, int C, int NH) { std::abort(); }
}  // namespace competelm::cuda
