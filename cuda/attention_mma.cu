// Causal flash attention with the scores in registers: FlashAttention-2 on mma.sync m16n8k16
// (bf16 operands, fp32 accumulators), operands staged with cp.async and read with ldmatrix.
// The contract is attention_mma.cuh's; attention_tc.cu (wmma, scores through shared memory)
// stays the fallback.
//
// Data: attention_to_heads (attention_prep.cu) rounds q, k, v (and dO in the backward) to bf16
// once per call into the workspace, head-major (B,NH,T,hs). Shared-memory tiles are 64 rows ×
// hs bf16 with a row stride of kLd = hs + 8 elements: the 8 row addresses of an 8×8 ldmatrix
// fall into 8 distinct 16-byte bank groups (stride ≡ 16 or 80 bytes mod 128), conflict-free.
// Rows ≥ T are zero-filled by the copies (cp.async with source size 0).
//
// Geometry (every kernel): 128 threads = 4 warps; a block owns 64 rows (queries, or keys in
// dK/dV), warp w rows 16w … 16w+15; the loop walks 64-wide tiles of columns (keys, or queries
// in dK/dV), double-buffered: iteration i issues tile i+1's copies into the other buffer as a
// cp.async group of its own (empty past the last), waits for all but the newest group, and the
// loop's closing __syncthreads releases tile i's buffer for iteration i+1's copies.
// Grid: B·NH·ceil(T/64) blocks, the tiles with the most work first.
//
//   forward: S = Q_w·K_tileᵀ (16×64 per warp: 8 n-tiles of 4 fp32 per lane), online softmax in
//     the log2 domain (x = s·scale·log2 e; row max over the 4 lanes of a quad with two
//     __shfl_xor), P rounded to bf16 straight from the accumulators into A fragments, O += P·V
//     in registers; out = O/l, lse = (m + log2 l)·ln 2.
//   dK/dV: the block's 64 keys (K_w, V_w as A fragments in registers) against query tiles from
//     the diagonal to T: Sᵀ = K_w·Qᵀ, dPᵀ = V_w·dOᵀ, Pᵀ = exp2(Sᵀ·scale·log2 e − L·log2 e),
//     dSᵀ = Pᵀ∘(dPᵀ − D); dV += Pᵀ·dO, dK += dSᵀ·Q; dqkv += (scale·dK, dV) at the end.
//   dQ: the block's 64 queries (Q_w, dO_w in registers) against key tiles up to the diagonal:
//     S, dP, P, dS as above; dQ += dS·K; dqkv += scale·dQ at the end.
// Each dqkv element is added by exactly one thread of one block: deterministic, no atomics.
//
// Causality on the diagonal tile (rows and columns from the same 64): warp w's rows 16w … +15
// see columns ≤ 16w+15 (forward, dQ: n-tiles < 2w+2, k-steps ≤ w) or ≥ 16w (dK/dV: n-tiles ≥
// 2w, k-steps ≥ w); the other products are skipped, and every element is masked by a select.
//
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type";
// lane l, g = l / 4, q = l % 4; a 32-bit register holds two bf16, the lower index in the low
// half):
//   A (16×16, row): a0 = A[g][2q, 2q+1], a1 = A[g+8][2q, 2q+1], a2 = A[g][2q+8, 2q+9],
//                   a3 = A[g+8][2q+8, 2q+9]
//   B (16×8, col):  b0 = B[2q, 2q+1][g], b1 = B[2q+8, 2q+9][g]
//   C, D (16×8):    c0, c1 = C[g][2q, 2q+1], c2, c3 = C[g+8][2q, 2q+1]
// so the C fragments of n-tiles 2j and 2j+1 (columns 16j … 16j+15) are, packed to bf16 pairs,
// exactly the A fragment (c0c1, c2c3 of 2j; c0c1, c2c3 of 2j+1) of a product over those columns.
// ldmatrix.m8n8.x4 (b16): lane l gives the address of row l % 8 of matrix l / 8 (16 contiguous
// bytes); lane l receives in register j row g, elements 2q, 2q+1 of matrix j, or with .trans
// element [2q][g] and [2q+1][g] (the matrix transposed). Hence a K or Q tile (rows = the n
// index, contiguous along k) gives B fragments with the plain form, a V, dO, Q or K tile read
// as a k × n operand (rows = k) gives them with .trans.
//
// Emulation (tests/cuda_emu, COMPETELM_CUDA_EMU): ldmatrix and mma are computed from these
// layouts on each lane's registers, exchanged across the warp with emu::warp_gather; cp.async
// becomes a plain copy (the buffers it fills are not read before the next barrier anyway).
#include "attention_mma.cuh"

