// Causal flash attention on bf16 tensor cores (FlashAttention-2 structure, nvcuda::wmma
// m16n16k16 with __nv_bfloat16 operands and fp32 accumulators; sm_80+). The bf16 precision
// mode's attention; attention.cu keeps the fp32 CUDA-core kernels (the oracle-exact path).
//
// Storage stays fp32: q, k, v, dO are rounded to bf16 while a tile is staged into shared
// memory; P and dS are rounded to bf16 before their products. Scores, softmax statistics,
// O, dK, dV, dQ accumulate in fp32.
//
// Geometry (every kernel): 128 threads = 4 warps, a block owns 64 "rows" (queries, or keys in
// dK/dV), 16 per warp (one wmma row block); the inner loop walks 64-wide tiles of "columns"
// (keys, or queries in dK/dV). Per warp, a 16×64 score tile goes through shared memory (fp32)
// for the elementwise work, done with 2 lanes per row: lane → row lane/2, columns
// (lane & 1) + 2j, j < 32, pairs combined with __shfl_xor(…, 1). Grid: B·NH·ceil(T/64) blocks,
// the tiles with the most work launched first.
//
//   forward<kDelta=false>: S = Q_w·K_tileᵀ, online softmax (m, l per row), O (fp32, in shared
//     memory) rescaled by exp(m_old − m_new) then O += P·V_tile; out = O/l, lse = m + log l.
//   forward<kDelta=true> : the same O, then delta = rowsum(dO ∘ O/l) (the backward pre-pass).
//   dK/dV: the block's 64 keys against query tiles from the diagonal to T: Sᵀ = K_w·Q_tileᵀ,
//     Pᵀ = exp(scale·Sᵀ − L), dPᵀ = V_w·dO_tileᵀ, dSᵀ = Pᵀ∘(dPᵀ − D); dV += Pᵀ·dO_tile,
//     dK += dSᵀ·Q_tile in accumulator fragments; dqkv += (scale·dK, dV) at the end.
//   dQ: the block's 64 queries against key tiles up to the diagonal: dS as above,
//     dQ += dS·K_tile; dqkv += scale·dQ at the end.
// Each dqkv element is updated by exactly one thread of one block (no atomics): the result
// does not depend on scheduling.
//
// Causality on the diagonal tile: warp w's rows are 16w … 16w+15 of the tile; 16-wide column
// blocks entirely on the masked side (keys > its last query in the forward / dQ; queries < its
// first key in dK/dV) are skipped in the products, and every elementwise step masks with a
// select, so stale shared memory in skipped blocks never reaches a result.
//
// Shared memory (dynamic; bytes, kLdH = hs + 8, 64-row bf16 tile = 128·kLdH bytes):
//   forward: Q, K, V tiles + per warp S (16×68 fp32), P (16×72 bf16), O (16×(hs+4) fp32)
//            hs 32: 48 KiB, hs 64: 70 KiB, hs 128: 110 KiB
//   dK/dV  : K, V, Q, dO tiles + L, D (64 fp32 each) + per warp Sᵀ, dPᵀ (fp32), Pᵀ, dSᵀ (bf16)
//            hs 32: 68.5 KiB, hs 64: 88.5 KiB, hs 128: 120.5 KiB
//   dQ     : Q, dO, K, V tiles + per warp S, dP (fp32), dS (bf16)
//            hs 32: 63 KiB, hs 64: 79 KiB, hs 128: 111 KiB
// Leading dimensions: bf16 tiles hs+8 and 72 (multiples of 8 elements), fp32 tiles 68 and hs+4
// (multiples of 4); every wmma pointer is 32-byte aligned (region sizes are multiples of 32
// bytes, fragment offsets are 16 rows or 16 columns). Row strides of 16 bytes mod 128 keep the
// fragment loads free of bank conflicts.
#include "attention_tc.cuh"

#include <cuda_bf16.h>
#include <mma.h>

#include <cmath>
#include <cstdint>

#include "cuda_common.cuh"

