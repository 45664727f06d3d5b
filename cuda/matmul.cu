// Linear layers through cuBLASLt. Precision (CudaBackend::set_precision): fp32 = exact fp32
// GEMMs; tf32 = fp32 data, TF32 tensor-core compute; bf16 = both operands copied to packed
// bf16 scratch (round to nearest even) and multiplied on the tensor cores with fp32
// accumulation into the fp32 output. Parameters, activations and gradients stay fp32 in
// memory, so the fp32 master weights are exact and only the products see bf16 operands; the
// copies cost one read of each fp32 operand per GEMM, small next to the GEMM itself. A weight
// inside the persistent bf16 parameter copy (param_copy.cu; written once per optimizer step
// with stochastic rounding) is read from there instead, when that copy is switched on and valid.
//
// Row-major ↔ column-major. cuBLASLt is column-major: a row-major (R, K) array with row
// stride K is, byte for byte, the column-major (K, R) matrix with leading dimension K, i.e.
// its transpose. So every row-major product is computed as its transpose:
//
//   forward   out (N,OC) = inp (N,C) · Wᵀ          ⇔  outᵀ (OC,N) = W · inpᵀ
//             A = W    seen as col-major (C,OC) ld C, op = T  → (OC,C)    m = OC
//             B = inp  seen as col-major (C,N)  ld C, op = N  → (C,N)     n = N, k = C
//             D = out  seen as col-major (OC,N) ld OC; bias (OC) = one per row of D
//   dinp     dinp (N,C) += dout (N,OC) · W (OC,C)  ⇔  dinpᵀ (C,N) += Wᵀ · doutᵀ
//             A = W    col-major (C,OC) ld C,  op = N          m = C
//             B = dout col-major (OC,N) ld OC, op = N          n = N, k = OC
//             D = dinp col-major (C,N)  ld C, beta = 1 (GradMode::overwrite: beta = 0, and
//             cuBLASLt then never reads C = dinp: no zero-fill pass before, no read of it)
//   dweight  dW (OC,C) += doutᵀ (OC,N) · inp (N,C) ⇔  dWᵀ (C,OC) += inpᵀ · dout
//             A = inp  col-major (C,N)  ld C,  op = N          m = C
//             B = dout col-major (OC,N) ld OC, op = T → (N,OC) n = OC, k = N
//             D = dW   col-major (C,OC) ld C, beta = 1
//
// Determinism: the algorithm for a configuration (shapes, pointer alignments, precision) is chosen
// once and cached, and the workspace size is fixed; cuBLASLt's split-K reduction schemes add
// partial results in a fixed order (workspace or counter-serialised in place), so the same
// call gives the same bits every time. dbias is a two-stage column sum (no atomics).
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "cuda_backend.cuh"
#include "cuda_common.cuh"
#include "matmul_cache.cuh"

namespace competelm::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kRowsPerChunk = 32;  // rows per partial column sum of dbias

// The largest power of two (4..256) dividing the address: cuBLASLt picks kernels by it.
int64_t alignment_of(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  int64_t al = 256;
  while (al > 4 && a % uintptr_t(al) != 0) al /= 2;
  return al;
}

template <typename T>
void set_desc(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr, const T& value) {
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d, attr, &value, sizeof(value)));
}
template <typename T>
void set_pref(cublasLtMatmulPreference_t p, cublasLtMatmulPreferenceAttributes_t attr, const T& value) {
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(p, attr, &value, sizeof(value)));
}

// dst (rows, cols) packed column-major bf16 = src (rows, cols; leading dimension ld) rounded
// to nearest even. The common case ld = rows is one flat pass, two elements per thread.
__global__ void to_bf16_flat_kernel(__nv_bfloat16* dst, const float* src, size_t n) {
  const size_t pairs = n / 2;
  const auto* src2 = reinterpret_cast<const float2*>(src);
  auto* dst2 = reinterpret_cast<__nv_bfloat162*>(dst);
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < pairs; i += size_t(gridDim.x) * blockDim.x)
    dst2[i] = __float22bfloat162_rn(src2[i]);
  if (blockIdx.x == 0 && threadIdx.x == 0 && n % 2 == 1) dst[n - 1] = __float2bfloat16_rn(src[n - 1]);
}
__global__ void to_bf16_strided_kernel(__nv_bfloat16* dst, const float* src, int rows, int cols, int ld) {
  const size_t n = size_t(rows) * cols;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const size_t c = i / size_t(rows), r = i % size_t(rows);
    dst[i] = __float2bfloat16_rn(src[c * size_t(ld) + r]);
  }
}

