// The CUDA code that competelm-cuda-emu does not emulate: the wmma attention kernels
// (attention_tc.cu: nvcuda::wmma has no emulation, so the file is not compiled into it). Each
// aborts, so that a test reaching one fails loudly instead of linking against nothing
// (attention.cu's bf16 dispatch reaches them only with the mma kernels switched off or for a
// head size they lack).
#include <cstdlib>

#include "attention_tc.cuh"

namespace competelm::cuda {
bool attention_tc_supported(int) { std::abort(); }
size_t attention_tc_workspace_bytes(int, int, int) { std::abort(); }
void attention_tc_forward(cudaStream_t, float*, float*, const float*, int, int, int, int, void*) { std::abort(); }
void attention_tc_backward(cudaStream_t, float*, const float*, const float*, const float*, const float*, int, int,
                           int, int, void*) {
  std::abort();
}
}  // namespace competelm::cuda
