// GPU smoke test: the CUDA code of this build runs on the GPU present. Exits 77 — reported
// by ctest as SKIPPED, not passed — when the build has no CUDA or the machine has no GPU.
#include <cstdio>
#include <string>

#include "backend/cuda_probe.hpp"

int main() {
  const competelm::CudaProbe probe = competelm::probe_cuda();
  if (!probe.built || probe.devices == 0) {
    std::printf("SKIPPED: %s\n", probe.built ? ("no GPU visible: " + probe.detail).c_str() : probe.detail.c_str());
    return 77;
  }
  std::printf("GPUs: %d (%s)\n", probe.devices, probe.detail.c_str());
#ifdef COMPETELM_HAVE_CUDA
  std::string message;
  const bool ok = competelm::cuda_selftest(&message);
  std::printf("%s: %s\n", ok ? "PASS" : "FAIL", message.c_str());
  return ok ? 0 : 1;
#else
  return 77;
#endif
}