#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "attention_prep.cuh"
#include "core/error.hpp"
#include "cuda_common.cuh"

namespace competelm::cuda {
namespace {

using bf16 = __nv_bfloat16;

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kWarps = 4;
constexpr int kThreads = kWarps * kWarp;
constexpr int kRows = 16 * kWarps;  // rows (queries, or keys in dK/dV) per block
constexpr int kCols = 64;           // columns (keys, or queries in dK/dV) per inner tile
constexpr int kNTiles = kCols / 8;  // 8-column mma n-tiles per column tile
constexpr int kKSteps = kCols / 16; // 16-column k-steps per column tile (the P·V products)
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
static_assert(kRows == kCols, "the diagonal tile logic assumes square tiles");
static_assert(kThreads >= 2 * kCols, "dK/dV stages L and D with one thread per value");

template <int HS>
struct Mma {
  static_assert(HS == 32 || HS == 64, "mma attention: head size 32 or 64");
  static constexpr int kLd = HS + 8;           // bf16 tile row stride (elements)
  static constexpr int kDSteps = HS / 16;      // 16-wide k-steps over the head dimension
  static constexpr int kDTiles = HS / 8;       // 8-wide n-tiles over the head dimension
  static constexpr int kTileElems = kRows * kLd;
  static constexpr size_t kTileBytes = size_t(kTileElems) * sizeof(bf16);
  static constexpr size_t kStatBytes = size_t(kCols) * sizeof(float);
  static constexpr size_t kFwdSmem = 5 * kTileBytes;                    // Q, 2 × {K, V}
  static constexpr size_t kDkdvSmem = 6 * kTileBytes + 4 * kStatBytes;  // K, V, 2 × {Q, dO}, 2 × {L, D}
  static constexpr size_t kDqSmem = 6 * kTileBytes;                     // Q, dO, 2 × {K, V}
  static_assert(kTileBytes % 16 == 0 && (kLd * sizeof(bf16)) % 16 == 0, "16-byte tile rows (cp.async, ldmatrix)");
  static_assert(kDkdvSmem <= 227 * 1024, "shared memory beyond the sm_90 opt-in limit");
};

// ---- warp-level primitives: inline PTX on the GPU, their fragment semantics in the emulator ----

// 16 bytes global → shared, asynchronous; `valid` false zero-fills them (source size 0: nothing
// is read, `src` need only be a valid address).
__device__ inline void cp_async16(void* dst, const void* src, bool valid) {
#if defined(__CUDA_ARCH__)
  const uint32_t d = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(valid ? 16 : 0) : "memory");
#else
  if (valid) std::memcpy(dst, src, 16);
  else std::memset(dst, 0, 16);
#endif
}
__device__ inline void cp_async_commit() {
#if defined(__CUDA_ARCH__)
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
// Waits until at most n of this thread's committed groups are still in flight.
template <int N>
__device__ inline void cp_async_wait() {
#if defined(__CUDA_ARCH__)
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

#if defined(COMPETELM_CUDA_EMU) && !defined(__CUDA_ARCH__)
__device__ inline float bf16_lo(uint32_t r) { return __bfloat162float(__ushort_as_bfloat16(static_cast<unsigned short>(r & 0xffffu))); }
__device__ inline float bf16_hi(uint32_t r) { return __bfloat162float(__ushort_as_bfloat16(static_cast<unsigned short>(r >> 16))); }
#endif

// r[j] ← matrix j of an ldmatrix.x4 (layouts in the header comment); `row`: this lane's row
// address (shared memory, 16-byte aligned). kTrans: the .trans form.
template <bool kTrans>
__device__ inline void ldmatrix_x4(uint32_t (&r)[4], const bf16* row) {
#if defined(__CUDA_ARCH__)
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(row));
  if constexpr (kTrans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
#elif defined(COMPETELM_CUDA_EMU)
  const bf16* rows[kWarp];
  emu::warp_gather(&row, rows, sizeof row);
  const int lane = static_cast<int>(threadIdx.x) % kWarp, g = lane / 4, q = lane % 4;
  for (int j = 0; j < 4; ++j) {
    uint16_t lo, hi;
    if constexpr (kTrans) {
      lo = __bfloat16_as_ushort(rows[8 * j + 2 * q][g]);
      hi = __bfloat16_as_ushort(rows[8 * j + 2 * q + 1][g]);
    } else {
      lo = __bfloat16_as_ushort(rows[8 * j + g][2 * q]);
      hi = __bfloat16_as_ushort(rows[8 * j + g][2 * q + 1]);
    }
    r[j] = static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
  }
#else
  (void)row;  // nvcc's host pass: device code only
  r[0] = r[1] = r[2] = r[3] = 0u;
#endif
}

// d += A·B for one m16n8k16 (bf16 A row-major, B col-major, fp32 C = D); layouts in the header.
__device__ inline void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__)
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#elif defined(COMPETELM_CUDA_EMU)
  struct Frag {
    uint32_t a[4], b[2];
  };
  const Frag mine{{a[0], a[1], a[2], a[3]}, {b0, b1}};
  Frag all[kWarp];
  emu::warp_gather(&mine, all, sizeof mine);
  const int lane = static_cast<int>(threadIdx.x) % kWarp, g = lane / 4, q = lane % 4;
  // A[row][k]: lane 4·(row % 8) + (k % 8) / 2, register (row ≥ 8) + 2·(k ≥ 8), half k % 2.
  const auto A = [&](int row, int k) {
    const uint32_t r = all[4 * (row % 8) + (k % 8) / 2].a[(row >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0)];
    return k % 2 ? bf16_hi(r) : bf16_lo(r);
  };
  // B[k][n]: lane 4·n + (k % 8) / 2, register k ≥ 8, half k % 2.
  const auto B = [&](int k, int n) {
    const uint32_t r = all[4 * n + (k % 8) / 2].b[k >= 8 ? 1 : 0];
    return k % 2 ? bf16_hi(r) : bf16_lo(r);
  };
  for (int i = 0; i < 4; ++i) {
    const int row = g + 8 * (i / 2), col = 2 * q + i % 2;
    double acc = d[i];  // bf16 products are exact; one rounding at the end
    for (int k = 0; k < 16; ++k) acc += double(A(row, k)) * double(B(k, col));
    d[i] = static_cast<float>(acc);
  }
#else
  (void)a;  // nvcc's host pass: device code only
  (void)b0;
  (void)b1;
  (void)d;
#endif
}

// Two floats rounded to bf16 (nearest even) in one register, `lo` in the low half: one
// cvt.rn.bf16x2.f32 on the GPU, attention_prep.cuh's pack_bf16 (same values) elsewhere.
__device__ inline uint32_t pack2(float lo, float hi) {
#if defined(__CUDA_ARCH__)
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
#else
  return pack_bf16(lo, hi);
#endif
}

// ---- tiles ----

// Issues the copies of rows r0 … r0+63 of a head-major bf16 (T, HS) matrix into a [64][kLd]
// tile (rows ≥ T zero-filled; the source address clamped to row 0, valid as T ≥ 1). The caller
// commits and waits.
template <int HS>
__device__ inline void stage_tile(bf16* dst, const bf16* src, int r0, int T) {
  constexpr int kChunks = HS / 8;  // 16-byte chunks per row
  for (int i = static_cast<int>(threadIdx.x); i < kRows * kChunks; i += kThreads) {
    const int r = i / kChunks, c = (i % kChunks) * 8, row = r0 + r;
    const bool in = row < T;
    cp_async16(dst + r * Mma<HS>::kLd + c, src + static_cast<size_t>(in ? row : 0) * HS + c, in);
  }
}

// This lane's ldmatrix row address for a 16×16 block at (row0, col0) of a [.][kLd] tile, in the
// order of the x4 matrices named: `a_order` (A fragments, or .trans B pairs over rows):
// matrices (rows 0-7, cols 0-7), (rows 8-15, cols 0-7), (rows 0-7, cols 8-15), (rows 8-15, cols
// 8-15); otherwise (B pairs from n-major rows): (rows 0-7, cols 0-7), (rows 0-7, cols 8-15),
// (rows 8-15, cols 0-7), (rows 8-15, cols 8-15).
template <int HS, bool kAOrder>
__device__ inline const bf16* frag_row(const bf16* tile, int row0, int col0, int lane) {
  const int m = lane / 8;  // the matrix this lane addresses
  const int row = row0 + lane % 8 + (kAOrder ? (m % 2) * 8 : (m / 2) * 8);
  const int col = col0 + (kAOrder ? (m / 2) * 8 : (m % 2) * 8);
  return tile + row * Mma<HS>::kLd + col;
}

// acc[nt] += Arows (kDSteps A fragments: 16 rows × HS) · Tileᵀ for the n-tiles nt ∈ [nt_lo,
// nt_hi) (both even) of a [64][kLd] tile whose rows are the n index (K, Q, dO, V as n × HS).
template <int HS>
__device__ inline void gemm_abt(float (&acc)[kNTiles][4], const uint32_t (&a)[Mma<HS>::kDSteps][4], const bf16* tile,
                                int nt_lo, int nt_hi, int lane) {
#pragma unroll
  for (int kk = 0; kk < Mma<HS>::kDSteps; ++kk) {
#pragma unroll
    for (int np = 0; np < kNTiles / 2; ++np) {
      if (2 * np < nt_lo || 2 * np >= nt_hi) continue;
      uint32_t b[4];
      ldmatrix_x4<false>(b, frag_row<HS, false>(tile, 16 * np, 16 * kk, lane));
      mma_bf16(acc[2 * np], a[kk], b[0], b[1]);
      mma_bf16(acc[2 * np + 1], a[kk], b[2], b[3]);
    }
  }
}

// acc[dt] (16 × HS) += P · Tile over the k-steps ks ∈ [ks_lo, ks_hi) (16 tile rows each), P
// the 16×64 C fragments `p` rounded to bf16 (rows of the tile: the k index).
template <int HS>
__device__ inline void gemm_pv(float (&acc)[Mma<HS>::kDTiles][4], const float (&p)[kNTiles][4], const bf16* tile,
                               int ks_lo, int ks_hi, int lane) {
#pragma unroll
  for (int ks = 0; ks < kKSteps; ++ks) {
    if (ks < ks_lo || ks >= ks_hi) continue;
    const uint32_t a[4] = {pack2(p[2 * ks][0], p[2 * ks][1]), pack2(p[2 * ks][2], p[2 * ks][3]),
                           pack2(p[2 * ks + 1][0], p[2 * ks + 1][1]), pack2(p[2 * ks + 1][2], p[2 * ks + 1][3])};
#pragma unroll
    for (int dp = 0; dp < Mma<HS>::kDTiles / 2; ++dp) {
      uint32_t b[4];
      ldmatrix_x4<true>(b, frag_row<HS, true>(tile, 16 * ks, 16 * dp, lane));
      mma_bf16(acc[2 * dp], a, b[0], b[1]);
      mma_bf16(acc[2 * dp + 1], a, b[2], b[3]);
    }
  }
}

// The A fragments of a warp's 16 rows (row0 …) × HS of a [64][kLd] tile.
template <int HS>
__device__ inline void load_a(uint32_t (&a)[Mma<HS>::kDSteps][4], const bf16* tile, int row0, int lane) {
#pragma unroll
  for (int kk = 0; kk < Mma<HS>::kDSteps; ++kk) ldmatrix_x4<false>(a[kk], frag_row<HS, true>(tile, row0, 16 * kk, lane));
}

template <int N>
__device__ inline void zero(float (&x)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i) x[i][0] = x[i][1] = x[i][2] = x[i][3] = 0.0f;
}

