// Builds without CUDA: no GPU peak, no device memory.
#ifndef COMPETELM_HAVE_CUDA
#include "backend/cuda_info.hpp"

namespace competelm {

CudaPeak cuda_peak(int device, Precision) { return CudaPeak{0.0, "cuda: not built (device " + std::to_string(device) + ")"}; }
size_t cuda_peak_memory_bytes(const Backend&) { return 0; }

}  // namespace competelm
#endif