namespace competelm::cuda {
namespace {

namespace wmma = nvcuda::wmma;
using bf16 = __nv_bfloat16;

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kWarps = 4;                // warps per block, 16 rows each
constexpr int kThreads = kWarps * kWarp;
constexpr int kRows = 16 * kWarps;       // rows (queries, or keys in dK/dV) per block
constexpr int kCols = 64;                // columns (keys, or queries in dK/dV) per inner tile
constexpr int kColBlocks = kCols / 16;   // 16-wide wmma blocks per column tile
constexpr int kPerLane = kCols / 2;      // columns per lane in the elementwise steps
constexpr int kLdS = kCols + 4;          // fp32 16×64 score tiles
constexpr int kLdP = kCols + 8;          // bf16 16×64 probability tiles

using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major>;
using FragBRow = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major>;
using FragBCol = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

template <int HS>
struct Tc {
  static_assert(HS == 32 || HS == 64 || HS == 128, "tensor-core attention: head size 32, 64 or 128");
  static constexpr int kLdH = HS + 8;  // bf16 64×hs tiles
  static constexpr int kLdO = HS + 4;  // fp32 16×hs tiles
  static constexpr int kDimBlocks = HS / 16;
  static constexpr size_t kTileBytes = size_t(kRows) * kLdH * sizeof(bf16);
  static constexpr size_t kSBytes = size_t(16) * kLdS * sizeof(float);  // per warp
  static constexpr size_t kPBytes = size_t(16) * kLdP * sizeof(bf16);   // per warp
  static constexpr size_t kOBytes = size_t(16) * kLdO * sizeof(float);  // per warp
  static constexpr size_t kStatBytes = size_t(kCols) * sizeof(float);
  static constexpr size_t kFwdSmem = 3 * kTileBytes + kWarps * (kSBytes + kPBytes + kOBytes);
  static constexpr size_t kDkdvSmem = 4 * kTileBytes + 2 * kStatBytes + kWarps * (2 * kSBytes + 2 * kPBytes);
  static constexpr size_t kDqSmem = 4 * kTileBytes + kWarps * (2 * kSBytes + kPBytes);
  static_assert(kTileBytes % 32 == 0 && kSBytes % 32 == 0 && kPBytes % 32 == 0 && kOBytes % 32 == 0 &&
                    kStatBytes % 32 == 0,
                "wmma pointers must stay 32-byte aligned");
  static_assert(kFwdSmem <= 227 * 1024 && kDkdvSmem <= 227 * 1024 && kDqSmem <= 227 * 1024,
                "shared memory beyond the sm_90 opt-in limit");
};

// Base of head h of batch b in a (B,T,3C) qkv-shaped tensor: the q columns; k at +C, v at +2C.
__device__ inline size_t head_base(int b, int h, int T, int C, int hs) {
  return static_cast<size_t>(b) * T * (3 * static_cast<size_t>(C)) + static_cast<size_t>(h) * hs;
}

// Rows r0 … r0+63 of an fp32 (·, HS) matrix with row stride `stride` into a bf16 [64][kLdH]
// tile, zeros beyond row T. Two columns per thread (HS even); float2 loads where aligned.
template <int HS>
__device__ inline void stage_rows(bf16* dst, const float* src, size_t stride, int r0, int T) {
  constexpr int kPairs = HS / 2;
  const bool aligned = ((reinterpret_cast<uintptr_t>(src) | (stride * sizeof(float))) & 7u) == 0;
  for (int i = static_cast<int>(threadIdx.x); i < kRows * kPairs; i += kThreads) {
    const int r = i / kPairs, d = 2 * (i % kPairs), row = r0 + r;
    float2 x = make_float2(0.0f, 0.0f);
    if (row < T) {
      const float* p = src + static_cast<size_t>(row) * stride + d;
      if (aligned) {
        x = *reinterpret_cast<const float2*>(p);
      } else {
        x.x = p[0];
        x.y = p[1];
      }
    }
    *reinterpret_cast<__nv_bfloat162*>(dst + r * Tc<HS>::kLdH + d) = __floats2bfloat162_rn(x.x, x.y);
  }
}

// dst (16×64 fp32, ld kLdS) column blocks [nb_lo, nb_hi) = A (16×HS rows of a bf16 tile, ld
// kLdH) · B_tileᵀ, B_tile a bf16 [64][kLdH] tile (row-major 64×HS = col-major Bᵀ operand).
template <int HS>
__device__ inline void warp_gemm_abt(float* dst, const bf16* a, const bf16* b_tile, int nb_lo, int nb_hi) {
  constexpr int kLdH = Tc<HS>::kLdH;
  FragA fa[Tc<HS>::kDimBlocks];
#pragma unroll
  for (int kk = 0; kk < Tc<HS>::kDimBlocks; ++kk) wmma::load_matrix_sync(fa[kk], a + kk * 16, kLdH);
#pragma unroll
  for (int nb = 0; nb < kColBlocks; ++nb) {
    if (nb < nb_lo || nb >= nb_hi) continue;
    FragC acc;
    wmma::fill_fragment(acc, 0.0f);
#pragma unroll
    for (int kk = 0; kk < Tc<HS>::kDimBlocks; ++kk) {
      FragBCol fb;
      wmma::load_matrix_sync(fb, b_tile + nb * 16 * kLdH + kk * 16, kLdH);
      wmma::mma_sync(acc, fa[kk], fb, acc);
    }
    wmma::store_matrix_sync(dst + nb * 16, acc, kLdS, wmma::mem_row_major);
  }
}

// acc[nb] (16×HS) += P (16×64 bf16, ld kLdP) · M_tile (bf16 [64][kLdH], row-major 64×HS), over
// the 16-row blocks kk ∈ [kk_lo, kk_hi) of M_tile (the others multiply zeros of P).
template <int HS>
__device__ inline void warp_gemm_pm(FragC (&acc)[Tc<HS>::kDimBlocks], const bf16* p, const bf16* m_tile, int kk_lo,
                                    int kk_hi) {
  constexpr int kLdH = Tc<HS>::kLdH;
#pragma unroll
  for (int kk = 0; kk < kColBlocks; ++kk) {
    if (kk < kk_lo || kk >= kk_hi) continue;
    FragA fp;
    wmma::load_matrix_sync(fp, p + kk * 16, kLdP);
#pragma unroll
    for (int nb = 0; nb < Tc<HS>::kDimBlocks; ++nb) {
      FragBRow fm;
      wmma::load_matrix_sync(fm, m_tile + kk * 16 * kLdH + nb * 16, kLdH);
      wmma::mma_sync(acc[nb], fp, fm, acc[nb]);
    }
  }
}

// dst[row0 + r][nb·16 + c] += mul · acc[nb][r][c] for rows < T, via the warp's fp32 staging
// area `stage` (16×16 used, ld kLdS). dst has row stride `stride` floats.
template <int HS>
__device__ inline void warp_add_rows(float* dst, size_t stride, const FragC (&acc)[Tc<HS>::kDimBlocks], float* stage,
                                     int row0, int T, float mul, int lane) {
#pragma unroll
  for (int nb = 0; nb < Tc<HS>::kDimBlocks; ++nb) {
    __syncwarp();  // the previous block (or the caller's last reads) of `stage` are done
    wmma::store_matrix_sync(stage, acc[nb], kLdS, wmma::mem_row_major);
    __syncwarp();
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int e = lane + kWarp * i, r = e / 16, c = e % 16, row = row0 + r;
      if (row < T) dst[static_cast<size_t>(row) * stride + nb * 16 + c] += mul * stage[r * kLdS + c];
    }
  }
}

// Block → (b, h, tile) with B·NH·tiles blocks; reversed: the last tiles (most work in the
// forward / dQ) first; otherwise the first tiles (most work in dK/dV) first.
struct BlockPos {
  int b, h, bh, tile;
};
__device__ inline BlockPos block_pos(int NH, int T, bool reversed) {
  const int tiles = (T + kRows - 1) / kRows;
  const int BH = static_cast<int>(gridDim.x) / tiles;
  const int bh = static_cast<int>(blockIdx.x) % BH;
  const int i = static_cast<int>(blockIdx.x) / BH;
  return {bh / NH, bh % NH, bh, reversed ? tiles - 1 - i : i};
}

// Forward. kDelta = false: out = softmax(S)·v and lse. kDelta = true (backward pre-pass):
// delta = rowsum(dout ∘ O) with O recomputed exactly as the forward computes it.
template <int HS, bool kDelta>
__global__ void __launch_bounds__(kThreads)
    tc_forward_kernel(float* out, float* lse, float* delta, const float* dout, const float* qkv, int NH, int T, int C,
                      float scale) {
  using G = Tc<HS>;
  extern __shared__ __align__(128) unsigned char smem[];
  const int warp = static_cast<int>(threadIdx.x) / kWarp, lane = static_cast<int>(threadIdx.x) % kWarp;
  bf16* q_s = reinterpret_cast<bf16*>(smem);  // [64][kLdH]: the block's queries
  bf16* k_s = q_s + kRows * G::kLdH;          // [64][kLdH]: a key tile
  bf16* v_s = k_s + kRows * G::kLdH;          // [64][kLdH]
  unsigned char* mine = smem + 3 * G::kTileBytes + warp * (G::kSBytes + G::kPBytes + G::kOBytes);
  float* s_w = reinterpret_cast<float*>(mine);                                 // [16][kLdS] scores
  bf16* p_w = reinterpret_cast<bf16*>(mine + G::kSBytes);                      // [16][kLdP] probabilities
  float* o_w = reinterpret_cast<float*>(mine + G::kSBytes + G::kPBytes);       // [16][kLdO] O accumulator

  const BlockPos pos = block_pos(NH, T, true);
  const size_t C3 = 3 * static_cast<size_t>(C);
  const float* q = qkv + head_base(pos.b, pos.h, T, C, HS);  // (T,hs), stride 3C
  const float* k = q + C;
  const float* v = q + 2 * static_cast<size_t>(C);

  const int q0 = pos.tile * kRows;
  const int last = min(T, q0 + kRows) - 1;  // the block's last query: keys 0 … last
  const int row0 = q0 + 16 * warp;          // the warp's first query
  const bool warp_active = row0 < T;        // warp-uniform
  const int r = lane / 2, half = lane & 1;  // this lane's row in the warp, column parity
  const int t = row0 + r;                   // its query

  stage_rows<HS>(q_s, q, C3, q0, T);
  for (int i = lane; i < 16 * G::kLdO; i += kWarp) o_w[i] = 0.0f;
  float m = -INFINITY, l = 0.0f;  // running max and sum of row t (both lanes of the row agree)

  // k0 ≤ last < q0 + 64 and both are multiples of 64: k0 ≤ q0 ≤ t, so key k0 is visible to
  // every row of the block and each tile's row max is finite.
  for (int k0 = 0; k0 <= last; k0 += kCols) {
    __syncthreads();  // the previous tile is consumed (first pass: q_s and o_w are written)
    stage_rows<HS>(k_s, k, C3, k0, T);
    stage_rows<HS>(v_s, v, C3, k0, T);
    __syncthreads();
    if (!warp_active) continue;
    // Key blocks holding a key ≤ the warp's last query: on the diagonal tile (k0 = q0), warp w
    // sees blocks 0 … w; below it, all.
    const int nb_hi = k0 == q0 ? warp + 1 : kColBlocks;
    warp_gemm_abt<HS>(s_w, q_s + 16 * warp * G::kLdH, k_s, 0, nb_hi);
    __syncwarp();

    // Online softmax of row t over columns c = half + 2j.
    const float* s_row = s_w + r * kLdS;
    float x[kPerLane];
    float mx = -INFINITY;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      const int c = half + 2 * j;
      x[j] = k0 + c <= t ? s_row[c] * scale : -INFINITY;
      mx = fmaxf(mx, x[j]);
    }
    mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, 1));
    const float m_new = fmaxf(m, mx);  // finite (key k0 ≤ t)
    const float alpha = m == -INFINITY ? 0.0f : __expf(m - m_new);
    float sum = 0.0f;
    bf16* p_row = p_w + r * kLdP;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      const int c = half + 2 * j;
      const float p = k0 + c <= t ? __expf(x[j] - m_new) : 0.0f;
      sum += p;
      p_row[c] = __float2bfloat16_rn(p);
    }
    sum += __shfl_xor_sync(kFullMask, sum, 1);
    l = alpha * l + sum;
    m = m_new;
    float* o_row = o_w + r * G::kLdO;
