// MoE token dispatch on the GPU (src/backend/cpu/moe_dispatch.cpp is the oracle): the stable
// grouping of the N·K (token, choice) slots by expert, the row gather into that order, and the
// gate-weighted combine / scatter back per token. Each output element is written by one
// thread (combine and scatter read a token's K rows in k order): no atomics on floats.
#include <algorithm>

#include "cuda_backend.cuh"
#include "cuda_common.cuh"
#include "moe_common.cuh"

namespace competelm::cuda {
namespace {
using namespace moe;

constexpr int kFlatThreads = 256;
constexpr unsigned kMaxFlatBlocks = 1u << 20;  // grid-stride beyond this

unsigned flat_blocks(size_t n) {
  const unsigned b = blocks_for(n, kFlatThreads);
  return b < kMaxFlatBlocks ? b : kMaxFlatBlocks;
}

// Stable counting sort of the R slots by expert, in one block of W warps (tile = the block):
//  1. per-expert counts (shared integer atomics: the counts do not depend on their order);
//  2. exclusive scan → offsets (serial, E is small) and next[e] = the expert's next free row;
//  3. the slots tile by tile in slot order: a slot's row is next[e] + the same-expert slots
//     of earlier warps of the tile (per-warp counts in shared memory) + those of lower lanes
//     of its warp (__match_any_sync); then next[e] advances by the tile's count. So the slots
//     of one expert get increasing rows in increasing slot order, exactly as the CPU's scan.
// Shared memory: next (E) + wcnt (W, E) ints.
__global__ void permute_kernel(int32_t* offsets, int32_t* row_of_slot, int32_t* slot_of_row, const int32_t* idx,
                               int R, int E) {
  extern __shared__ int32_t sh[];
  int32_t* next = sh;
  int32_t* wcnt = sh + E;
  const int tid = threadIdx.x, lane = tid % kWarp, warp = tid / kWarp, W = blockDim.x / kWarp;
  for (int e = tid; e < E; e += blockDim.x) next[e] = 0;
  __syncthreads();
  for (int s = tid; s < R; s += blockDim.x) atomicAdd(&next[idx[s]], 1);
  __syncthreads();
  if (tid == 0) {
    int32_t acc = 0;
    for (int e = 0; e < E; e++) {
      const int32_t c = next[e];
      next[e] = acc;
      offsets[e] = acc;
      acc += c;
    }
    offsets[E] = acc;
  }
  __syncthreads();
  for (int t0 = 0; t0 < R; t0 += blockDim.x) {  // uniform trip count: every thread runs every tile
    for (int i = tid; i < W * E; i += blockDim.x) wcnt[i] = 0;
    __syncthreads();
    const int s = t0 + tid;
    const bool live = s < R;
    const int e = live ? idx[s] : -1;  // dead lanes form their own group (e = −1) and write nothing
    const unsigned peers = __match_any_sync(0xffffffffu, e);
    const int rank = __popc(peers & ((1u << lane) - 1u));  // same-expert lanes below this one
    if (live && rank == 0) wcnt[warp * E + e] = __popc(peers);
    __syncthreads();
    if (live) {
      int32_t r = next[e] + rank;
      for (int w = 0; w < warp; w++) r += wcnt[w * E + e];
      row_of_slot[s] = r;
      slot_of_row[r] = s;
    }
    __syncthreads();  // every read of next for this tile is done
    for (int x = tid; x < E; x += blockDim.x) {
      int32_t c = 0;
      for (int w = 0; w < W; w++) c += wcnt[w * E + x];
      next[x] += c;
    }
    __syncthreads();  // next updated and wcnt read before the next tile clears it
  }
}

// out[r, c] = inp[src[r] / div, c], flat over R·C.
__global__ void gather_rows_kernel(float* out, const float* inp, const int32_t* src, int div, int C, size_t total) {
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t r = i / C;
    const int c = static_cast<int>(i % C);
    out[i] = inp[static_cast<size_t>(src[r] / div) * C + c];
  }
}

// out[n, c] (=) Σ_k gate[n,k]·rows[row(n,k), c], k in order (k = 0 initialises), flat over N·C.
__global__ void combine_forward_kernel(float* out, const float* rows, const float* gate, const int32_t* row_of_slot,
                                       int K, int C, size_t total) {
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t n = i / C;
    const int c = static_cast<int>(i % C);
    const float* g = gate + n * K;
    const int32_t* ros = row_of_slot + n * K;
    float o = g[0] * rows[static_cast<size_t>(ros[0]) * C + c];
    for (int k = 1; k < K; k++) o += g[k] * rows[static_cast<size_t>(ros[k]) * C + c];
    out[i] = o;
  }
}

