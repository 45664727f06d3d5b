// Chooses the backend named by run.device.
#include <memory>
#include <string>

#include "backend/backend.hpp"
#include "backend/cpu/cpu_backend.hpp"
#include "backend/cuda_factory.hpp"
#include "backend/cuda_probe.hpp"
#include "core/error.hpp"

namespace competelm {

std::unique_ptr<Backend> make_backend(const std::string& device, int num_threads, int gpu) {
  if (device == "cpu") return std::make_unique<cpu::CpuBackend>(num_threads);
  if (device == "cuda") return make_cuda_backend(gpu);
  if (device == "auto") {
    // CUDA when this binary has it and a GPU is visible; otherwise the CPU.
    const CudaProbe probe = probe_cuda();
    if (probe.built && probe.devices > 0) return make_cuda_backend(gpu % probe.devices);
    return std::make_unique<cpu::CpuBackend>(num_threads);
  }
  fail_hint("valid values are: cpu, cuda, auto", "run.device: unknown device '{}' (expected cpu, cuda or auto)",
            device);
}

}  // namespace competelm