#pragma unroll
    for (int j = 0; j < HS / 2; ++j) o_row[half + 2 * j] *= alpha;
    __syncwarp();

    // O += P·V_tile (key blocks past nb_hi hold P = 0).
    FragC acc[G::kDimBlocks];
#pragma unroll
    for (int nb = 0; nb < G::kDimBlocks; ++nb) wmma::load_matrix_sync(acc[nb], o_w + nb * 16, G::kLdO, wmma::mem_row_major);
    warp_gemm_pm<HS>(acc, p_w, v_s, 0, nb_hi);
#pragma unroll
    for (int nb = 0; nb < G::kDimBlocks; ++nb)
      wmma::store_matrix_sync(o_w + nb * 16, acc[nb], G::kLdO, wmma::mem_row_major);
    // the next reads of o_w / writes of s_w, p_w follow the loop's __syncthreads
  }
  if (!warp_active) return;  // warp-uniform, after the last __syncthreads
  __syncwarp();

  const float inv = 1.0f / l;  // l ≥ 1 for rows < T (the max element contributes exp(0))
  const float* o_row = o_w + r * G::kLdO;
  const size_t row = (static_cast<size_t>(pos.b) * T + min(t, T - 1)) * C + static_cast<size_t>(pos.h) * HS;
  if constexpr (!kDelta) {
    if (t < T) {
#pragma unroll
      for (int j = 0; j < HS / 2; ++j) {
        const int c = half + 2 * j;
        out[row + c] = o_row[c] * inv;
      }
      if (half == 0) lse[static_cast<size_t>(pos.bh) * T + t] = m + logf(l);
    }
  } else {
    float acc = 0.0f;
    if (t < T) {
#pragma unroll
      for (int j = 0; j < HS / 2; ++j) {
        const int c = half + 2 * j;
        acc += (o_row[c] * inv) * dout[row + c];
      }
    }
    acc += __shfl_xor_sync(kFullMask, acc, 1);
    if (t < T && half == 0) delta[static_cast<size_t>(pos.bh) * T + t] = acc;
  }
}