// dst[row][8·dt + 2q + j] += mul · acc[dt][2·hh + j] for this lane's rows row0 + g + 8·hh < T
// (row stride `stride` floats).
template <int HS>
__device__ inline void add_rows(float* dst, size_t stride, const float (&acc)[Mma<HS>::kDTiles][4], int row0, int T,
                                float mul, int lane) {
  const int g = lane / 4, q = lane % 4;
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    const int row = row0 + g + 8 * hh;
    if (row >= T) continue;
    float* d = dst + static_cast<size_t>(row) * stride + 2 * q;
#pragma unroll
    for (int dt = 0; dt < Mma<HS>::kDTiles; ++dt) {
      d[8 * dt] += mul * acc[dt][2 * hh];
      d[8 * dt + 1] += mul * acc[dt][2 * hh + 1];
    }
  }
}

// ---- kernels ----

// Forward: out = softmax(S)·V and lse for the block's 64 queries. heads: the workspace's
// head-major bf16 q, k, v (per_tensor elements apart). scale_log2 = scale · log2 e.
template <int HS>
__global__ void __launch_bounds__(kThreads)
    mma_forward_kernel(float* out, float* lse, const bf16* heads, size_t per_tensor, int NH, int T, int C,
                       float scale_log2) {
  using G = Mma<HS>;
  extern __shared__ uint4 smem_fwd[];
  const int warp = static_cast<int>(threadIdx.x) / kWarp, lane = static_cast<int>(threadIdx.x) % kWarp;
  const int g = lane / 4, q4 = lane % 4;
  bf16* q_s = reinterpret_cast<bf16*>(smem_fwd);  // [64][kLd] the block's queries
  bf16* kv_s = q_s + G::kTileElems;                // 2 × {K, V} [64][kLd]

  const BlockPos pos = block_pos(NH, T, kRows, true);
  const bf16* q = heads + static_cast<size_t>(pos.bh) * T * HS;  // (T,hs) each
  const bf16* k = q + per_tensor;
  const bf16* v = k + per_tensor;
  const int q0 = pos.tile * kRows;
  const int n_tiles = pos.tile + 1;    // key tiles 0 … the diagonal one (k0 = q0)
  const int row0 = q0 + 16 * warp;     // the warp's first query
  const bool warp_active = row0 < T;   // warp-uniform

  stage_tile<HS>(q_s, q, q0, T);
  stage_tile<HS>(kv_s, k, 0, T);
  stage_tile<HS>(kv_s + G::kTileElems, v, 0, T);
  cp_async_commit();

  uint32_t qf[G::kDSteps][4] = {};  // loaded on the first tile
  float o[G::kDTiles][4];
  zero(o);
  // Rows row0 + g (hh = 0) and row0 + g + 8 (hh = 1): running max (log2 units) and this lane's
  // partial sum (its columns only; the quad's sum at the end).
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};

  for (int it = 0; it < n_tiles; ++it) {
    const int k0 = it * kCols;
    const bf16* k_s = kv_s + (it & 1) * 2 * G::kTileElems;
    const bf16* v_s = k_s + G::kTileElems;
    if (it + 1 < n_tiles) {  // buffer (it+1)&1: released by the previous iteration's closing barrier
      bf16* k_n = kv_s + ((it + 1) & 1) * 2 * G::kTileElems;
      stage_tile<HS>(k_n, k, k0 + kCols, T);
      stage_tile<HS>(k_n + G::kTileElems, v, k0 + kCols, T);
    }
    cp_async_commit();   // possibly empty: the newest group is always the next tile's
    cp_async_wait<1>();  // everything before it (Q and the current tile) has landed
    __syncthreads();     // … for every thread's copies
    if (warp_active) {
      if (it == 0) load_a<HS>(qf, q_s, 16 * warp, lane);
      const bool diag = it + 1 == n_tiles;
      const int nt_hi = diag ? 2 * warp + 2 : kNTiles;  // n-tiles holding a key ≤ the warp's last query
      float s[kNTiles][4];
      zero(s);
      gemm_abt<HS>(s, qf, k_s, 0, nt_hi, lane);

      // Online softmax: x = s·scale·log2 e, masked (key > query) to −inf.
      float mx[2] = {m[0], m[1]};
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = k0 + 8 * nt + 2 * q4 + (e & 1), row = row0 + g + 8 * (e / 2);
          s[nt][e] = key <= row ? s[nt][e] * scale_log2 : -INFINITY;
          mx[e / 2] = fmaxf(mx[e / 2], s[nt][e]);
        }
      float alpha[2];
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        mx[hh] = fmaxf(mx[hh], __shfl_xor_sync(kFullMask, mx[hh], 1));
        mx[hh] = fmaxf(mx[hh], __shfl_xor_sync(kFullMask, mx[hh], 2));
        // finite: key k0 ≤ q0 ≤ every row of the block. exp2(−inf) = 0 on the first tile.
        alpha[hh] = exp2f(m[hh] - mx[hh]);
        m[hh] = mx[hh];
        l[hh] *= alpha[hh];
      }
