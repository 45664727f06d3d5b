// Causal flash attention on bf16 tensor cores (FlashAttention-2 structure, nvcuda::wmma
// m16n16k16 with __nv_bfloat16 operands and fp32 accumulators; sm_80+). The bf16 precision
// mode's attention; attention.cu keeps the fp32 CUDA-core kernels (the oracle-exact path).
//
// Data flow: each call first rounds q, k, v (and dO in the backward) to bf16 once, with
// attention_to_heads (attention_prep.cu), into the caller's workspace as head-major
// (B, NH, T, hs) arrays q, k, v, dO (attention_tc_workspace_bytes = 4·B·T·C·2 bytes; the
// forward uses the first three), so that 64 rows of one head are 64·hs·2 contiguous bytes.
// Tiles are staged into shared memory from there with 16-byte cp.async copies
// (__pipeline_memcpy_async; rows ≥ T zero-filled). P and dS are rounded to bf16 before their
// products. Scores, softmax statistics, O, dK, dV, dQ accumulate in fp32; the backward's
// D = rowsum(dO ∘ O) comes precomputed from the forward's fp32 out (attention_delta).
//
// Geometry (every attention kernel): 128 threads = 4 warps, a block owns 64 "rows" (queries,
// or keys in dK/dV), 16 per warp (one wmma row block); the inner loop walks 64-wide tiles of
// "columns" (keys, or queries in dK/dV). Per warp, a 16×64 score tile goes through shared
// memory (fp32) for the elementwise work, done with 2 lanes per row: lane → row lane/2, columns
// (lane & 1) + 2j, j < 32, pairs combined with __shfl_xor(…, 1). Grid: B·NH·ceil(T/64) blocks,
// the tiles with the most work launched first.
//
//   forward: S = Q_w·K_tileᵀ, online softmax (m, l per row), O (fp32, in shared memory)
//     rescaled by exp(m_old − m_new) then O += P·V_tile; out = O/l, lse = m + log l.
//   dK/dV: the block's 64 keys against query tiles from the diagonal to T: Sᵀ = K_w·Q_tileᵀ,
//     Pᵀ = exp(scale·Sᵀ − L), dPᵀ = V_w·dO_tileᵀ, dSᵀ = Pᵀ∘(dPᵀ − D); dV += Pᵀ·dO_tile,
//     dK += dSᵀ·Q_tile in accumulator fragments; dqkv += (scale·dK, dV) at the end.
//   dQ: the block's 64 queries against key tiles up to the diagonal: dS as above,
//     dQ += dS·K_tile; dqkv += scale·dQ at the end.
// Each dqkv element is updated by exactly one thread of one block (no atomics): the result
// does not depend on scheduling.
//
// Pipelining: the streamed tiles (K, V in the forward and dQ; Q, dO, L, D in dK/dV) have
// kStages buffers. The fixed tiles and streamed tile 0 are one cp.async group. With 2 stages,
// iteration i commits the copies of tile i+1 into the other buffer as a group of its own (empty
// past the last tile), waits for all but the newest group (tile i), and the loop's closing
// __syncthreads releases buffer i for iteration i+1's copies (of tile i+2). With 1 stage,
// iteration i > 0 issues tile i after the previous closing barrier and waits for it at once.
// A kernel gets 2 stages only where they keep as many blocks resident per SM (228 KiB, 1 KiB
// reserved per block) as 1 stage (stages_for; registers may bound residency first).
//
// Causality on the diagonal tile: warp w's rows are 16w … 16w+15 of the tile; 16-wide column
// blocks entirely on the masked side (keys > its last query in the forward / dQ; queries < its
// first key in dK/dV) are skipped in the products, and every elementwise step masks with a
// select, so stale shared memory in skipped blocks never reaches a result.
//
// Shared memory (dynamic; kLdH = hs + 8, a 64-row bf16 tile = 128·kLdH bytes; (stages)):
//   forward: Q tile, stages × (K, V tiles) + per warp S (16×68 fp32), P (16×72 bf16),
//            O (16×(hs+4) fp32)
//            hs 32: 50 KiB (1), hs 64: 70 KiB (1), hs 128: 110 KiB (1)
//   dK/dV  : K, V tiles, stages × (Q, dO tiles, L, D (64 fp32 each)) + per warp Sᵀ, dPᵀ
//            (16×68 fp32), Pᵀ, dSᵀ (16×72 bf16)
//            hs 32: 72.5 KiB (1), hs 64: 107 KiB (2), hs 128: 155 KiB (2)
//   dQ     : Q, dO tiles, stages × (K, V tiles) + per warp S, dP (fp32), dS (bf16)
//            hs 32: 73 KiB (2), hs 64: 97 KiB (2), hs 128: 111 KiB (1)
// Leading dimensions: bf16 tiles hs+8 and 72 (multiples of 8 elements; tile rows are 16-byte
// aligned for cp.async), fp32 tiles 68 and hs+4 (multiples of 4); every wmma pointer is
// 32-byte aligned (region sizes are multiples of 32 bytes, fragment offsets are 16 rows or 16
// columns). Row strides of 16 bytes mod 128 keep the fragment loads free of bank conflicts.
#include "attention_tc.cuh"

