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