#pragma unroll
      for (int dt = 0; dt < G::kDTiles; ++dt)
#pragma unroll
        for (int e = 0; e < 4; ++e) o[dt][e] *= alpha[e / 2];
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float p = exp2f(s[nt][e] - m[e / 2]);  // 0 where masked
          l[e / 2] += p;
          s[nt][e] = p;
        }
      gemm_pv<HS>(o, s, v_s, 0, diag ? warp + 1 : kKSteps, lane);  // O += P·V (k-steps past the diagonal: P = 0)
    }
    __syncthreads();  // every warp is done with k_s, v_s
  }
  if (!warp_active) return;  // warp-uniform, after the last __syncthreads
  float* o_base = out + static_cast<size_t>(pos.b) * T * C + static_cast<size_t>(pos.h) * HS;  // (T,hs), stride C
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    l[hh] += __shfl_xor_sync(kFullMask, l[hh], 1);
    l[hh] += __shfl_xor_sync(kFullMask, l[hh], 2);
    const int row = row0 + g + 8 * hh;
    if (row >= T) continue;
    const float inv = 1.0f / l[hh];  // l ≥ 1: the row's max contributes exp2(0)
    float* d = o_base + static_cast<size_t>(row) * C + 2 * q4;
#pragma unroll
    for (int dt = 0; dt < G::kDTiles; ++dt) {
      d[8 * dt] = o[dt][2 * hh] * inv;
      d[8 * dt + 1] = o[dt][2 * hh + 1] * inv;
    }
    if (q4 == 0) lse[static_cast<size_t>(pos.bh) * T + row] = m[hh] * kLn2 + logf(l[hh]);
  }
}