// dK, dV += for the block's 64 keys (16 per warp), looping over query tiles from the one
// holding the block's first key to T. dK, dV stay in accumulator fragments.
template <int HS>
__global__ void __launch_bounds__(kThreads)
    tc_dkdv_kernel(float* dqkv, const float* dout, const float* qkv, const float* lse, const float* delta, int NH,
                   int T, int C, float scale) {
  using G = Tc<HS>;
  extern __shared__ __align__(128) unsigned char smem[];
  const int warp = static_cast<int>(threadIdx.x) / kWarp, lane = static_cast<int>(threadIdx.x) % kWarp;
  bf16* k_s = reinterpret_cast<bf16*>(smem);  // [64][kLdH]: the block's keys
  bf16* v_s = k_s + kRows * G::kLdH;          // [64][kLdH]
  bf16* q_s = v_s + kRows * G::kLdH;          // [64][kLdH]: a query tile
  bf16* do_s = q_s + kRows * G::kLdH;         // [64][kLdH]
  float* l_s = reinterpret_cast<float*>(smem + 4 * G::kTileBytes);  // [64] L of the query tile
  float* d_s = l_s + kCols;                                          // [64] D of the query tile
  unsigned char* mine = smem + 4 * G::kTileBytes + 2 * G::kStatBytes + warp * (2 * G::kSBytes + 2 * G::kPBytes);
  float* s_w = reinterpret_cast<float*>(mine);                           // [16][kLdS] Sᵀ
  float* dp_w = reinterpret_cast<float*>(mine + G::kSBytes);             // [16][kLdS] dPᵀ
  bf16* pt_w = reinterpret_cast<bf16*>(mine + 2 * G::kSBytes);           // [16][kLdP] Pᵀ
  bf16* dst_w = reinterpret_cast<bf16*>(mine + 2 * G::kSBytes + G::kPBytes);  // [16][kLdP] dSᵀ

  const BlockPos pos = block_pos(NH, T, false);
  const size_t C3 = 3 * static_cast<size_t>(C);
  const size_t base = head_base(pos.b, pos.h, T, C, HS);
  const float* q = qkv + base;  // (T,hs), stride 3C
  const float* k = q + C;
  const float* v = q + 2 * static_cast<size_t>(C);
  const float* dO = dout + static_cast<size_t>(pos.b) * T * C + static_cast<size_t>(pos.h) * HS;  // stride C
  const float* L = lse + static_cast<size_t>(pos.bh) * T;
  const float* D = delta + static_cast<size_t>(pos.bh) * T;

  const int s0 = pos.tile * kRows;        // the block's first key
  const int key0 = s0 + 16 * warp;        // the warp's first key
  const bool warp_active = key0 < T;      // warp-uniform
  const int r = lane / 2, half = lane & 1;
  const int s = key0 + r;                 // this lane's key

  stage_rows<HS>(k_s, k, C3, s0, T);
  stage_rows<HS>(v_s, v, C3, s0, T);
  FragC dk[G::kDimBlocks], dv[G::kDimBlocks];
#pragma unroll
  for (int nb = 0; nb < G::kDimBlocks; ++nb) {
    wmma::fill_fragment(dk[nb], 0.0f);
    wmma::fill_fragment(dv[nb], 0.0f);
  }

  for (int t0 = s0; t0 < T; t0 += kCols) {
    __syncthreads();  // the previous tile is consumed (first pass: k_s, v_s are written)
    stage_rows<HS>(q_s, q, C3, t0, T);
    stage_rows<HS>(do_s, dO, static_cast<size_t>(C), t0, T);
    if (threadIdx.x < kCols) {
      const int tq = t0 + static_cast<int>(threadIdx.x);
      l_s[threadIdx.x] = tq < T ? L[tq] : 0.0f;
      d_s[threadIdx.x] = tq < T ? D[tq] : 0.0f;
    }
    __syncthreads();
    if (!warp_active) continue;
    // Query blocks holding a query ≥ the warp's first key: on the diagonal tile (t0 = s0),
    // warp w needs blocks w … 3; past it, all.
    const int nb_lo = t0 == s0 ? warp : 0;
    warp_gemm_abt<HS>(s_w, k_s + 16 * warp * G::kLdH, q_s, nb_lo, kColBlocks);   // Sᵀ = K_w·Qᵀ
    warp_gemm_abt<HS>(dp_w, v_s + 16 * warp * G::kLdH, do_s, nb_lo, kColBlocks);  // dPᵀ = V_w·dOᵀ
    __syncwarp();

    const float* s_row = s_w + r * kLdS;
    const float* dp_row = dp_w + r * kLdS;
    bf16* pt_row = pt_w + r * kLdP;
    bf16* ds_row = dst_w + r * kLdP;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      const int c = half + 2 * j, tq = t0 + c;
      const bool seen = tq >= s && tq < T;  // (s ≥ T: never seen; skipped blocks: tq < key0 ≤ s)
      const float p = seen ? __expf(s_row[c] * scale - l_s[c]) : 0.0f;
      const float ds = seen ? p * (dp_row[c] - d_s[c]) : 0.0f;
      pt_row[c] = __float2bfloat16_rn(p);
      ds_row[c] = __float2bfloat16_rn(ds);
    }
    __syncwarp();
    warp_gemm_pm<HS>(dv, pt_w, do_s, nb_lo, kColBlocks);  // dV += Pᵀ·dO_tile
    warp_gemm_pm<HS>(dk, dst_w, q_s, nb_lo, kColBlocks);  // dK += dSᵀ·Q_tile
  }
  if (!warp_active) return;  // warp-uniform, after the last __syncthreads
  float* dk_base = dqkv + base + C;  // (T,hs), stride 3C
  warp_add_rows<HS>(dk_base, C3, dk, s_w, key0, T, scale, lane);
  warp_add_rows<HS>(dk_base + C, C3, dv, dp_w, key0, T, 1.0f, lane);
}

