// Chooses the backend named by run.device.
#include <memory>
#include <string>

#include "backend/backend.hpp"
#include "backend/cpu/cpu_backend.hpp"
#include "core/error.hpp"

namespace competelm {

std::unique_ptr<Backend> make_backend(const std::string& device, int num_threads) {
  // "auto" means cuda when that backend is built and a GPU is present; until the CUDA
  // backend exists it always resolves to the CPU.
  if (device == "cpu" || device == "auto") return std::make_unique<cpu::CpuBackend>(num_threads);
  if (device == "cuda") {
#ifdef COMPETELM_HAVE_CUDA
    fail_hint("set run.device: cpu (or auto) until then",
              "run.device: cuda: not built (this build compiles CUDA code, but the CUDA backend "
              "itself is the next milestone)");
#else
    fail_hint("set run.device: cpu (or auto), or rebuild with nvcc available and -DCOMPETELM_CUDA=ON "
              "once the CUDA backend exists",
              "run.device: cuda: not built (no CUDA backend in this binary)");
#endif
  }
  fail_hint("valid values are: cpu, cuda, auto", "run.device: unknown device '{}' (expected cpu, cuda or auto)",
            device);
}

}  // namespace competelm
