#pragma once
// Row-major sgemm split over the OpenMP threads. OpenBLAS runs single-threaded in this
// backend (CpuBackend sets its pool to 1 thread): a second pool of spinning BLAS threads
// next to the OpenMP one oversubscribes the cores between ops, and single-threaded
// cblas_sgemm calls are safe to make from several threads at once (per-head attention).
#include <cblas.h>

namespace competelm::cpu {

// C(M,N) = alpha·op(A)(M,K)·op(B)(K,N) + beta·C, row-major. The output is cut into one
// block of rows or columns (whichever dimension is larger) per OpenMP thread; each block is
// a plain single-threaded cblas_sgemm, so the result depends only on the thread count.
// row_init (N floats, or null): each thread first sets every row of its block of C to it and
// the product is added (beta is ignored): C = row_init + alpha·op(A)·op(B), e.g. a bias,
// without a separate parallel pass over C.
void sgemm_parallel(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha,
                    const float* A, int lda, const float* B, int ldb, float beta, float* C,
                    int ldc, const float* row_init = nullptr);

}  // namespace competelm::cpu