// dQ += for the block's 64 queries (16 per warp), looping over key tiles up to the diagonal.
template <int HS>
__global__ void __launch_bounds__(kThreads)
    tc_dq_kernel(float* dqkv, const float* dout, const float* qkv, const float* lse, const float* delta, int NH, int T,
                 int C, float scale) {
  using G = Tc<HS>;
  extern __shared__ __align__(128) unsigned char smem[];
  const int warp = static_cast<int>(threadIdx.x) / kWarp, lane = static_cast<int>(threadIdx.x) % kWarp;
  bf16* q_s = reinterpret_cast<bf16*>(smem);  // [64][kLdH]: the block's queries
  bf16* do_s = q_s + kRows * G::kLdH;         // [64][kLdH]
  bf16* k_s = do_s + kRows * G::kLdH;         // [64][kLdH]: a key tile
  bf16* v_s = k_s + kRows * G::kLdH;          // [64][kLdH]
  unsigned char* mine = smem + 4 * G::kTileBytes + warp * (2 * G::kSBytes + G::kPBytes);
  float* s_w = reinterpret_cast<float*>(mine);                // [16][kLdS] S
  float* dp_w = reinterpret_cast<float*>(mine + G::kSBytes);  // [16][kLdS] dP
  bf16* ds_w = reinterpret_cast<bf16*>(mine + 2 * G::kSBytes);  // [16][kLdP] dS

  const BlockPos pos = block_pos(NH, T, true);
  const size_t C3 = 3 * static_cast<size_t>(C);
  const size_t base = head_base(pos.b, pos.h, T, C, HS);
  const float* q = qkv + base;  // (T,hs), stride 3C
  const float* k = q + C;
  const float* v = q + 2 * static_cast<size_t>(C);
  const float* dO = dout + static_cast<size_t>(pos.b) * T * C + static_cast<size_t>(pos.h) * HS;  // stride C

  const int q0 = pos.tile * kRows;
  const int last = min(T, q0 + kRows) - 1;
  const int row0 = q0 + 16 * warp;
  const bool warp_active = row0 < T;
  const int r = lane / 2, half = lane & 1;
  const int t = row0 + r;
  const float Lt = t < T ? lse[static_cast<size_t>(pos.bh) * T + t] : 0.0f;
  const float Dt = t < T ? delta[static_cast<size_t>(pos.bh) * T + t] : 0.0f;

  stage_rows<HS>(q_s, q, C3, q0, T);
  stage_rows<HS>(do_s, dO, static_cast<size_t>(C), q0, T);
  FragC dq[G::kDimBlocks];
#pragma unroll
  for (int nb = 0; nb < G::kDimBlocks; ++nb) wmma::fill_fragment(dq[nb], 0.0f);

  for (int k0 = 0; k0 <= last; k0 += kCols) {  // k0 ≤ q0 (see the forward)
    __syncthreads();  // the previous tile is consumed (first pass: q_s, do_s are written)
    stage_rows<HS>(k_s, k, C3, k0, T);
    stage_rows<HS>(v_s, v, C3, k0, T);
    __syncthreads();
    if (!warp_active) continue;
    const int nb_hi = k0 == q0 ? warp + 1 : kColBlocks;  // as in the forward
    warp_gemm_abt<HS>(s_w, q_s + 16 * warp * G::kLdH, k_s, 0, nb_hi);    // S = Q_w·Kᵀ
    warp_gemm_abt<HS>(dp_w, do_s + 16 * warp * G::kLdH, v_s, 0, nb_hi);  // dP = dO_w·Vᵀ
    __syncwarp();

    const float* s_row = s_w + r * kLdS;
    const float* dp_row = dp_w + r * kLdS;
    bf16* ds_row = ds_w + r * kLdP;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      const int c = half + 2 * j;
      const bool seen = k0 + c <= t && t < T;
      const float p = seen ? __expf(s_row[c] * scale - Lt) : 0.0f;
      ds_row[c] = __float2bfloat16_rn(seen ? p * (dp_row[c] - Dt) : 0.0f);
    }
    __syncwarp();
    warp_gemm_pm<HS>(dq, ds_w, k_s, 0, nb_hi);  // dQ += dS·K_tile
  }
  if (!warp_active) return;
  warp_add_rows<HS>(dqkv + base, C3, dq, s_w, row0, T, scale, lane);
}

