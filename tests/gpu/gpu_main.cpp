// The GPU test binary: every tests/gpu/test_*.cpp (Catch2), comparing the CUDA backend with
// the CPU oracle. Where there is no CUDA build or no GPU it prints why and exits 77, which
// ctest reports as "Skipped" (never as passed).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdio>
#include <string>

#include "backend/cuda_probe.hpp"

int main(int argc, char** argv) {
  const competelm::CudaProbe probe = competelm::probe_cuda();
  bool listing = false;  // test discovery must work without a GPU
  for (int i = 1; i < argc; ++i) listing |= std::string(argv[i]).rfind("--list", 0) == 0;
  if (!listing && (!probe.built || probe.devices == 0)) {
    std::printf("SKIPPED: %s\n", !probe.built ? "this build has no CUDA (nvcc not found at configure time)"
                                              : ("no GPU visible: " + probe.detail).c_str());
    return 77;
  }
  if (!listing) std::printf("GPU: %s\n", probe.detail.c_str());
  return Catch::Session().run(argc, argv);
}
