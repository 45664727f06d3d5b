// make_cuda_backend for CUDA builds: the backend on the requested GPU.
#include "backend/cuda_factory.hpp"
#include "cuda_backend.cuh"

namespace competelm {

std::unique_ptr<Backend> make_cuda_backend(int device) { return std::make_unique<cuda::CudaBackend>(device); }

}  // namespace competelm
