// Linear layers through cuBLASLt (fp32; TF32 tensor cores only when set_tf32(true)).
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
//             D = dinp col-major (C,N)  ld C, beta = 1
//   dweight  dW (OC,C) += doutᵀ (OC,N) · inp (N,C) ⇔  dWᵀ (C,OC) += inpᵀ · dout
//             A = inp  col-major (C,N)  ld C,  op = N          m = C
//             B = dout col-major (OC,N) ld OC, op = T → (N,OC) n = OC, k = N
//             D = dW   col-major (C,OC) ld C, beta = 1
//
// Determinism: the algorithm for a configuration (shapes, pointer alignments, TF32) is chosen
// once and cached, and the workspace size is fixed; cuBLASLt's split-K reduction schemes add
// partial results in a fixed order (workspace or counter-serialised in place), so the same
// call gives the same bits every time. dbias is a two-stage column sum (no atomics).
#include <algorithm>
#include <cstdint>

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

}  // namespace

void CudaBackend::gemm(bool trans_a, bool trans_b, int m, int n, int k, const float* A, int lda, const float* B,
                       int ldb, float* D, int ldd, float beta, const float* bias) {
  const GemmKey key{trans_a, trans_b, m, n, k, lda, ldb, ldd, bias != nullptr, (precision_ == Precision::tf32),
                    alignment_of(A), alignment_of(B), alignment_of(D), bias ? alignment_of(bias) : 0};
  auto it = matmul_cache_->plans.find(key);
  if (it == matmul_cache_->plans.end()) {
    GemmPlan plan;
    cublasLtMatmulPreference_t pref = nullptr;
    try {
      CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan.desc, (precision_ == Precision::tf32) ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F,
                                            CUDA_R_32F));
      set_desc(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, int32_t(trans_a ? CUBLAS_OP_T : CUBLAS_OP_N));
      set_desc(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, int32_t(trans_b ? CUBLAS_OP_T : CUBLAS_OP_N));
      if (bias) {
        set_desc(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, uint32_t(CUBLASLT_EPILOGUE_BIAS));
        set_desc(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, int32_t(CUDA_R_32F));
        set_desc(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<const void*>(bias));
      }
      // Stored shapes (rows, cols) of A and B: op(A) is (m,k), op(B) is (k,n).
      CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.a, CUDA_R_32F, trans_a ? k : m, trans_a ? m : k, lda));
      CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.b, CUDA_R_32F, trans_b ? n : k, trans_b ? k : n, ldb));
      CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.d, CUDA_R_32F, m, n, ldd));
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
      if (found == 0)
        fail("cuda backend: cuBLASLt has no fp32 algorithm for the GEMM m={} n={} k={} (trans {}{}, ld {} {} {}, "
             "bias {}, tf32 {})",
             m, n, k, trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', lda, ldb, ldd, bias != nullptr, (precision_ == Precision::tf32));
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
  // The bias pointer lives in the descriptor: point it at this call's bias (same alignment).
  if (bias) set_desc(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<const void*>(bias));
  const float alpha = 1.0f;
  CUBLAS_CHECK(cublasLtMatmul(lt_, plan.desc, &alpha, A, plan.a, B, plan.b, &beta, D, plan.d, D, plan.d, &plan.algo,
                              lt_workspace_, lt_workspace_bytes_, stream_));
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
    gemm(true, false, OC, N, C, weight, C, inp, C, out, OC, 1.0f, nullptr);
    return;
  }
  gemm(true, false, OC, N, C, weight, C, inp, C, out, OC, 0.0f, epilogue_bias ? bias : nullptr);
}

void CudaBackend::matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                                  const float* weight, int N, int C, int OC) {
  if (N == 0 || OC == 0) return;
  if (C > 0) {
    if (dinp) gemm(false, false, C, N, OC, weight, C, dout, OC, dinp, C, 1.0f, nullptr);
    if (dweight) gemm(false, true, C, OC, N, inp, C, dout, OC, dweight, C, 1.0f, nullptr);
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

}  // namespace competelm::cuda
