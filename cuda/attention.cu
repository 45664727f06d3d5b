// Causal multi-head self-attention, flash style (FlashAttention-2 structure): no T×T tensor
// is ever stored. The forward keeps per query row only the softmax log-sum-exp
// L = m + log(l) (the `att` state, (B,NH,T)); the backward recomputes P = exp(S − L) tile by
// tile. Semantics match the CPU oracle (src/backend/cpu/attention.cpp): S = q·kᵀ/sqrt(hs),
// causal (key s ≤ query t), out = softmax(S)·v overwritten, dqkv accumulated (+=).
//
// Layout: qkv (B,T,3C) holds [q | k | v] per token; head h uses columns h·hs … (h+1)·hs of
// each third. out / dout (B,T,C) hold the heads concatenated.
//
// This first version is plain fp32 CUDA cores, written to be obviously correct:
//   * one warp per "row" of the block (a query row in the forward / dQ kernels, a key row in
//     the dK/dV kernel), kRows rows per block;
//   * the loop runs over tiles of 32 "columns" (keys, or queries for dK/dV) staged in shared
//     memory, one column per lane: each lane computes a full hs-long dot product for its
//     column (tile row stride hs+1: conflict-free), then the warp accumulates
//     Σ_j p_j · v_j with p_j broadcast by __shfl_sync, lane owning output columns
//     d = lane + 32·i (hs = 16 leaves lanes 16…31 idle there);
//   * online softmax (running max m, running sum l) in the forward, in registers;
//   * every reduction is a fixed-order warp shuffle tree or a fixed-order loop: no atomics,
//     bit-identical run to run; each output element is written by exactly one thread.
//
// Backward (three launches, no atomics):
//   1. delta: D[t] = rowsum(dO ∘ O) from the forward's out (attention_delta, attention_prep.cu)
//      into the backward scratch (B,NH,T), shared by every path;
//   2. dK/dV: one block per tile of kRows keys, looping over query tiles from the diagonal to
//      T: dV_s += Σ_t P_ts dO_t, dK_s += scale · Σ_t dS_ts q_t, dS = P ∘ (dO·vᵀ − D);
//   3. dQ: one block per tile of kRows queries, looping over key tiles up to the diagonal:
//      dQ_t += scale · Σ_s dS_ts k_s.
//
// Plan for the tensor-core version (later, bf16/TF32): per (b,h) the forward costs
// 2·T²·hs FLOPs (halved by causality) for S and as much for P·V; with Br = Bc = 64 and
// hs = 64, a block reads Q once (16 KiB) and streams K,V tiles (2 × 16 KiB each), i.e.
// ≈ 4·64·64·64 FLOPs per 32 KiB of K/V ≈ 32 FLOP/byte from L2, enough to keep mma.sync
// (m16n8k16) busy when K/V tiles are double-buffered with cp.async; S and P stay in
// registers (accumulator fragments re-used as A operands), the row max/sum reduced across
// the 4 lanes sharing a row. The backward does 2.5× the forward's FLOPs (5 GEMMs) with the
// same tiling, dK/dV accumulated in registers per key tile, dQ in a separate pass as here.
#include <cmath>

#include "attention_mma.cuh"
#include "attention_prep.cuh"
#include "attention_tc.cuh"
#include "cuda_backend.cuh"
#include "cuda_common.cuh"

