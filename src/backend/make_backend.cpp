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

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::fp32: return "fp32";
    case Precision::tf32: return "tf32";
    case Precision::bf16: return "bf16";
  }
  return "?";
}

void Backend::set_precision(Precision p) {
  if (p != Precision::fp32)
    fail_hint("set run.precision: fp32 (or auto), or run.device: cuda",
              "run.precision: {} needs the CUDA backend; the {} backend computes in fp32 only", precision_name(p),
              name());
}

void apply_precision(Backend& backend, const std::string& precision) {
  if (precision == "auto") {
    backend.set_precision(backend.name() == "cuda" ? Precision::bf16 : Precision::fp32);
    return;
  }
  for (Precision p : {Precision::fp32, Precision::tf32, Precision::bf16})
    if (precision == precision_name(p)) {
      backend.set_precision(p);
      return;
    }
  fail_hint("valid values are: auto, fp32, tf32, bf16", "run.precision: unknown value '{}'", precision);
}

}  // namespace competelm