// The bf16 copy of a column-major fp32 operand (rows, cols; ld) into scratch slot `slot`:
// packed, leading dimension = rows.
const __nv_bfloat16* to_bf16(CudaBackend& be, const float* src, int rows, int cols, int ld, int slot) {
  const size_t n = size_t(rows) * cols;
  auto* dst = static_cast<__nv_bfloat16*>(be.scratch(std::max<size_t>(n, 1) * sizeof(__nv_bfloat16), slot));
  const unsigned grid = std::min<unsigned>(blocks_for(n, kThreads), 1u << 16);
  if (ld == rows && reinterpret_cast<uintptr_t>(src) % 8 == 0)
    to_bf16_flat_kernel<<<grid, kThreads, 0, be.stream()>>>(dst, src, n);
  else
    to_bf16_strided_kernel<<<grid, kThreads, 0, be.stream()>>>(dst, src, rows, cols, ld);
  CUDA_CHECK_LAUNCH();
  return dst;
}

// out[i, o] = bias[o] (or 0 without a bias), i < N: the start of out = bias + inp·Wᵀ when the
// bias cannot go through the epilogue.
__global__ void broadcast_rows_kernel(float* out, const float* bias, int N, int OC) {
  const size_t n = size_t(N) * OC;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    out[i] = bias ? bias[i % OC] : 0.0f;
}

// Grid (chunks, ceil(OC / kThreads)): partial[k, o] = Σ_{rows r of chunk k, in order} dout[r, o].
__global__ void column_partials_kernel(float* partial, const float* dout, int N, int OC) {
  const int o = blockIdx.y * blockDim.x + threadIdx.x;
  if (o >= OC) return;
  const int k = blockIdx.x;
  const int r0 = k * kRowsPerChunk, r1 = min(N, r0 + kRowsPerChunk);
  float s = 0.0f;
  for (int r = r0; r < r1; ++r) s += dout[size_t(r) * OC + o];
  partial[size_t(k) * OC + o] = s;
}

// dbias[o] += Σ_k partial[k, o], k in increasing order.
__global__ void column_reduce_kernel(float* dbias, const float* partial, int chunks, int OC) {
  const int o = blockIdx.x * blockDim.x + threadIdx.x;
  if (o >= OC) return;
  float s = 0.0f;
  for (int k = 0; k < chunks; ++k) s += partial[size_t(k) * OC + o];
  dbias[o] += s;
}

// A GEMM's token dimension (N in the linear layers: the rows of an MoE expert's batch) changes
// every step in the MoE layers. cuBLASLt's heuristic query costs far more than a small GEMM, so
// plans are keyed by the token count rounded up to a bucket (4 per octave, at least 64); the
// algorithm chosen for the bucket's largest shape runs every shape in it (the layouts are
// rebuilt per call for the exact shape). Keys stay few, so the cache stays small in long runs,
// and the algorithm for a shape never depends on which shapes came first: deterministic.
int token_bucket(int x) {
  if (x <= 64) return 64;
  int octave = 1;
  while (octave < x) octave *= 2;  // the power of two ≥ x; buckets are octave/8 wide below it
  const int step = octave / 8;
  return (x + step - 1) / step * step;
}

// Matrix layouts of one call, created for its exact shape and destroyed with it.
struct CallLayouts {
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  ~CallLayouts() {
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (d) cublasLtMatrixLayoutDestroy(d);
  }
};

}  // namespace

bool gate_enabled(bool verified, const char* env) {
  const char* v = std::getenv(env);
  if (v != nullptr && std::strcmp(v, "0") == 0) return false;
  if (v != nullptr && std::strcmp(v, "1") == 0) return true;
  return verified;
}

bool gemm_epilogues_requested() {
  return gate_enabled(kGemmEpilogueVerified, "COMPETELM_GEMM_EPILOGUES");
}

bool dgelu_epilogue_requested() {
  return gate_enabled(kDgeluEpilogueVerified, "COMPETELM_DGELU_EPILOGUE");
}