// The 64 values L·log2 e (lse) and D (delta) of queries t0 … t0+63 (0 beyond T) into
// l2_dst, d_dst: one value per thread of the first 128 (plain stores; read after a barrier).
__device__ inline void stage_stats(float* l2_dst, float* d_dst, const float* L, const float* D, int t0, int T) {
  const int i = static_cast<int>(threadIdx.x);
  if (i >= 2 * kCols) return;
  const int c = i % kCols, t = t0 + c;
  if (i < kCols) l2_dst[c] = t < T ? L[t] * kLog2e : 0.0f;
  else d_dst[c] = t < T ? D[t] : 0.0f;
}

// dK, dV += for the block's 64 keys (16 per warp), over query tiles from the diagonal to T.
template <int HS>
__global__ void __launch_bounds__(kThreads)
    mma_dkdv_kernel(float* dqkv, const bf16* heads, size_t per_tensor, const float* lse, const float* delta, int NH,
                    int T, int C, float scale, float scale_log2) {
  using G = Mma<HS>;
  extern __shared__ uint4 smem_dkdv[];
  const int warp = static_cast<int>(threadIdx.x) / kWarp, lane = static_cast<int>(threadIdx.x) % kWarp;
  const int g = lane / 4, q4 = lane % 4;
  bf16* k_s = reinterpret_cast<bf16*>(smem_dkdv);  // [64][kLd] the block's keys
  bf16* v_s = k_s + G::kTileElems;                  // [64][kLd]
  bf16* qdo_s = v_s + G::kTileElems;                // 2 × {Q, dO} [64][kLd]
  float* stat_s = reinterpret_cast<float*>(qdo_s + 4 * G::kTileElems);  // 2 × {L·log2 e, D} [64]

  const BlockPos pos = block_pos(NH, T, kRows, false);
  const bf16* q = heads + static_cast<size_t>(pos.bh) * T * HS;  // (T,hs) each
  const bf16* k = q + per_tensor;
  const bf16* v = k + per_tensor;
  const bf16* dO = v + per_tensor;
  const float* L = lse + static_cast<size_t>(pos.bh) * T;
  const float* D = delta + static_cast<size_t>(pos.bh) * T;
  const int s0 = pos.tile * kRows;                             // the block's first key
  const int n_tiles = (T + kCols - 1) / kCols - pos.tile;      // query tiles s0, s0 + 64, … < T
  const int key0 = s0 + 16 * warp;                             // the warp's first key
  const bool warp_active = key0 < T;                           // warp-uniform

  stage_tile<HS>(k_s, k, s0, T);
  stage_tile<HS>(v_s, v, s0, T);
  stage_tile<HS>(qdo_s, q, s0, T);
  stage_tile<HS>(qdo_s + G::kTileElems, dO, s0, T);
  cp_async_commit();
  stage_stats(stat_s, stat_s + kCols, L, D, s0, T);

  uint32_t kf[G::kDSteps][4] = {}, vf[G::kDSteps][4] = {};  // loaded on the first tile
  float dk[G::kDTiles][4], dv[G::kDTiles][4];
  zero(dk);
  zero(dv);

  for (int it = 0; it < n_tiles; ++it) {
    const int t0 = s0 + it * kCols;
    const int buf = it & 1;
    const bf16* q_s = qdo_s + buf * 2 * G::kTileElems;
    const bf16* do_s = q_s + G::kTileElems;
    const float* l2_s = stat_s + buf * 2 * kCols;
    const float* d_s = l2_s + kCols;
    if (it + 1 < n_tiles) {  // buffer buf^1: released by the previous iteration's closing barrier
      bf16* q_n = qdo_s + (buf ^ 1) * 2 * G::kTileElems;
      stage_tile<HS>(q_n, q, t0 + kCols, T);
      stage_tile<HS>(q_n + G::kTileElems, dO, t0 + kCols, T);
      stage_stats(stat_s + (buf ^ 1) * 2 * kCols, stat_s + (buf ^ 1) * 2 * kCols + kCols, L, D, t0 + kCols, T);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    if (warp_active) {
      if (it == 0) {
        load_a<HS>(kf, k_s, 16 * warp, lane);
        load_a<HS>(vf, v_s, 16 * warp, lane);
      }
      // On the diagonal tile (t0 = s0) query n-tiles < 2w hold only queries < the warp's first key.
      const int nt_lo = it == 0 ? 2 * warp : 0;
      float st[kNTiles][4], dpt[kNTiles][4];  // Sᵀ, dPᵀ: rows = the warp's keys, columns = queries
      zero(st);
      zero(dpt);
      gemm_abt<HS>(st, kf, q_s, nt_lo, kNTiles, lane);
      gemm_abt<HS>(dpt, vf, do_s, nt_lo, kNTiles, lane);
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int c = 8 * nt + 2 * q4 + (e & 1), tq = t0 + c, key = key0 + g + 8 * (e / 2);
          const bool seen = tq >= key && tq < T;
          const float p = seen ? exp2f(st[nt][e] * scale_log2 - l2_s[c]) : 0.0f;
          dpt[nt][e] = seen ? p * (dpt[nt][e] - d_s[c]) : 0.0f;
          st[nt][e] = p;
        }
      const int ks_lo = it == 0 ? warp : 0;
      gemm_pv<HS>(dv, st, do_s, ks_lo, kKSteps, lane);   // dV += Pᵀ·dO
      gemm_pv<HS>(dk, dpt, q_s, ks_lo, kKSteps, lane);   // dK += dSᵀ·Q
    }
    __syncthreads();  // every warp is done with q_s, do_s, l2_s, d_s
  }
  if (!warp_active) return;
  float* dk_base = dqkv + head_base(pos.b, pos.h, T, C, HS) + C;  // (T,hs), stride 3C
  const size_t C3 = 3 * static_cast<size_t>(C);
  add_rows<HS>(dk_base, C3, dk, key0, T, scale, lane);
  add_rows<HS>(dk_base + C, C3, dv, key0, T, 1.0f, lane);
}

