#pragma once
// Helpers shared by the MoE op files (moe_routing.cu, moe_losses.cu, moe_rows.cu,
// moe_compete.cu). Row ops over (N,E) run one warp per row: lanes take the columns
// e = lane, lane + 32, ... and reduce with the fixed shuffle tree of warp_sum / warp_max, so
// results are deterministic (no atomics) though not in the CPU's serial summation order.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "cuda_common.cuh"

namespace competelm::cuda::moe {

constexpr int kRowWarps = 8;                    // rows (warps) per block of a warp-per-row kernel
constexpr int kRowThreads = kRowWarps * kWarp;  // 256

inline unsigned row_blocks(int rows) { return blocks_for(static_cast<size_t>(rows), kRowWarps); }

// The row a warp of a warp-per-row kernel owns (may be ≥ N: the warp then returns).
__device__ inline int warp_row() { return blockIdx.x * kRowWarps + threadIdx.x / kWarp; }
__device__ inline int lane_id() { return threadIdx.x % kWarp; }

// The CPU's sigmoid (src/backend/cpu/moe_routing.cpp), both branches, so no exp overflows.
__device__ inline float sigmoidf_stable(float x) {
  return x >= 0 ? 1.0f / (1.0f + expf(-x)) : expf(x) / (1.0f + expf(x));
}

// The CPU's softmax_row, serially on one thread (K values): float max, exps summed in
// double in index order, one float reciprocal. out may alias in.
__device__ inline void softmax_serial(float* out, const float* in, int n) {
  float mx = in[0];
  for (int i = 1; i < n; i++) mx = fmaxf(mx, in[i]);
  double sum = 0.0;
  for (int i = 0; i < n; i++) {
    out[i] = expf(in[i] - mx);
    sum += out[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int i = 0; i < n; i++) out[i] *= inv;
}

}  // namespace competelm::cuda::moe
