// The GPU's peak fp32 throughput and the backend's peak memory, for host-only reporting
// (src/backend/cuda_info.hpp).
#include <cuda_runtime.h>

#include <string>

#include "backend/cuda_info.hpp"
#include "cuda_backend.cuh"
#include <fmt/format.h>

namespace competelm {
namespace {

// FP32 FMA lanes per SM by compute capability (CUDA C Programming Guide, arithmetic
// instruction throughput): 64 on sm_60/70/75/80 (V100, T4, A100), 128 on sm_61 and on
// sm_86/87/89/90 and later (RTX 30xx/40xx, H100/H200, Blackwell).
int fp32_lanes_per_sm(int major, int minor) {
  if (major == 6) return minor == 0 ? 64 : 128;
  if (major == 7) return 64;
  if (major == 8) return minor == 0 ? 64 : 128;
  return 128;
}

// Dense bf16 tensor-core FLOP per clock per SM with fp32 accumulation (datasheet peak /
// (SMs × boost clock)): 4096 on sm_90 and later (H100/H200: 989 TFLOP/s at 1.83 GHz), 2048 on
// sm_80 (A100: 312 TFLOP/s at 1.41 GHz); other parts (sm_86/89 workstation and consumer
// cards, whose fp32-accumulate rate varies by SKU) are counted at 1024, a lower bound.
int bf16_flops_per_clock_per_sm(int major, int minor) {
  if (major >= 9) return 4096;
  if (major == 8 && minor == 0) return 2048;
  return 1024;
}

}  // namespace

CudaPeak cuda_peak(int device, Precision precision) {
  CudaPeak peak;
  int sms = 0, khz = 0, major = 0, minor = 0;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess) {
    (void)cudaGetLastError();
    peak.detail = "cuda: device " + std::to_string(device) + " not available";
    return peak;
  }
  if (precision == Precision::fp32) {
    const int lanes = fp32_lanes_per_sm(major, minor);
    peak.flops = double(sms) * lanes * 2.0 * khz * 1e3;
    peak.detail = fmt::format("fp32 CUDA-core peak of sm_{}{}: {} SMs × {} FP32 lanes × 2 FLOP/FMA × {:.3f} GHz = "
                              "{:.1f} TFLOP/s",
                              major, minor, sms, lanes, khz / 1e6, peak.flops / 1e12);
    return peak;
  }
  const int per_clock = bf16_flops_per_clock_per_sm(major, minor) / (precision == Precision::tf32 ? 2 : 1);
  peak.flops = double(sms) * per_clock * khz * 1e3;
  peak.detail = fmt::format("dense {} tensor-core peak of sm_{}{}: {} SMs × {} FLOP/clock × {:.3f} GHz = {:.1f} TFLOP/s",
                            precision_name(precision), major, minor, sms, per_clock, khz / 1e6, peak.flops / 1e12);
  return peak;
}

size_t cuda_peak_memory_bytes(const Backend& backend) {
  const auto* cuda = dynamic_cast<const cuda::CudaBackend*>(&backend);
  return cuda ? cuda->peak_bytes() : 0;
}

}  // namespace competelm