namespace competelm::cuda {
namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kTile = kWarp;  // columns (keys, or queries in dK/dV) per inner tile: one per lane

template <int HS>
struct Geometry {
  static_assert(HS == 8 || HS == 16 || HS == 32 || HS == 64 || HS == 128, "head size must be 8, 16, 32, 64 or 128");
  // Rows (one per warp) per block: fewer for hs = 128 so that static shared memory fits 48 KiB.
  static constexpr int kRows = HS >= 128 ? 8 : 16;
  static constexpr int kThreads = kRows * kWarp;
  static constexpr int kPad = HS + 1;                    // row stride of lane-indexed tiles
  static constexpr int kPer = (HS + kWarp - 1) / kWarp;  // output columns per lane: d = lane + 32·i
  // Shared memory per kernel (bytes): two lane-indexed tiles + two per-warp row sets (+ L, D).
  static constexpr size_t kSmem =
      sizeof(float) * (2 * kTile * kPad + 2 * kRows * HS + 2 * kTile);
  static_assert(kSmem <= 48 * 1024, "static shared memory must fit 48 KiB");
};

// rows r0 … r0+n−1 (stride `stride` floats, hs wide) into dst[n][pitch]; zero beyond T.
template <int HS>
__device__ inline void load_rows(float* dst, int pitch, const float* src, size_t stride, int r0, int n, int T) {
  for (int i = threadIdx.x; i < n * HS; i += blockDim.x) {
    const int r = i / HS, d = i % HS, row = r0 + r;
    dst[r * pitch + d] = row < T ? src[static_cast<size_t>(row) * stride + d] : 0.0f;
  }
}

// Forward: out = softmax(S)·v and lse = L.
// Grid: (#query tiles)·B·NH blocks, kThreads threads; the last query tiles (most work) first.
template <int HS>
__global__ void __launch_bounds__(Geometry<HS>::kThreads)
    attention_forward_kernel(float* out, float* lse, const float* qkv, int NH, int T, int C, float scale) {
  using G = Geometry<HS>;
  __shared__ float q_s[G::kRows][HS];       // this block's query rows, one per warp
  __shared__ float k_s[kTile][G::kPad];     // a tile of keys, one per lane
  __shared__ float v_s[kTile][G::kPad];

  const int tiles = (T + G::kRows - 1) / G::kRows;
  const int BH = static_cast<int>(gridDim.x) / tiles;
  const int bh = static_cast<int>(blockIdx.x) % BH;
  const int tile = tiles - 1 - static_cast<int>(blockIdx.x) / BH;
  const int b = bh / NH, h = bh % NH;
  const int warp = static_cast<int>(threadIdx.x) / kWarp, lane = static_cast<int>(threadIdx.x) % kWarp;
  const size_t C3 = 3 * static_cast<size_t>(C);
  const float* q = qkv + head_base(b, h, T, C, HS);  // (T,hs), stride 3C
  const float* k = q + C;
  const float* v = q + 2 * static_cast<size_t>(C);

  const int q0 = tile * G::kRows;
  const int t = q0 + warp;  // this warp's query row
  const bool active = t < T;
  const int last = min(T, q0 + G::kRows) - 1;  // the block's last query row: keys 0 … last

  load_rows<HS>(&q_s[0][0], HS, q, C3, q0, G::kRows, T);

  float m = -INFINITY, l = 0.0f;
  float o[G::kPer];
#pragma unroll
  for (int i = 0; i < G::kPer; ++i) o[i] = 0.0f;

  for (int k0 = 0; k0 <= last; k0 += kTile) {
    __syncthreads();  // the previous tile is consumed (first pass: q_s is written)
    load_rows<HS>(&k_s[0][0], G::kPad, k, C3, k0, kTile, T);
    load_rows<HS>(&v_s[0][0], G::kPad, v, C3, k0, kTile, T);
    __syncthreads();
    if (active && k0 <= t) {  // warp-uniform; key k0 ≤ t makes the tile's max finite
      const int s = k0 + lane;
      float dot = 0.0f;
#pragma unroll 16
      for (int d = 0; d < HS; ++d) dot += q_s[warp][d] * k_s[lane][d];
      const float x = s <= t ? dot * scale : -INFINITY;
      const float m_new = fmaxf(m, warp_max(x));
      const float p = s <= t ? expf(x - m_new) : 0.0f;
      const float alpha = expf(m - m_new);  // 0 on the first tile (m = −inf)
      l = alpha * l + warp_sum(p);
#pragma unroll
      for (int i = 0; i < G::kPer; ++i) o[i] *= alpha;
      for (int j = 0; j < kTile; ++j) {
        const float pj = __shfl_sync(kFullMask, p, j);
#pragma unroll
        for (int i = 0; i < G::kPer; ++i) {
          const int d = lane + kWarp * i;
          if (d < HS) o[i] += pj * v_s[j][d];
        }
      }
      m = m_new;
    }
  }
  if (!active) return;  // after the last __syncthreads
  const float inv = 1.0f / l;
  const size_t row = (static_cast<size_t>(b) * T + t) * C + static_cast<size_t>(h) * HS;  // (B,T,C)
#pragma unroll
  for (int i = 0; i < G::kPer; ++i) {
    const int d = lane + kWarp * i;
    if (d < HS) out[row + d] = o[i] * inv;
  }
  if (lane == 0) lse[static_cast<size_t>(bh) * T + t] = m + logf(l);
}

// dK, dV += for one tile of kRows keys (one per warp), looping over query tiles (one query per
// lane) from the tile holding the block's first key to T.
// Grid: (#key tiles)·B·NH blocks, kThreads threads; the first key tiles (most work) first.
template <int HS>
__global__ void __launch_bounds__(Geometry<HS>::kThreads)
    attention_dkdv_kernel(float* dqkv, const float* dout, const float* qkv, const float* lse,
                          const float* delta, int NH, int T, int C, float scale) {
  using G = Geometry<HS>;
  __shared__ float k_s[G::kRows][HS];      // this block's key rows, one per warp
  __shared__ float v_s[G::kRows][HS];
  __shared__ float q_s[kTile][G::kPad];    // a tile of queries, one per lane
  __shared__ float do_s[kTile][G::kPad];
  __shared__ float l_s[kTile], d_s[kTile];

  const int tiles = (T + G::kRows - 1) / G::kRows;
  const int BH = static_cast<int>(gridDim.x) / tiles;
  const int bh = static_cast<int>(blockIdx.x) % BH;
  const int tile = static_cast<int>(blockIdx.x) / BH;
  const int b = bh / NH, h = bh % NH;
  const int warp = static_cast<int>(threadIdx.x) / kWarp, lane = static_cast<int>(threadIdx.x) % kWarp;
  const size_t C3 = 3 * static_cast<size_t>(C);
  const size_t base = head_base(b, h, T, C, HS);
  const float* q = qkv + base;  // (T,hs), stride 3C
  const float* k = q + C;
  const float* v = q + 2 * static_cast<size_t>(C);
  const float* dO = dout + static_cast<size_t>(b) * T * C + static_cast<size_t>(h) * HS;  // (T,hs), stride C
  const float* L = lse + static_cast<size_t>(bh) * T;
  const float* D = delta + static_cast<size_t>(bh) * T;

  const int s0 = tile * G::kRows;
  const int s = s0 + warp;  // this warp's key row
  const bool active = s < T;

  load_rows<HS>(&k_s[0][0], HS, k, C3, s0, G::kRows, T);
  load_rows<HS>(&v_s[0][0], HS, v, C3, s0, G::kRows, T);

  float dk[G::kPer], dv[G::kPer];
#pragma unroll
  for (int i = 0; i < G::kPer; ++i) dk[i] = dv[i] = 0.0f;

  for (int t0 = (s0 / kTile) * kTile; t0 < T; t0 += kTile) {
    __syncthreads();  // the previous tile is consumed (first pass: k_s, v_s are written)
    load_rows<HS>(&q_s[0][0], G::kPad, q, C3, t0, kTile, T);
    load_rows<HS>(&do_s[0][0], G::kPad, dO, static_cast<size_t>(C), t0, kTile, T);
    if (threadIdx.x < kTile) {
      const int t = t0 + static_cast<int>(threadIdx.x);
      l_s[threadIdx.x] = t < T ? L[t] : 0.0f;
      d_s[threadIdx.x] = t < T ? D[t] : 0.0f;
    }
    __syncthreads();
    if (active && t0 + kTile - 1 >= s) {  // warp-uniform: some query of the tile sees key s
      const int t = t0 + lane;
      float qk = 0.0f, dp = 0.0f;
#pragma unroll 16
      for (int d = 0; d < HS; ++d) {
        qk += q_s[lane][d] * k_s[warp][d];
        dp += do_s[lane][d] * v_s[warp][d];
      }
      const bool seen = t >= s && t < T;
      const float p = seen ? expf(qk * scale - l_s[lane]) : 0.0f;
      const float ds = p * (dp - d_s[lane]);
      for (int j = 0; j < kTile; ++j) {
        const float pj = __shfl_sync(kFullMask, p, j);
        const float dsj = __shfl_sync(kFullMask, ds, j);
#pragma unroll
        for (int i = 0; i < G::kPer; ++i) {
          const int d = lane + kWarp * i;
          if (d < HS) {
            dv[i] += pj * do_s[j][d];
            dk[i] += dsj * q_s[j][d];
          }
        }
      }
    }
  }
  if (!active) return;
  float* dk_row = dqkv + base + C + static_cast<size_t>(s) * C3;
  float* dv_row = dk_row + C;
#pragma unroll
  for (int i = 0; i < G::kPer; ++i) {
    const int d = lane + kWarp * i;
    if (d < HS) {
      dk_row[d] += scale * dk[i];
      dv_row[d] += dv[i];
    }
  }
}

// dQ += for one tile of kRows queries (one per warp), looping over key tiles (one key per lane)
// up to the diagonal. Grid: (#query tiles)·B·NH blocks, kThreads threads; last tiles first.
template <int HS>
__global__ void __launch_bounds__(Geometry<HS>::kThreads)
    attention_dq_kernel(float* dqkv, const float* dout, const float* qkv, const float* lse, const float* delta,
                        int NH, int T, int C, float scale) {
  using G = Geometry<HS>;
  __shared__ float q_s[G::kRows][HS];      // this block's query rows, one per warp
  __shared__ float do_s[G::kRows][HS];
  __shared__ float k_s[kTile][G::kPad];    // a tile of keys, one per lane
  __shared__ float v_s[kTile][G::kPad];

  const int tiles = (T + G::kRows - 1) / G::kRows;
  const int BH = static_cast<int>(gridDim.x) / tiles;
  const int bh = static_cast<int>(blockIdx.x) % BH;
  const int tile = tiles - 1 - static_cast<int>(blockIdx.x) / BH;
  const int b = bh / NH, h = bh % NH;
  const int warp = static_cast<int>(threadIdx.x) / kWarp, lane = static_cast<int>(threadIdx.x) % kWarp;
  const size_t C3 = 3 * static_cast<size_t>(C);
  const size_t base = head_base(b, h, T, C, HS);
  const float* q = qkv + base;  // (T,hs), stride 3C
  const float* k = q + C;
  const float* v = q + 2 * static_cast<size_t>(C);
  const float* dO = dout + static_cast<size_t>(b) * T * C + static_cast<size_t>(h) * HS;  // (T,hs), stride C

  const int q0 = tile * G::kRows;
  const int t = q0 + warp;  // this warp's query row
  const bool active = t < T;
  const int last = min(T, q0 + G::kRows) - 1;  // the block's last query row: keys 0 … last
  const float Lt = active ? lse[static_cast<size_t>(bh) * T + t] : 0.0f;
  const float Dt = active ? delta[static_cast<size_t>(bh) * T + t] : 0.0f;

  load_rows<HS>(&q_s[0][0], HS, q, C3, q0, G::kRows, T);
  load_rows<HS>(&do_s[0][0], HS, dO, static_cast<size_t>(C), q0, G::kRows, T);

  float dq[G::kPer];
#pragma unroll
  for (int i = 0; i < G::kPer; ++i) dq[i] = 0.0f;

  for (int k0 = 0; k0 <= last; k0 += kTile) {
    __syncthreads();  // the previous tile is consumed (first pass: q_s, do_s are written)
    load_rows<HS>(&k_s[0][0], G::kPad, k, C3, k0, kTile, T);
    load_rows<HS>(&v_s[0][0], G::kPad, v, C3, k0, kTile, T);
    __syncthreads();
    if (active && k0 <= t) {  // warp-uniform
      const int s = k0 + lane;
      float qk = 0.0f, dp = 0.0f;
#pragma unroll 16
      for (int d = 0; d < HS; ++d) {
        qk += q_s[warp][d] * k_s[lane][d];
        dp += do_s[warp][d] * v_s[lane][d];
      }
      const float p = s <= t ? expf(qk * scale - Lt) : 0.0f;
      const float ds = p * (dp - Dt);
      for (int j = 0; j < kTile; ++j) {
        const float dsj = __shfl_sync(kFullMask, ds, j);
#pragma unroll
        for (int i = 0; i < G::kPer; ++i) {
          const int d = lane + kWarp * i;
          if (d < HS) dq[i] += dsj * k_s[j][d];
        }
      }
    }
  }
  if (!active) return;
  float* dq_row = dqkv + base + static_cast<size_t>(t) * C3;
#pragma unroll
  for (int i = 0; i < G::kPer; ++i) {
    const int d = lane + kWarp * i;
    if (d < HS) dq_row[d] += scale * dq[i];
  }
}

unsigned grid_for(int B, int NH, int T, int rows) {
  const size_t blocks = static_cast<size_t>(B) * NH * ((static_cast<size_t>(T) + rows - 1) / rows);
  if (blocks > 0x7fffffffu) fail("cuda attention: B·NH·ceil(T/{}) = {} blocks is too many", rows, blocks);
  return static_cast<unsigned>(blocks);
}

template <int HS>
void forward_hs(cudaStream_t st, float* out, float* lse, const float* qkv, int B, int T, int C, int NH) {
  using G = Geometry<HS>;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  attention_forward_kernel<HS><<<grid_for(B, NH, T, G::kRows), G::kThreads, 0, st>>>(out, lse, qkv, NH, T, C, scale);
  CUDA_CHECK_LAUNCH();
}

template <int HS>
void backward_hs(cudaStream_t st, float* dqkv, const float* delta, const float* dout, const float* qkv, const float* lse,
                 int B, int T, int C, int NH) {
  using G = Geometry<HS>;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  const unsigned grid = grid_for(B, NH, T, G::kRows);
  attention_dkdv_kernel<HS><<<grid, G::kThreads, 0, st>>>(dqkv, dout, qkv, lse, delta, NH, T, C, scale);
  CUDA_CHECK_LAUNCH();
  attention_dq_kernel<HS><<<grid, G::kThreads, 0, st>>>(dqkv, dout, qkv, lse, delta, NH, T, C, scale);
  CUDA_CHECK_LAUNCH();
}

// Head size from (C, NH), or an Error naming what is supported.
int head_size(int B, int T, int C, int NH) {
  if (B < 0 || T < 0 || NH <= 0 || C <= 0 || C % NH != 0)
    fail("cuda attention: invalid shape B={} T={} C={} NH={} (C must be a positive multiple of NH)", B, T, C, NH);
  const int hs = C / NH;
  if (hs != 8 && hs != 16 && hs != 32 && hs != 64 && hs != 128)
    fail("cuda attention: head size C/NH = {}/{} = {} is not supported (8, 16, 32, 64 or 128)", C, NH, hs);
  return hs;
}

}  // namespace

