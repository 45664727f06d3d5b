#pragma once
// The CUDA backend's entry point, callable from host-only code. Defined in cuda/ when the
// build has nvcc; otherwise a fallback that explains how to get it (cuda_factory_stub.cpp).
#include <memory>

#include "backend/backend.hpp"

namespace competelm {

// The CUDA backend on GPU `device` (cudaSetDevice). Throws Error when the build has no CUDA
// or the device cannot be used (message names the device and the CUDA error).
std::unique_ptr<Backend> make_cuda_backend(int device);

}  // namespace competelm