unsigned grid_for(int B, int NH, int T) {
  const size_t blocks = static_cast<size_t>(B) * NH * ((static_cast<size_t>(T) + kRows - 1) / kRows);
  if (blocks > 0x7fffffffu) fail("cuda attention (bf16): B·NH·ceil(T/64) = {} blocks is too many", blocks);
  return static_cast<unsigned>(blocks);
}

// Opt in to more than 48 KiB of dynamic shared memory (set on every launch: cheap, and right on
// whichever device is current).
template <typename Kernel>
void allow_smem(Kernel kernel, size_t bytes) {
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
}

template <int HS>
void forward_hs(cudaStream_t st, float* out, float* lse, const float* qkv, int B, int T, int C, int NH) {
  using G = Tc<HS>;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  allow_smem(tc_forward_kernel<HS, false>, G::kFwdSmem);
  tc_forward_kernel<HS, false><<<grid_for(B, NH, T), kThreads, G::kFwdSmem, st>>>(out, lse, nullptr, nullptr, qkv,
                                                                                  NH, T, C, scale);
  CUDA_CHECK_LAUNCH();
}

template <int HS>
void backward_hs(cudaStream_t st, float* dqkv, float* delta, const float* dout, const float* qkv, const float* lse,
                 int B, int T, int C, int NH) {
  using G = Tc<HS>;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  const unsigned grid = grid_for(B, NH, T);
  allow_smem(tc_forward_kernel<HS, true>, G::kFwdSmem);
  tc_forward_kernel<HS, true><<<grid, kThreads, G::kFwdSmem, st>>>(nullptr, nullptr, delta, dout, qkv, NH, T, C,
                                                                  scale);
  CUDA_CHECK_LAUNCH();
  allow_smem(tc_dkdv_kernel<HS>, G::kDkdvSmem);
  tc_dkdv_kernel<HS><<<grid, kThreads, G::kDkdvSmem, st>>>(dqkv, dout, qkv, lse, delta, NH, T, C, scale);
  CUDA_CHECK_LAUNCH();
  allow_smem(tc_dq_kernel<HS>, G::kDqSmem);
  tc_dq_kernel<HS><<<grid, kThreads, G::kDqSmem, st>>>(dqkv, dout, qkv, lse, delta, NH, T, C, scale);
  CUDA_CHECK_LAUNCH();
}