// dQ += for the block's 64 queries (16 per warp), over key tiles up to the diagonal.
template <int HS>
__global__ void __launch_bounds__(kThreads)
    mma_dq_kernel(float* dqkv, const bf16* heads, size_t per_tensor, const float* lse, const float* delta, int NH,
                  int T, int C, float scale, float scale_log2) {
  using G = Mma<HS>;
  extern __shared__ uint4 smem_dq[];
  const int warp = static_cast<int>(threadIdx.x) / kWarp, lane = static_cast<int>(threadIdx.x) % kWarp;
  const int g = lane / 4, q4 = lane % 4;
  bf16* q_s = reinterpret_cast<bf16*>(smem_dq);  // [64][kLd] the block's queries
  bf16* do_s = q_s + G::kTileElems;               // [64][kLd]
  bf16* kv_s = do_s + G::kTileElems;              // 2 × {K, V} [64][kLd]

  const BlockPos pos = block_pos(NH, T, kRows, true);
  const bf16* q = heads + static_cast<size_t>(pos.bh) * T * HS;  // (T,hs) each
  const bf16* k = q + per_tensor;
  const bf16* v = k + per_tensor;
  const bf16* dO = v + per_tensor;
  const int q0 = pos.tile * kRows;
  const int n_tiles = pos.tile + 1;
  const int row0 = q0 + 16 * warp;
  const bool warp_active = row0 < T;
  float l2[2], dr[2];  // L·log2 e and D of rows row0 + g + 8·hh
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    const int row = row0 + g + 8 * hh;
    l2[hh] = row < T ? lse[static_cast<size_t>(pos.bh) * T + row] * kLog2e : 0.0f;
    dr[hh] = row < T ? delta[static_cast<size_t>(pos.bh) * T + row] : 0.0f;
  }

  stage_tile<HS>(q_s, q, q0, T);
  stage_tile<HS>(do_s, dO, q0, T);
  stage_tile<HS>(kv_s, k, 0, T);
  stage_tile<HS>(kv_s + G::kTileElems, v, 0, T);
  cp_async_commit();

  uint32_t qf[G::kDSteps][4] = {}, df[G::kDSteps][4] = {};  // loaded on the first tile
  float dq[G::kDTiles][4];
  zero(dq);

  for (int it = 0; it < n_tiles; ++it) {
    const int k0 = it * kCols;
    const bf16* k_s = kv_s + (it & 1) * 2 * G::kTileElems;
    const bf16* v_s = k_s + G::kTileElems;
    if (it + 1 < n_tiles) {
      bf16* k_n = kv_s + ((it + 1) & 1) * 2 * G::kTileElems;
      stage_tile<HS>(k_n, k, k0 + kCols, T);
      stage_tile<HS>(k_n + G::kTileElems, v, k0 + kCols, T);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    if (warp_active) {
      if (it == 0) {
        load_a<HS>(qf, q_s, 16 * warp, lane);
        load_a<HS>(df, do_s, 16 * warp, lane);
      }
      const bool diag = it + 1 == n_tiles;
      const int nt_hi = diag ? 2 * warp + 2 : kNTiles;
      float s[kNTiles][4], dp[kNTiles][4];
      zero(s);
      zero(dp);
      gemm_abt<HS>(s, qf, k_s, 0, nt_hi, lane);   // S = Q_w·Kᵀ
      gemm_abt<HS>(dp, df, v_s, 0, nt_hi, lane);  // dP = dO_w·Vᵀ
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = k0 + 8 * nt + 2 * q4 + (e & 1), row = row0 + g + 8 * (e / 2);
          const bool seen = key <= row;
          const float p = seen ? exp2f(s[nt][e] * scale_log2 - l2[e / 2]) : 0.0f;
          dp[nt][e] = seen ? p * (dp[nt][e] - dr[e / 2]) : 0.0f;
        }
      gemm_pv<HS>(dq, dp, k_s, 0, diag ? warp + 1 : kKSteps, lane);  // dQ += dS·K
    }
    __syncthreads();  // every warp is done with k_s, v_s
  }
  if (!warp_active) return;
  add_rows<HS>(dqkv + head_base(pos.b, pos.h, T, C, HS), 3 * static_cast<size_t>(C), dq, row0, T, scale, lane);
}

