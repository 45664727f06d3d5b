// Non-CUDA builds: make_cuda_backend explains why there is none.
#ifndef COMPETELM_HAVE_CUDA
#include "backend/cuda_factory.hpp"
#include "core/error.hpp"

namespace competelm {

std::unique_ptr<Backend> make_cuda_backend(int device) {
  fail_hint("install the CUDA toolkit (nvcc) and rebuild with scripts/build.sh, or set run.device: cpu",
            "run.device: cuda: this binary was built without CUDA (device {} requested)", device);
}

}  // namespace competelm
#endif