#include <cuda_bf16.h>
#include <cuda_pipeline_primitives.h>
#include <mma.h>

#include <cmath>
#include <cstdint>

#include "attention_prep.cuh"
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
static_assert(kThreads == 2 * kCols, "dK/dV stages L and D with one 4-byte copy per thread");
static_assert(kRows == kCols, "the diagonal tile logic assumes square tiles");

using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major>;
using FragBRow = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major>;
using FragBCol = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// Resident blocks per SM for `bytes` of dynamic shared memory (sm_90: 228 KiB per SM, 1 KiB
// reserved per block). Two stages only where they cost no resident block.
constexpr int blocks_per_sm(size_t bytes) { return static_cast<int>(size_t(228) * 1024 / (bytes + 1024)); }
constexpr int stages_for(size_t one_stage, size_t two_stages) {
  return two_stages <= size_t(227) * 1024 && blocks_per_sm(two_stages) >= blocks_per_sm(one_stage) ? 2 : 1;
}

template <int HS>
struct Tc {
  static_assert(HS == 32 || HS == 64 || HS == 128, "tensor-core attention: head size 32, 64 or 128");
  static constexpr int kLdH = HS + 8;  // bf16 64×hs tiles
  static constexpr int kLdO = HS + 4;  // fp32 16×hs tiles
  static constexpr int kDimBlocks = HS / 16;
  static constexpr int kTileElems = kRows * kLdH;
  static constexpr size_t kTileBytes = size_t(kTileElems) * sizeof(bf16);
  static constexpr size_t kSBytes = size_t(16) * kLdS * sizeof(float);  // per warp
  static constexpr size_t kPBytes = size_t(16) * kLdP * sizeof(bf16);   // per warp
  static constexpr size_t kOBytes = size_t(16) * kLdO * sizeof(float);  // per warp
  static constexpr size_t kStatBytes = size_t(kCols) * sizeof(float);
  static constexpr size_t kFwdWarpBytes = kSBytes + kPBytes + kOBytes;
  static constexpr size_t kDkdvWarpBytes = 2 * kSBytes + 2 * kPBytes;
  static constexpr size_t kDqWarpBytes = 2 * kSBytes + kPBytes;
  static constexpr size_t fwd_smem(int stages) { return (1 + 2 * size_t(stages)) * kTileBytes + kWarps * kFwdWarpBytes; }
  static constexpr size_t dkdv_smem(int stages) {
    return (2 + 2 * size_t(stages)) * kTileBytes + 2 * size_t(stages) * kStatBytes + kWarps * kDkdvWarpBytes;
  }
  static constexpr size_t dq_smem(int stages) { return (2 + 2 * size_t(stages)) * kTileBytes + kWarps * kDqWarpBytes; }
  static constexpr int kFwdStages = stages_for(fwd_smem(1), fwd_smem(2));
  static constexpr int kDkdvStages = stages_for(dkdv_smem(1), dkdv_smem(2));
  static constexpr int kDqStages = stages_for(dq_smem(1), dq_smem(2));
  static constexpr size_t kFwdSmem = fwd_smem(kFwdStages);
  static constexpr size_t kDkdvSmem = dkdv_smem(kDkdvStages);
  static constexpr size_t kDqSmem = dq_smem(kDqStages);
  static_assert(kTileBytes % 32 == 0 && kSBytes % 32 == 0 && kPBytes % 32 == 0 && kOBytes % 32 == 0 &&
                    kStatBytes % 32 == 0,
                "wmma pointers must stay 32-byte aligned");
  static_assert((kLdH * sizeof(bf16)) % 16 == 0 && HS % 8 == 0, "cp.async: 16-byte tile rows and chunks");
  static_assert(kFwdSmem <= 227 * 1024 && kDkdvSmem <= 227 * 1024 && kDqSmem <= 227 * 1024,
                "shared memory beyond the sm_90 opt-in limit");
};