// ---- host side ----

template <int HS>
void forward_hs(cudaStream_t st, float* out, float* lse, const float* qkv, int B, int T, int C, int NH,
                void* workspace) {
  using G = Mma<HS>;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  const bf16* heads = attention_to_heads(st, workspace, qkv, nullptr, B, T, C, NH);
  const size_t per_tensor = static_cast<size_t>(B) * T * C;
  allow_smem(mma_forward_kernel<HS>, G::kFwdSmem);
  mma_forward_kernel<HS><<<attention_grid(B, NH, T, kRows, "mma"), kThreads, G::kFwdSmem, st>>>(out, lse, heads, per_tensor, NH, T, C, scale * kLog2e);
  CUDA_CHECK_LAUNCH();
}

template <int HS>
void backward_hs(cudaStream_t st, float* dqkv, const float* delta, const float* dout, const float* qkv,
                 const float* lse, int B, int T, int C, int NH, void* workspace) {
  using G = Mma<HS>;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  const unsigned grid = attention_grid(B, NH, T, kRows, "mma");
  const bf16* heads = attention_to_heads(st, workspace, qkv, dout, B, T, C, NH);
  const size_t per_tensor = static_cast<size_t>(B) * T * C;
  allow_smem(mma_dkdv_kernel<HS>, G::kDkdvSmem);
  mma_dkdv_kernel<HS><<<grid, kThreads, G::kDkdvSmem, st>>>(dqkv, heads, per_tensor, lse, delta, NH, T, C, scale, scale * kLog2e);
  CUDA_CHECK_LAUNCH();
  allow_smem(mma_dq_kernel<HS>, G::kDqSmem);
  mma_dq_kernel<HS><<<grid, kThreads, G::kDqSmem, st>>>(dqkv, heads, per_tensor, lse, delta, NH, T, C, scale, scale * kLog2e);
  CUDA_CHECK_LAUNCH();
}

