#pragma once
// Facts about the CUDA backend that host-only code (trainer, benchmark) reports: the GPU's
// peak fp32 throughput (the MFU denominator) and the backend's peak device memory. Defined
// in cuda/cuda_info.cu in CUDA builds; cuda_info_stub.cpp answers "none" otherwise.
#include <cstddef>
#include <string>

#include "backend/backend.hpp"

namespace competelm {

struct CudaPeak {
  double flops = 0.0;  // FLOP/s; 0 when unknown (no CUDA build, no such device)
  std::string detail;  // how it was computed, e.g. "132 SMs × 128 FP32 lanes × 2 × 1.98 GHz"
};

// Peak dense fp32 (CUDA-core FMA, no tensor cores) of GPU `device`:
// SMs × FP32 lanes per SM × 2 FLOP per FMA × the maximum SM clock.
CudaPeak cuda_fp32_peak(int device);

// Peak bytes a CUDA backend has held on its GPU (CudaBackend::peak_bytes); 0 for any other
// backend.
size_t cuda_peak_memory_bytes(const Backend& backend);

}  // namespace competelm
