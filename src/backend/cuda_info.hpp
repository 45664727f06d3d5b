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

// Peak dense throughput of GPU `device` for the backend's precision (the MFU denominator):
//   fp32: SMs × FP32 lanes per SM × 2 FLOP per FMA × the maximum SM clock (CUDA cores);
//   bf16: SMs × dense tensor-core FLOP per clock per SM (fp32 accumulation) × the clock;
//   tf32: half the bf16 rate.
CudaPeak cuda_peak(int device, Precision precision);

// Peak bytes a CUDA backend has held on its GPU (CudaBackend::peak_bytes); 0 for any other
// backend.
size_t cuda_peak_memory_bytes(const Backend& backend);

}  // namespace competelm