bool CudaBackend::gemm(bool trans_a, bool trans_b, int m, int n, int k, const float* A, int lda, const float* B,
                       int ldb, float* D, int ldd, float beta, const float* bias, GemmTokens tokens, float* gelu_aux,
                       const float* dgelu_aux) {
  if (gelu_aux && !bias) fail("cuda backend: the GELU_AUX_BIAS GEMM epilogue needs a bias");
  if (dgelu_aux && (bias || gelu_aux || beta != 0.0f))
    fail("cuda backend: the DGELU GEMM epilogue takes no bias, no GELU aux output and beta 0");
  // The epilogue's aux matrix (either kind), laid out as D; its absence of an algorithm is not fatal.
  const void* aux = gelu_aux ? static_cast<const void*>(gelu_aux) : static_cast<const void*>(dgelu_aux);
  // Stored shapes (rows, cols) of A and B: op(A) is (m,k), op(B) is (k,n).
  const int a_rows = trans_a ? k : m, a_cols = trans_a ? m : k;
  const int b_rows = trans_b ? n : k, b_cols = trans_b ? k : n;
  const bool bf16 = precision_ == Precision::bf16;
  const cudaDataType_t operand = bf16 ? CUDA_R_16BF : CUDA_R_32F;
  const void* a_data = A;
  const void* b_data = B;
  if (bf16) {  // packed bf16 operands: leading dimension = stored rows
    // A weight inside the valid bf16 parameter copy is read from it (same layout, packed);
    // anything else is converted into scratch here.
    const void* a_copy = param_copy_operand(A, a_rows, a_cols, lda);
    const void* b_copy = param_copy_operand(B, b_rows, b_cols, ldb);
    const SharedOperand& so = shared_operand_;
    if (!b_copy && so.src == B && so.rows == b_rows && so.cols == b_cols && so.ld == ldb) b_copy = so.bf16;
    a_data = a_copy ? a_copy : to_bf16(*this, A, a_rows, a_cols, lda, 1);
    b_data = b_copy ? b_copy : to_bf16(*this, B, b_rows, b_cols, ldb, 2);
    lda = a_rows;
    ldb = b_rows;
  }
  // The plan's shape: the token dimension rounded up to its bucket (the leading dimensions never
  // depend on it: the token dimension is always a column count here).
  const int pn = tokens == GemmTokens::n ? token_bucket(n) : n;
  const int pk = tokens == GemmTokens::k ? token_bucket(k) : k;
  const int64_t epilogue = dgelu_aux ? 3 : gelu_aux ? 2 : bias ? 1 : 0;
  const GemmKey key{trans_a, trans_b, m, pn, pk, lda, ldb, ldd, epilogue, static_cast<int64_t>(precision_),
                    alignment_of(a_data), alignment_of(b_data), alignment_of(D), bias ? alignment_of(bias) : 0,
                    aux ? alignment_of(aux) : 0};
  auto make_layouts = [&](int n_, int k_, cublasLtMatrixLayout_t& a, cublasLtMatrixLayout_t& b,
                          cublasLtMatrixLayout_t& d) {
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&a, operand, trans_a ? k_ : m, trans_a ? m : k_, lda));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&b, operand, trans_b ? n_ : k_, trans_b ? k_ : n_, ldb));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d, CUDA_R_32F, m, n_, ldd));
  };
  auto it = matmul_cache_->plans.find(key);
  if (it == matmul_cache_->plans.end()) {
    GemmPlan plan;
    cublasLtMatmulPreference_t pref = nullptr;
    try {
      const cublasComputeType_t compute =
          precision_ == Precision::tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
      CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan.desc, compute, CUDA_R_32F));
      set_desc(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, int32_t(trans_a ? CUBLAS_OP_T : CUBLAS_OP_N));
      set_desc(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, int32_t(trans_b ? CUBLAS_OP_T : CUBLAS_OP_N));
      if (bias) {
        set_desc(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE,
                 uint32_t(gelu_aux ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_BIAS));
        set_desc(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, int32_t(CUDA_R_32F));
        set_desc(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<const void*>(bias));
      }
      if (dgelu_aux)  // D = gelu'(aux) ∘ (op(A)·op(B)): the GELU gradient applied to the GEMM result
        set_desc(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, uint32_t(CUBLASLT_EPILOGUE_DGELU));
      if (aux) {  // the pre-activation, laid out as D (aux data type default: D's, fp32)
        set_desc(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, const_cast<void*>(aux));
        set_desc(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, int64_t(ldd));
      }
      make_layouts(pn, pk, plan.a, plan.b, plan.d);
      CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
      set_pref(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, uint64_t(lt_workspace_bytes_));
      set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, uint32_t(key[10]));
      set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, uint32_t(key[11]));
      set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, uint32_t(key[12]));
      set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, uint32_t(key[12]));
      cublasLtMatmulHeuristicResult_t result{};
      int found = 0;
      CUBLAS_CHECK(
          cublasLtMatmulAlgoGetHeuristic(lt_, plan.desc, plan.a, plan.b, plan.d, plan.d, pref, 1, &result, &found));
      if (found == 0 && aux) {  // remembered, so the caller's fallback skips the query next time
        cublasLtMatmulPreferenceDestroy(pref);
        MatmulCache::destroy(plan);
        plan.found = false;
        matmul_cache_->plans.emplace(key, plan);
        return false;
      }
      if (found == 0)
        fail("cuda backend: cuBLASLt has no {} algorithm for the GEMM m={} n={} k={} (trans {}{}, ld {} {} {}, "
             "epilogue {})",
             precision_name(precision_), m, pn, pk, trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', lda, ldb, ldd,
             epilogue);
      plan.algo = result.algo;
      cublasLtMatmulPreferenceDestroy(pref);
    } catch (...) {
      if (pref) cublasLtMatmulPreferenceDestroy(pref);
      MatmulCache::destroy(plan);
      throw;
    }
    it = matmul_cache_->plans.emplace(key, plan).first;
  }
  const GemmPlan& plan = it->second;
  if (!plan.found) return false;
  // The bias and aux pointers live in the descriptor: point them at this call's (same alignment).
  if (bias) set_desc(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<const void*>(bias));
  if (aux) set_desc(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, const_cast<void*>(aux));
  CallLayouts exact;  // this call's own layouts when its shape is below the bucket's
  cublasLtMatrixLayout_t la = plan.a, lb = plan.b, ld = plan.d;
  if (pn != n || pk != k) {
    make_layouts(n, k, exact.a, exact.b, exact.d);
    la = exact.a, lb = exact.b, ld = exact.d;
  }
  const float alpha = 1.0f;
  CUBLAS_CHECK(cublasLtMatmul(lt_, plan.desc, &alpha, a_data, la, b_data, lb, &beta, D, ld, D, ld, &plan.algo,
                              lt_workspace_, lt_workspace_bytes_, stream_));
  return true;
}

