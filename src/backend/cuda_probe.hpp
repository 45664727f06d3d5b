#pragma once
// What the CUDA side of this build can see. Compiled from cuda/device_probe.cu when nvcc
// was found at configure time; otherwise reports "not built".
#include <string>

namespace competelm {

struct CudaProbe {
  bool built = false;      // the binary contains CUDA code
  int devices = 0;         // GPUs visible to this process
  std::string detail;      // driver / runtime message or device names
};

CudaProbe probe_cuda();

}  // namespace competelm

namespace competelm {
// Runs a small kernel on device 0 and checks its result on the host (CUDA builds only).
bool cuda_selftest(std::string* message);
}  // namespace competelm
