// The CUDA probe of a build without nvcc: the CUDA backend is not in this binary.
#include "backend/cuda_probe.hpp"

#ifndef COMPETELM_HAVE_CUDA
namespace competelm {
CudaProbe probe_cuda() { return CudaProbe{false, 0, "cuda: not built (nvcc was not found at configure time)"}; }
}  // namespace competelm
#endif