int checked_head_size(int B, int T, int C, int NH) {
  if (B < 0 || T < 0 || NH <= 0 || C <= 0 || C % NH != 0)
    fail("cuda attention (mma): invalid shape B={} T={} C={} NH={} (C must be a positive multiple of NH)", B, T, C,
         NH);
  const int hs = C / NH;
  if (!attention_mma_supported(hs)) fail("cuda attention (mma): head size C/NH = {} has no mma kernel (32, 64)", hs);
  return hs;
}

}  // namespace

bool attention_mma_supported(int hs) { return hs == 32 || hs == 64; }

void attention_mma_forward(cudaStream_t st, float* out, float* lse, const float* qkv, int B, int T, int C, int NH,
                           void* workspace) {
  const int hs = checked_head_size(B, T, C, NH);
  if (B == 0 || T == 0) return;
  if (hs == 32) forward_hs<32>(st, out, lse, qkv, B, T, C, NH, workspace);
  else forward_hs<64>(st, out, lse, qkv, B, T, C, NH, workspace);
}

void attention_mma_backward(cudaStream_t st, float* dqkv, const float* delta, const float* dout, const float* qkv,
                            const float* lse, int B, int T, int C, int NH, void* workspace) {
  const int hs = checked_head_size(B, T, C, NH);
  if (B == 0 || T == 0) return;
  if (hs == 32) backward_hs<32>(st, dqkv, delta, dout, qkv, lse, B, T, C, NH, workspace);
  else backward_hs<64>(st, dqkv, delta, dout, qkv, lse, B, T, C, NH, workspace);
}

}  // namespace competelm::cuda
