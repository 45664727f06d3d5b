#pragma once
// Host <-> device copies through the emulated CUDA backend under test (shared by the emulator's
// test files).
#include <vector>

#include "cuda_backend.cuh"

namespace competelm::emutest {

struct Dev {
  cuda::CudaBackend& be;
  template <class T> T* up(const std::vector<T>& v) {
    T* p = static_cast<T*>(be.alloc(v.size() * sizeof(T)));
    be.upload(p, v.data(), v.size() * sizeof(T));
    return p;
  }
  template <class T> std::vector<T> down(const T* p, size_t n) {
    std::vector<T> v(n);
    be.download(v.data(), p, n * sizeof(T));
    return v;
  }
};

}  // namespace competelm::emutest