bool attention_mma_requested() { return gate_enabled(kAttentionMmaVerified, "COMPETELM_ATTENTION_MMA"); }

size_t CudaBackend::attention_state_elements(int B, int NH, int T) const {
  return static_cast<size_t>(B) * NH * T;  // L = log-sum-exp of each query row's scores
}

size_t CudaBackend::attention_scratch_elements(int B, int NH, int T) const {
  return static_cast<size_t>(B) * NH * T;  // D = rowsum(dO ∘ O) of each query row
}

void CudaBackend::attention_forward(float* out, float* att, const float* qkv, int B, int T, int C, int NH) {
  const int hs = head_size(B, T, C, NH);
  if (B == 0 || T == 0) return;
  if (precision_ == Precision::bf16 && attention_mma_enabled_ && attention_mma_supported(hs)) {  // attention_mma.cu
    attention_mma_forward(stream(), out, att, qkv, B, T, C, NH, scratch(attention_heads_bytes(B, T, C), 1));
    return;
  }
  if (precision_ == Precision::bf16 && attention_tc_supported(hs)) {  // bf16 tensor cores (attention_tc.cu)
    // Workspace: scratch slot 1 (otherwise GEMM operand copies, never live during attention).
    attention_tc_forward(stream(), out, att, qkv, B, T, C, NH, scratch(attention_tc_workspace_bytes(B, T, C), 1));
    return;
  }
  switch (hs) {
    case 8: forward_hs<8>(stream(), out, att, qkv, B, T, C, NH); break;
    case 16: forward_hs<16>(stream(), out, att, qkv, B, T, C, NH); break;
    case 32: forward_hs<32>(stream(), out, att, qkv, B, T, C, NH); break;
    case 64: forward_hs<64>(stream(), out, att, qkv, B, T, C, NH); break;
    default: forward_hs<128>(stream(), out, att, qkv, B, T, C, NH); break;
  }
}