// Issues the cp.async copies of rows r0 … r0+63 of a head-major bf16 (T, HS) matrix into a bf16
// [64][kLdH] tile, 16 bytes each; rows ≥ T are zero-filled (nothing read: the source address
// is clamped to row 0, valid as T ≥ 1). The caller commits and waits.
template <int HS>
__device__ inline void stage_tile(bf16* dst, const bf16* src, int r0, int T) {
  constexpr int kChunks = HS / 8;  // 16-byte chunks per row
  for (int i = static_cast<int>(threadIdx.x); i < kRows * kChunks; i += kThreads) {
    const int r = i / kChunks, c = (i % kChunks) * 8, row = r0 + r;
    const bool in = row < T;
    __pipeline_memcpy_async(dst + r * Tc<HS>::kLdH + c, src + static_cast<size_t>(in ? row : 0) * HS + c, 16,
                            in ? 0 : 16);
  }
}

// Issues the 4-byte copies of L[t0 … t0+63] into l_dst and D[t0 … t0+63] into d_dst (one per
// thread; zeros beyond T).
__device__ inline void stage_stats(float* l_dst, float* d_dst, const float* L, const float* D, int t0, int T) {
  const int i = static_cast<int>(threadIdx.x) % kCols, tq = t0 + i;
  const bool first = static_cast<int>(threadIdx.x) < kCols, in = tq < T;
  __pipeline_memcpy_async((first ? l_dst : d_dst) + i, (first ? L : D) + (in ? tq : 0), 4, in ? 0 : 4);
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

// Waits for the copies of the current tile (see "Pipelining" above): with 2 stages, first
// issues (or not, past the last tile) the next tile's copies as a group of their own.
template <int kStages, typename IssueNext>
__device__ inline void pipeline_next(bool has_next, IssueNext issue_next) {
  if constexpr (kStages == 2) {
    if (has_next) issue_next();
    __pipeline_commit();       // possibly empty: the newest group is always the next tile's
    __pipeline_wait_prior(1);  // everything before it (the current tile) has landed
  } else {
    __pipeline_wait_prior(0);
  }
}

// Forward: out = softmax(S)·v and lse.
// heads: the workspace's head-major bf16 q, k, v (per_tensor elements apart).
template <int HS>
__global__ void __launch_bounds__(kThreads)
    tc_forward_kernel(float* out, float* lse, const bf16* heads, size_t per_tensor, int NH, int T, int C,
                      float scale) {
  using G = Tc<HS>;
  constexpr int kStages = G::kFwdStages;
  extern __shared__ __align__(128) unsigned char smem[];
  const int warp = static_cast<int>(threadIdx.x) / kWarp, lane = static_cast<int>(threadIdx.x) % kWarp;
  bf16* q_s = reinterpret_cast<bf16*>(smem);  // [64][kLdH]: the block's queries
  bf16* kv_s = q_s + G::kTileElems;           // kStages × {K, V} [64][kLdH]: a key tile
  unsigned char* mine = smem + (1 + 2 * kStages) * G::kTileBytes + warp * G::kFwdWarpBytes;
  float* s_w = reinterpret_cast<float*>(mine);                                 // [16][kLdS] scores
  bf16* p_w = reinterpret_cast<bf16*>(mine + G::kSBytes);                      // [16][kLdP] probabilities
  float* o_w = reinterpret_cast<float*>(mine + G::kSBytes + G::kPBytes);       // [16][kLdO] O accumulator

  const BlockPos pos = block_pos(NH, T, kRows, true);
  const bf16* q = heads + static_cast<size_t>(pos.bh) * T * HS;  // (T,hs) each
  const bf16* k = q + per_tensor;
  const bf16* v = k + per_tensor;

  const int q0 = pos.tile * kRows;
  const int n_tiles = pos.tile + 1;         // key tiles 0 … the diagonal one (k0 = q0)
  const int row0 = q0 + 16 * warp;          // the warp's first query
  const bool warp_active = row0 < T;        // warp-uniform
  const int r = lane / 2, half = lane & 1;  // this lane's row in the warp, column parity
  const int t = row0 + r;                   // its query

  stage_tile<HS>(q_s, q, q0, T);
  stage_tile<HS>(kv_s, k, 0, T);
  stage_tile<HS>(kv_s + G::kTileElems, v, 0, T);
  __pipeline_commit();
  for (int i = lane; i < 16 * G::kLdO; i += kWarp) o_w[i] = 0.0f;
  float m = -INFINITY, l = 0.0f;  // running max and sum of row t (both lanes of the row agree)

  // k0 ≤ q0 ≤ t (both multiples of 64): key k0 is visible to every row of the block and each
  // tile's row max is finite.
  for (int it = 0; it < n_tiles; ++it) {
    const int k0 = it * kCols;
    bf16* k_s = kv_s + (kStages == 2 ? (it & 1) : 0) * 2 * G::kTileElems;
    bf16* v_s = k_s + G::kTileElems;
    if (kStages == 1 && it > 0) {  // the previous iteration's closing barrier released the buffer
      stage_tile<HS>(k_s, k, k0, T);
      stage_tile<HS>(v_s, v, k0, T);
      __pipeline_commit();
    }
    pipeline_next<kStages>(it + 1 < n_tiles, [&] {
      bf16* k_n = kv_s + ((it + 1) & 1) * 2 * G::kTileElems;  // released by the previous closing barrier
      stage_tile<HS>(k_n, k, k0 + kCols, T);
      stage_tile<HS>(k_n + G::kTileElems, v, k0 + kCols, T);
    });
    __syncthreads();  // every thread's copies (and o_w's zeros) are visible
    if (warp_active) {
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
      for (int nb = 0; nb < G::kDimBlocks; ++nb)
        wmma::load_matrix_sync(acc[nb], o_w + nb * 16, G::kLdO, wmma::mem_row_major);
      warp_gemm_pm<HS>(acc, p_w, v_s, 0, nb_hi);
#pragma unroll
      for (int nb = 0; nb < G::kDimBlocks; ++nb)
        wmma::store_matrix_sync(o_w + nb * 16, acc[nb], G::kLdO, wmma::mem_row_major);
      // the next reads of o_w / writes of s_w, p_w follow the loop's barriers
    }
    __syncthreads();  // every warp is done with k_s, v_s
  }
  if (!warp_active) return;  // warp-uniform, after the last __syncthreads
  __syncwarp();

  const float inv = 1.0f / l;  // l ≥ 1 for rows < T (the max element contributes exp(0))
  const float* o_row = o_w + r * G::kLdO;
  const size_t row = (static_cast<size_t>(pos.b) * T + min(t, T - 1)) * C + static_cast<size_t>(pos.h) * HS;
  if (t < T) {
#pragma unroll
    for (int j = 0; j < HS / 2; ++j) {
      const int c = half + 2 * j;
      out[row + c] = o_row[c] * inv;
    }
    if (half == 0) lse[static_cast<size_t>(pos.bh) * T + t] = m + logf(l);
  }
}

// dK, dV += for the block's 64 keys (16 per warp), looping over query tiles from the one
// holding the block's first key to T. dK, dV stay in accumulator fragments. heads: the
// workspace's head-major bf16 q, k, v, dO.
template <int HS>
__global__ void __launch_bounds__(kThreads)
    tc_dkdv_kernel(float* dqkv, const bf16* heads, size_t per_tensor, const float* lse, const float* delta, int NH,
                   int T, int C, float scale) {
  using G = Tc<HS>;
  constexpr int kStages = G::kDkdvStages;
  extern __shared__ __align__(128) unsigned char smem[];
  const int warp = static_cast<int>(threadIdx.x) / kWarp, lane = static_cast<int>(threadIdx.x) % kWarp;
  bf16* k_s = reinterpret_cast<bf16*>(smem);  // [64][kLdH]: the block's keys
  bf16* v_s = k_s + G::kTileElems;            // [64][kLdH]
  bf16* qdo_s = v_s + G::kTileElems;          // kStages × {Q, dO} [64][kLdH]: a query tile
  float* stat_s = reinterpret_cast<float*>(smem + (2 + 2 * kStages) * G::kTileBytes);  // kStages × {L, D} [64]
  unsigned char* mine = smem + (2 + 2 * kStages) * G::kTileBytes + 2 * kStages * G::kStatBytes +
                        warp * G::kDkdvWarpBytes;
  float* s_w = reinterpret_cast<float*>(mine);                                 // [16][kLdS] Sᵀ
  float* dp_w = reinterpret_cast<float*>(mine + G::kSBytes);                   // [16][kLdS] dPᵀ
  bf16* pt_w = reinterpret_cast<bf16*>(mine + 2 * G::kSBytes);                 // [16][kLdP] Pᵀ
  bf16* dst_w = reinterpret_cast<bf16*>(mine + 2 * G::kSBytes + G::kPBytes);   // [16][kLdP] dSᵀ

  const BlockPos pos = block_pos(NH, T, kRows, false);
  const bf16* q = heads + static_cast<size_t>(pos.bh) * T * HS;  // (T,hs) each
  const bf16* k = q + per_tensor;
  const bf16* v = k + per_tensor;
  const bf16* dO = v + per_tensor;
  const float* L = lse + static_cast<size_t>(pos.bh) * T;
  const float* D = delta + static_cast<size_t>(pos.bh) * T;

  const int s0 = pos.tile * kRows;        // the block's first key
  const int n_tiles = (T + kCols - 1) / kCols - pos.tile;  // query tiles s0, s0 + 64, … < T
  const int key0 = s0 + 16 * warp;        // the warp's first key
  const bool warp_active = key0 < T;      // warp-uniform
  const int r = lane / 2, half = lane & 1;
  const int s = key0 + r;                 // this lane's key

  stage_tile<HS>(k_s, k, s0, T);
  stage_tile<HS>(v_s, v, s0, T);
  stage_tile<HS>(qdo_s, q, s0, T);
  stage_tile<HS>(qdo_s + G::kTileElems, dO, s0, T);
  stage_stats(stat_s, stat_s + kCols, L, D, s0, T);
  __pipeline_commit();
  FragC dk[G::kDimBlocks], dv[G::kDimBlocks];
#pragma unroll
  for (int nb = 0; nb < G::kDimBlocks; ++nb) {
    wmma::fill_fragment(dk[nb], 0.0f);
    wmma::fill_fragment(dv[nb], 0.0f);
  }

  for (int it = 0; it < n_tiles; ++it) {
    const int t0 = s0 + it * kCols;
    const int buf = kStages == 2 ? (it & 1) : 0;
    bf16* q_s = qdo_s + buf * 2 * G::kTileElems;
    bf16* do_s = q_s + G::kTileElems;
    const float* l_s = stat_s + buf * 2 * kCols;
    const float* d_s = l_s + kCols;
    if (kStages == 1 && it > 0) {  // the previous iteration's closing barrier released the buffers
      stage_tile<HS>(q_s, q, t0, T);
      stage_tile<HS>(do_s, dO, t0, T);
      stage_stats(stat_s, stat_s + kCols, L, D, t0, T);
      __pipeline_commit();
    }
    pipeline_next<kStages>(it + 1 < n_tiles, [&] {
      const int nbuf = (it + 1) & 1;  // released by the previous closing barrier
      bf16* q_n = qdo_s + nbuf * 2 * G::kTileElems;
      stage_tile<HS>(q_n, q, t0 + kCols, T);
      stage_tile<HS>(q_n + G::kTileElems, dO, t0 + kCols, T);
      stage_stats(stat_s + nbuf * 2 * kCols, stat_s + nbuf * 2 * kCols + kCols, L, D, t0 + kCols, T);
    });
    __syncthreads();  // every thread's copies are visible
    if (warp_active) {
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
    __syncthreads();  // every warp is done with q_s, do_s, l_s, d_s
  }
  if (!warp_active) return;  // warp-uniform, after the last __syncthreads
  float* dk_base = dqkv + head_base(pos.b, pos.h, T, C, HS) + C;  // (T,hs), stride 3C
  const size_t C3 = 3 * static_cast<size_t>(C);
  warp_add_rows<HS>(dk_base, C3, dk, s_w, key0, T, scale, lane);
  warp_add_rows<HS>(dk_base + C, C3, dv, dp_w, key0, T, 1.0f, lane);
}

// dQ += for the block's 64 queries (16 per warp), looping over key tiles up to the diagonal.
template <int HS>
__global__ void __launch_bounds__(kThreads)
    tc_dq_kernel(float* dqkv, const bf16* heads, size_t per_tensor, const float* lse, const float* delta, int NH,
                 int T, int C, float scale) {
  using G = Tc<HS>;
  constexpr int kStages = G::kDqStages;
  extern __shared__ __align__(128) unsigned char smem[];
  const int warp = static_cast<int>(threadIdx.x) / kWarp, lane = static_cast<int>(threadIdx.x) % kWarp;
  bf16* q_s = reinterpret_cast<bf16*>(smem);  // [64][kLdH]: the block's queries
  bf16* do_s = q_s + G::kTileElems;           // [64][kLdH]
  bf16* kv_s = do_s + G::kTileElems;          // kStages × {K, V} [64][kLdH]: a key tile
  unsigned char* mine = smem + (2 + 2 * kStages) * G::kTileBytes + warp * G::kDqWarpBytes;
  float* s_w = reinterpret_cast<float*>(mine);                  // [16][kLdS] S
  float* dp_w = reinterpret_cast<float*>(mine + G::kSBytes);    // [16][kLdS] dP
  bf16* ds_w = reinterpret_cast<bf16*>(mine + 2 * G::kSBytes);  // [16][kLdP] dS

  const BlockPos pos = block_pos(NH, T, kRows, true);
  const bf16* q = heads + static_cast<size_t>(pos.bh) * T * HS;  // (T,hs) each
  const bf16* k = q + per_tensor;
  const bf16* v = k + per_tensor;
  const bf16* dO = v + per_tensor;

  const int q0 = pos.tile * kRows;
  const int n_tiles = pos.tile + 1;  // key tiles 0 … the diagonal one (see the forward)
  const int row0 = q0 + 16 * warp;
  const bool warp_active = row0 < T;
  const int r = lane / 2, half = lane & 1;
  const int t = row0 + r;
  const float Lt = t < T ? lse[static_cast<size_t>(pos.bh) * T + t] : 0.0f;
  const float Dt = t < T ? delta[static_cast<size_t>(pos.bh) * T + t] : 0.0f;

  stage_tile<HS>(q_s, q, q0, T);
  stage_tile<HS>(do_s, dO, q0, T);
  stage_tile<HS>(kv_s, k, 0, T);
  stage_tile<HS>(kv_s + G::kTileElems, v, 0, T);
  __pipeline_commit();
  FragC dq[G::kDimBlocks];
#pragma unroll
  for (int nb = 0; nb < G::kDimBlocks; ++nb) wmma::fill_fragment(dq[nb], 0.0f);

  for (int it = 0; it < n_tiles; ++it) {
    const int k0 = it * kCols;
    bf16* k_s = kv_s + (kStages == 2 ? (it & 1) : 0) * 2 * G::kTileElems;
    bf16* v_s = k_s + G::kTileElems;
    if (kStages == 1 && it > 0) {  // the previous iteration's closing barrier released the buffer
      stage_tile<HS>(k_s, k, k0, T);
      stage_tile<HS>(v_s, v, k0, T);
      __pipeline_commit();
    }
    pipeline_next<kStages>(it + 1 < n_tiles, [&] {
      bf16* k_n = kv_s + ((it + 1) & 1) * 2 * G::kTileElems;  // released by the previous closing barrier
      stage_tile<HS>(k_n, k, k0 + kCols, T);
      stage_tile<HS>(k_n + G::kTileElems, v, k0 + kCols, T);
    });
    __syncthreads();  // every thread's copies are visible
    if (warp_active) {
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
    __syncthreads();  // every warp is done with k_s, v_s
  }
  if (!warp_active) return;
  warp_add_rows<HS>(dqkv + head_base(pos.b, pos.h, T, C, HS), 3 * static_cast<size_t>(C), dq, s_w, row0, T, scale,
                    lane);
}

template <int HS>
void forward_hs(cudaStream_t st, float* out, float* lse, const float* qkv, int B, int T, int C, int NH,
                void* workspace) {
  using G = Tc<HS>;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  const bf16* heads = attention_to_heads(st, workspace, qkv, nullptr, B, T, C, NH);
  const size_t per_tensor = static_cast<size_t>(B) * T * C;
  allow_smem(tc_forward_kernel<HS>, G::kFwdSmem);
  tc_forward_kernel<HS><<<attention_grid(B, NH, T, kRows, "bf16"), kThreads, G::kFwdSmem, st>>>(out, lse, heads, per_tensor, NH, T, C, scale);
  CUDA_CHECK_LAUNCH();
}

template <int HS>
void backward_hs(cudaStream_t st, float* dqkv, const float* delta, const float* dout, const float* qkv, const float* lse,
                 int B, int T, int C, int NH, void* workspace) {
  using G = Tc<HS>;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  const unsigned grid = attention_grid(B, NH, T, kRows, "bf16");
  const bf16* heads = attention_to_heads(st, workspace, qkv, dout, B, T, C, NH);
  const size_t per_tensor = static_cast<size_t>(B) * T * C;
  allow_smem(tc_dkdv_kernel<HS>, G::kDkdvSmem);
  tc_dkdv_kernel<HS><<<grid, kThreads, G::kDkdvSmem, st>>>(dqkv, heads, per_tensor, lse, delta, NH, T, C, scale);
  CUDA_CHECK_LAUNCH();
  allow_smem(tc_dq_kernel<HS>, G::kDqSmem);
  tc_dq_kernel<HS><<<grid, kThreads, G::kDqSmem, st>>>(dqkv, heads, per_tensor, lse, delta, NH, T, C, scale);
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

size_t attention_tc_workspace_bytes(int B, int T, int C) {
  return attention_heads_bytes(B, T, C);
}

void attention_tc_forward(cudaStream_t st, float* out, float* lse, const float* qkv, int B, int T, int C, int NH,
                          void* workspace) {
  const int hs = checked_head_size(B, T, C, NH);
  if (B == 0 || T == 0) return;
  switch (hs) {
    case 32: forward_hs<32>(st, out, lse, qkv, B, T, C, NH, workspace); break;
    case 64: forward_hs<64>(st, out, lse, qkv, B, T, C, NH, workspace); break;
    default: forward_hs<128>(st, out, lse, qkv, B, T, C, NH, workspace); break;
  }
}

void attention_tc_backward(cudaStream_t st, float* dqkv, const float* delta, const float* dout, const float* qkv,
                           const float* lse, int B, int T, int C, int NH, void* workspace) {
  const int hs = checked_head_size(B, T, C, NH);
  if (B == 0 || T == 0) return;
  switch (hs) {
    case 32: backward_hs<32>(st, dqkv, delta, dout, qkv, lse, B, T, C, NH, workspace); break;
    case 64: backward_hs<64>(st, dqkv, delta, dout, qkv, lse, B, T, C, NH, workspace); break;
    default: backward_hs<128>(st, dqkv, delta, dout, qkv, lse, B, T, C, NH, workspace); break;
  }
}

}  // namespace competelm::cuda
