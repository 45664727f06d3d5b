// Chooses the backend named by run.device.
#include <memory>
#include <string>

#include "backend/backend.hpp"
#include "backend/cpu/cpu_backend.hpp"
#include "backend/cuda_factory.hpp"
#include "backend/cuda_probe.hpp"
#include "core/error.hpp"

namespace competelm {

// True since the GPU tests (every kernel, the whole model, training, determinism) and
// compute-sanitizer passed on an H100 (2026-11-23, docs/cuda.md): `auto` may pick CUDA.
constexpr bool kCudaBackendVerified = true;

std::unique_ptr<Backend> make_backend(const std::string& device, int num_threads, int gpu) {
  if (device == "cpu") return std::make_unique<cpu::CpuBackend>(num_threads);
  if (device == "cuda") {
    const CudaProbe probe = probe_cuda();
    if (probe.built && probe.devices == 0)
      fail_hint("set run.device: cpu (or auto, which falls back to the CPU)",
                "run.device: cuda: no GPU visible to this process ({})", probe.detail);
    // A rank takes GPU local_rank % devices (a build without CUDA explains itself there).
    return make_cuda_backend(probe.devices > 0 ? gpu % probe.devices : gpu);
  }
  if (device == "auto") {
    // CUDA when this binary has it and a GPU is visible (and the CUDA backend has passed its
    // GPU tests on real hardware: kCudaBackendVerified); otherwise the CPU.
    const CudaProbe probe = probe_cuda();
    if (kCudaBackendVerified && probe.built && probe.devices > 0) return make_cuda_backend(gpu % probe.devices);
    return std::make_unique<cpu::CpuBackend>(num_threads);
  }
  fail_hint("valid values are: cpu, cuda, auto", "run.device: unknown device '{}' (expected cpu, cuda or auto)",
            device);
}

}  // namespace competelm