void CudaBackend::attention_backward(float* dqkv, float* scratch, const float* dout, const float* out,
                                     const float* qkv, const float* att, int B, int T, int C, int NH) {
  const int hs = head_size(B, T, C, NH);
  if (B == 0 || T == 0) return;
  attention_delta(stream(), scratch, dout, out, B, T, C, NH);  // D (B,NH,T) into the scratch
  if (precision_ == Precision::bf16 && attention_mma_enabled_ && attention_mma_supported(hs)) {  // attention_mma.cu
    attention_mma_backward(stream(), dqkv, scratch, dout, qkv, att, B, T, C, NH,
                           CudaBackend::scratch(attention_heads_bytes(B, T, C), 1));
    return;
  }
  if (precision_ == Precision::bf16 && attention_tc_supported(hs)) {  // bf16 tensor cores (attention_tc.cu)
    attention_tc_backward(stream(), dqkv, scratch, dout, qkv, att, B, T, C, NH,
                          CudaBackend::scratch(attention_tc_workspace_bytes(B, T, C), 1));
    return;
  }
  switch (hs) {
    case 8: backward_hs<8>(stream(), dqkv, scratch, dout, qkv, att, B, T, C, NH); break;
    case 16: backward_hs<16>(stream(), dqkv, scratch, dout, qkv, att, B, T, C, NH); break;
    case 32: backward_hs<32>(stream(), dqkv, scratch, dout, qkv, att, B, T, C, NH); break;
    case 64: backward_hs<64>(stream(), dqkv, scratch, dout, qkv, att, B, T, C, NH); break;
    default: backward_hs<128>(stream(), dqkv, scratch, dout, qkv, att, B, T, C, NH); break;
  }
}

}  // namespace competelm::cuda