// Warp per slot (n, k): drows[row] (=) gate·dout[n]; dgate (=) <dout[n], rows[row]> (float
// lane partials, then warp_sum's fixed tree).
__global__ void combine_backward_kernel(float* drows, float* dgate, const float* dout, const float* rows,
                                        const float* gate, const int32_t* row_of_slot, int NK, int K, int C) {
  const int slot = warp_row();
  if (slot >= NK) return;
  const int lane = lane_id();
  const size_t n = static_cast<size_t>(slot / K);
  const size_t r = static_cast<size_t>(row_of_slot[slot]) * C;
  const float w = gate[slot];
  const float* d = dout + n * C;
  const float* x = rows + r;
  float* dx = drows + r;
  float dot = 0.0f;
  for (int c = lane; c < C; c += kWarp) {
    dot += d[c] * x[c];
    dx[c] = w * d[c];
  }
  dot = warp_sum(dot);
  if (lane == 0) dgate[slot] = dot;
}

// dinp[n, c] += Σ_k drows[row(n,k), c], k in order, flat over N·C.
__global__ void scatter_rows_kernel(float* dinp, const float* drows, const int32_t* row_of_slot, int K, int C,
                                    size_t total) {
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t n = i / C;
    const int c = static_cast<int>(i % C);
    const int32_t* ros = row_of_slot + n * K;
    float v = dinp[i];
    for (int k = 0; k < K; k++) v += drows[static_cast<size_t>(ros[k]) * C + c];
    dinp[i] = v;
  }
}

}  // namespace

void CudaBackend::moe_permute(int32_t* offsets, int32_t* row_of_slot, int32_t* slot_of_row, const int32_t* idx,
                              int N, int E, int K) {
  const int R = N * K;
  if (E < 1) fail("cuda moe_permute: E = {} experts", E);
  // W warps with (W + 1)·E ints of shared memory within the default 48 KiB.
  constexpr int kSmemInts = 48 * 1024 / 4;
  const int W = std::min(32, kSmemInts / E - 1);
  if (W < 1) fail("cuda moe_permute: E = {} experts exceed the shared-memory table (at most {})", E, kSmemInts / 2);
  const size_t smem = sizeof(int32_t) * static_cast<size_t>(W + 1) * E;
  permute_kernel<<<1, W * kWarp, smem, stream()>>>(offsets, row_of_slot, slot_of_row, idx, R, E);
  CUDA_CHECK_LAUNCH();
}

void CudaBackend::moe_gather_rows(float* out, const float* inp, const int32_t* src, int div, int R, int C) {
  const size_t total = static_cast<size_t>(R) * C;
  if (total == 0) return;
  gather_rows_kernel<<<flat_blocks(total), kFlatThreads, 0, stream()>>>(out, inp, src, div, C, total);
  CUDA_CHECK_LAUNCH();
}

void CudaBackend::moe_combine_forward(float* out, const float* rows, const float* gate, const int32_t* row_of_slot,
                                      int N, int K, int C) {
  const size_t total = static_cast<size_t>(N) * C;
  if (total == 0 || K < 1) return;
  combine_forward_kernel<<<flat_blocks(total), kFlatThreads, 0, stream()>>>(out, rows, gate, row_of_slot, K, C,
                                                                            total);
  CUDA_CHECK_LAUNCH();
}

void CudaBackend::moe_combine_backward(float* drows, float* dgate, const float* dout, const float* rows,
                                       const float* gate, const int32_t* row_of_slot, int N, int K, int C) {
  const int NK = N * K;
  if (NK <= 0) return;
  combine_backward_kernel<<<row_blocks(NK), kRowThreads, 0, stream()>>>(drows, dgate, dout, rows, gate, row_of_slot,
                                                                         NK, K, C);
  CUDA_CHECK_LAUNCH();
}

void CudaBackend::moe_scatter_rows(float* dinp, const float* drows, const int32_t* row_of_slot, int N, int K,
                                   int C) {
  const size_t total = static_cast<size_t>(N) * C;
  if (total == 0) return;
  scatter_rows_kernel<<<flat_blocks(total), kFlatThreads, 0, stream()>>>(dinp, drows, row_of_slot, K, C, total);
  CUDA_CHECK_LAUNCH();
}

}  // namespace competelm::cuda
