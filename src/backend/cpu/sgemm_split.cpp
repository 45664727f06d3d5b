#include "backend/cpu/sgemm_split.hpp"

#include <omp.h>

#include <algorithm>
#include <cstddef>
#include <cstring>

namespace competelm::cpu {
namespace {
constexpr int kGranule = 16;  // blocks start on 16-float (64-byte) boundaries
constexpr long kMinFlopsPerThread = 1L << 18;  // below this, threading costs more than it saves

// Rows [r0, r1) x columns [c0, c1) of C (row stride ldc) set to row_init[c0..c1).
void fill_rows(float* C, int ldc, int r0, int r1, int c0, int c1, const float* row_init) {
  for (int r = r0; r < r1; r++)
    std::memcpy(C + static_cast<size_t>(r) * ldc + c0, row_init + c0, sizeof(float) * static_cast<size_t>(c1 - c0));
}
}  // namespace

void sgemm_parallel(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha,
                    const float* A, int lda, const float* B, int ldb, float beta, float* C,
                    int ldc, const float* row_init) {
  if (M <= 0 || N <= 0) return;
  if (row_init) beta = 1.0f;
  const bool split_rows = M > N;
  const int extent = split_rows ? M : N;
  const int granules = (extent + kGranule - 1) / kGranule;
  const long flops = 2L * M * N * std::max(K, 1);
  const int want = static_cast<int>(std::min<long>({static_cast<long>(omp_get_max_threads()), granules,
                                                    std::max(1L, flops / kMinFlopsPerThread)}));
  if (want <= 1 || omp_in_parallel()) {
    if (row_init) fill_rows(C, ldc, 0, M, 0, N, row_init);
    cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
#pragma omp parallel num_threads(want)
  {
    const int nth = omp_get_num_threads(), tid = omp_get_thread_num();
    const int lo = std::min(extent, static_cast<int>(static_cast<long>(granules) * tid / nth) * kGranule);
    const int hi = std::min(extent, static_cast<int>(static_cast<long>(granules) * (tid + 1) / nth) * kGranule);
    if (hi > lo) {
      if (split_rows) {
        // rows lo..hi of C and of op(A): A is (M,K) when not transposed, (K,M) when transposed
        const float* a = ta == CblasNoTrans ? A + static_cast<size_t>(lo) * lda : A + lo;
        if (row_init) fill_rows(C, ldc, lo, hi, 0, N, row_init);
        cblas_sgemm(CblasRowMajor, ta, tb, hi - lo, N, K, alpha, a, lda, B, ldb, beta,
                    C + static_cast<size_t>(lo) * ldc, ldc);
      } else {
        // columns lo..hi of C and of op(B): B is (K,N) when not transposed, (N,K) when transposed
        const float* b = tb == CblasNoTrans ? B + lo : B + static_cast<size_t>(lo) * ldb;
        if (row_init) fill_rows(C, ldc, 0, M, lo, hi, row_init);
        cblas_sgemm(CblasRowMajor, ta, tb, M, hi - lo, K, alpha, A, lda, b, ldb, beta, C + lo, ldc);
      }
    }
  }
}

}  // namespace competelm::cpu
