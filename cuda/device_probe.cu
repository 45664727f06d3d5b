// Runtime query of the GPUs this process can use (compiled only when nvcc is found).
#include <cuda_runtime.h>

#include <string>

#include "backend/cuda_probe.hpp"

namespace competelm {

CudaProbe probe_cuda() {
  CudaProbe p;
  p.built = true;
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    p.detail = cudaGetErrorString(err);
    return p;
  }
  p.devices = n;
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) == cudaSuccess)
      p.detail += (i ? ", " : "") + std::string(prop.name) + " (sm_" + std::to_string(prop.major) +
                  std::to_string(prop.minor) + ")";
  }
  return p;
}

}  // namespace competelm
