// A kernel round trip that proves this build's device code runs on the GPU at hand
// (right architecture in the fat binary, driver new enough, memory reachable).
#include <cuda_runtime.h>

#include <cmath>
#include <string>
#include <vector>

#include "backend/cuda_probe.hpp"

namespace competelm {
namespace {

__global__ void saxpy_kernel(int n, float a, const float* x, float* y) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i] + y[i];
}

bool check(cudaError_t err, const char* what, std::string* message) {
  if (err == cudaSuccess) return true;
  *message = std::string(what) + ": " + cudaGetErrorString(err);
  return false;
}

}  // namespace

bool cuda_selftest(std::string* message) {
  const int n = 1 << 20;
  std::vector<float> x(n), y(n);
  for (int i = 0; i < n; ++i) {
    x[i] = float(i % 1000) * 0.5f;
    y[i] = float(i % 7);
  }
  float *dx = nullptr, *dy = nullptr;
  if (!check(cudaMalloc(&dx, n * sizeof(float)), "cudaMalloc", message)) return false;
  if (!check(cudaMalloc(&dy, n * sizeof(float)), "cudaMalloc", message)) return false;
  bool ok = check(cudaMemcpy(dx, x.data(), n * sizeof(float), cudaMemcpyHostToDevice), "copy x", message) &&
            check(cudaMemcpy(dy, y.data(), n * sizeof(float), cudaMemcpyHostToDevice), "copy y", message);
  if (ok) {
    saxpy_kernel<<<(n + 255) / 256, 256>>>(n, 2.0f, dx, dy);
    ok = check(cudaGetLastError(), "kernel launch", message) &&
         check(cudaMemcpy(y.data(), dy, n * sizeof(float), cudaMemcpyDeviceToHost), "copy back", message);
  }
  cudaFree(dx);
  cudaFree(dy);
  if (!ok) return false;
  for (int i = 0; i < n; ++i) {
    const float want = 2.0f * float(i % 1000) * 0.5f + float(i % 7);
    if (y[i] != want) {
      *message = "saxpy mismatch at " + std::to_string(i) + ": " + std::to_string(y[i]) + " != " + std::to_string(want);
      return false;
    }
  }
  *message = "saxpy over 2^20 floats on the GPU matches the host";
  return true;
}

}  // namespace competelm