void CudaBackend::matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int N, int C,
                                 int OC) {
  if (N == 0 || OC == 0) return;
  // The epilogue adds the bias when it is at least 16-byte aligned; otherwise (or with no
  // inner dimension) out starts as the broadcast bias and the GEMM adds to it.
  const bool epilogue_bias = bias && alignment_of(bias) >= 16;
  if ((bias && !epilogue_bias) || C == 0) {
    const size_t n = size_t(N) * OC;
    broadcast_rows_kernel<<<std::min<unsigned>(blocks_for(n, kThreads), 1u << 16), kThreads, 0, stream_>>>(
        out, bias, N, OC);
    CUDA_CHECK_LAUNCH();
    if (C == 0) return;
    gemm(true, false, OC, N, C, weight, C, inp, C, out, OC, 1.0f, nullptr, GemmTokens::n);
    return;
  }
  gemm(true, false, OC, N, C, weight, C, inp, C, out, OC, 0.0f, epilogue_bias ? bias : nullptr, GemmTokens::n);
}

// out = gelu(pre), pre = inp·Wᵀ + bias in one GEMM: D = out and the epilogue's aux matrix =
// pre, both (OC,N) column-major with ld OC (the layout of the forward above). cuBLASLt's GELU
// is the tanh approximation GPT-2 uses. Requirements, else the unfused default: the switch
// (kGemmEpilogueVerified / COMPETELM_GEMM_EPILOGUES / set_gemm_epilogues_enabled); a bias,
// 16-byte aligned like the plain bias epilogue above; an inner dimension (C > 0); aux ld = OC a
// multiple of 8 (cuBLASLt's rule for the GELU input matrix); pre 16-byte aligned; and an
// algorithm for the configuration (gemm returns false when there is none).
void CudaBackend::matmul_gelu_forward(float* pre, float* out, const float* inp, const float* weight,
                                      const float* bias, int N, int C, int OC) {
  if (N == 0 || OC == 0) return;
  const bool fusable = gemm_epilogues_enabled_ && C > 0 && bias && alignment_of(bias) >= 16 && OC % 8 == 0 &&
                       alignment_of(pre) >= 16;
  if (fusable && gemm(true, false, OC, N, C, weight, C, inp, C, out, OC, 0.0f, bias, GemmTokens::n, pre)) return;
  Backend::matmul_gelu_forward(pre, out, inp, weight, bias, N, C, OC);
}

