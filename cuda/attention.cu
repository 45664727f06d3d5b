// STUB (to be replaced by the attention ops): every member fails with "not implemented yet".
#include "cuda_backend.cuh"
#include "cuda_common.cuh"

namespace competelm::cuda {

size_t CudaBackend::attention_state_elements(int B, int NH, int T) const {
  fail("cuda backend: attention_state_elements is not implemented yet");
}

size_t CudaBackend::attention_scratch_elements(int B, int NH, int T) const {
  fail("cuda backend: attention_scratch_elements is not implemented yet");
}

void CudaBackend::attention_forward(float* out, float* att, const float* qkv, int B, int T, int C, int NH) {
  fail("cuda backend: attention_forward is not implemented yet");
}

void CudaBackend::attention_backward(float* dqkv, float* scratch, const float* dout, const float* qkv, const float* att, int B, int T, int C, int NH) {
  fail("cuda backend: attention_backward is not implemented yet");
}


}  // namespace competelm::cuda