int checked_head_size(int B, int T, int C, int NH) {
  if (B < 0 || T < 0 || NH <= 0 || C <= 0 || C % NH != 0)
    fail("cuda attention (bf16): invalid shape B={} T={} C={} NH={} (C must be a positive multiple of NH)", B, T, C,
         NH);
  const int hs = C / NH;
  if (!attention_tc_supported(hs))
    fail("cuda attention (bf16): head size C/NH = {} has no tensor-core kernel (32, 64 or 128)", hs);
  return hs;
}

}  // namespace

bool attention_tc_supported(int hs) { return hs == 32 || hs == 64 || hs == 128; }

void attention_tc_forward(cudaStream_t st, float* out, float* lse, const float* qkv, int B, int T, int C, int NH) {
  const int hs = checked_head_size(B, T, C, NH);
  if (B == 0 || T == 0) return;
  switch (hs) {
    case 32: forward_hs<32>(st, out, lse, qkv, B, T, C, NH); break;
    case 64: forward_hs<64>(st, out, lse, qkv, B, T, C, NH); break;
    default: forward_hs<128>(st, out, lse, qkv, B, T, C, NH); break;
  }
}

void attention_tc_backward(cudaStream_t st, float* dqkv, float* delta, const float* dout, const float* qkv,
                           const float* lse, int B, int T, int C, int NH) {
  const int hs = checked_head_size(B, T, C, NH);
  if (B == 0 || T == 0) return;
  switch (hs) {
    case 32: backward_hs<32>(st, dqkv, delta, dout, qkv, lse, B, T, C, NH); break;
    case 64: backward_hs<64>(st, dqkv, delta, dout, qkv, lse, B, T, C, NH); break;
    default: backward_hs<128>(st, dqkv, delta, dout, qkv, lse, B, T, C, NH); break;
  }
}

}  // namespace competelm::cuda