void CudaBackend::matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                                  const float* weight, int N, int C, int OC, GradMode dinp_mode) {
  const bool overwrite = dinp_mode == GradMode::overwrite;
  if (N == 0) return;
  if (OC == 0) {  // empty sums: dinp = 0 when overwritten, nothing else changes
    if (dinp && overwrite && C > 0)
      CUDA_CHECK(cudaMemsetAsync(dinp, 0, sizeof(float) * size_t(N) * size_t(C), stream_));
    return;
  }
  if (C > 0) {
    // In bf16 both products read dout as B, stored (OC, N) with ld OC: convert it once (scratch
    // slot 2, where gemm() would put each B), not once per product; cleared however this exits.
    struct ClearShared {
      SharedOperand& so;
      ~ClearShared() { so = {}; }
    } clear{shared_operand_};
    if (precision_ == Precision::bf16 && dinp && dweight)
      shared_operand_ = {dout, OC, N, OC, to_bf16(*this, dout, OC, N, OC, 2)};
    if (dinp)
      gemm(false, false, C, N, OC, weight, C, dout, OC, dinp, C, overwrite ? 0.0f : 1.0f, nullptr, GemmTokens::n);
    if (dweight) gemm(false, true, C, OC, N, inp, C, dout, OC, dweight, C, 1.0f, nullptr, GemmTokens::k);
  }
  if (dbias) {
    const int chunks = static_cast<int>(blocks_for(size_t(N), kRowsPerChunk));
    float* partial = static_cast<float*>(scratch(size_t(chunks) * OC * sizeof(float)));
    const dim3 grid(static_cast<unsigned>(chunks), blocks_for(size_t(OC), kThreads));
    column_partials_kernel<<<grid, kThreads, 0, stream_>>>(partial, dout, N, OC);
    CUDA_CHECK_LAUNCH();
    column_reduce_kernel<<<blocks_for(size_t(OC), kThreads), kThreads, 0, stream_>>>(dbias, partial, chunks, OC);
    CUDA_CHECK_LAUNCH();
  }
}

// dpre = gelu'(pre) ∘ (dout · W) in one GEMM: the dinp product of matmul_backward above (D =
// dpre (C,N) column-major, ld C) with the DGELU epilogue, whose aux input = pre laid out as D
// (ld C). cuBLASLt's GELU derivative is that of the tanh approximation. The weight gradient
// goes first (dpre may alias inp), then dpre, then the bias gradient (from dout alone).
// Requirements, else the unfused default: the switch (kDgeluEpilogueVerified /
// COMPETELM_DGELU_EPILOGUE / set_dgelu_epilogue_enabled); N, C, OC > 0; aux ld = C a multiple
// of 8 (cuBLASLt's rule for the GELU input matrix); pre 16-byte aligned and distinct from dpre;
// and an algorithm for the configuration: when gemm finds none (nothing enqueued, dpre and inp
// untouched) the unfused dinp GEMM into scratch_dinp and gelu_backward run instead, the same
// calls as the default, so the results never depend on which path ran before.
void CudaBackend::matmul_backward_gelu(float* dpre, float* dweight, float* dbias, const float* dout,
                                       const float* inp, const float* pre, const float* weight, int N, int C,
                                       int OC, float* scratch_dinp) {
  const bool fusable = dgelu_epilogue_enabled_ && N > 0 && C > 0 && OC > 0 && C % 8 == 0 &&
                       alignment_of(pre) >= 16 && static_cast<const void*>(dpre) != static_cast<const void*>(pre);
  if (!fusable) {
    Backend::matmul_backward_gelu(dpre, dweight, dbias, dout, inp, pre, weight, N, C, OC, scratch_dinp);
    return;
  }
  {
    // In bf16 both products read dout as B, stored (OC, N) with ld OC: convert it once (as in
    // matmul_backward); cleared however this block exits.
    struct ClearShared {
      SharedOperand& so;
      ~ClearShared() { so = {}; }
    } clear{shared_operand_};
    if (precision_ == Precision::bf16 && dweight)
      shared_operand_ = {dout, OC, N, OC, to_bf16(*this, dout, OC, N, OC, 2)};
    if (dweight) gemm(false, true, C, OC, N, inp, C, dout, OC, dweight, C, 1.0f, nullptr, GemmTokens::k);
    if (!gemm(false, false, C, N, OC, weight, C, dout, OC, dpre, C, 0.0f, nullptr, GemmTokens::n, nullptr, pre)) {
      gemm(false, false, C, N, OC, weight, C, dout, OC, scratch_dinp, C, 0.0f, nullptr, GemmTokens::n);
      gelu_backward(dpre, pre, scratch_dinp, size_t(N) * size_t(C), GradMode::overwrite);
    }
  }
  if (dbias) matmul_backward(nullptr, nullptr, dbias, dout, inp, weight, N, C, OC, GradMode::accumulate);
}

}  // namespace competelm::cuda
