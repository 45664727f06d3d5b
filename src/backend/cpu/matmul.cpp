// Linear layers, out = inp · weightᵀ + bias, through OpenBLAS sgemm (row-major) split over
// the OpenMP threads.
#include <omp.h>

#include <algorithm>
#include <cstring>

#include "backend/cpu/ops.hpp"
#include "backend/cpu/sgemm_split.hpp"

namespace competelm::cpu {

void matmul_forward(float* out /*(N,OC)*/, const float* inp /*(N,C)*/,
                    const float* weight /*(OC,C)*/, const float* bias /*(OC) or null*/, int N,
                    int C, int OC) {
  // With a bias, each thread first fills its block of out with the broadcast bias and sgemm
  // adds to it (beta = 1): no second read-modify-write pass after the product.
  sgemm_parallel(CblasNoTrans, CblasTrans, N, OC, C, 1.0f, inp, C, weight, C, 0.0f, out, OC, bias);
}

void matmul_backward(float* dinp /*(N,C)*/, float* dweight /*(OC,C)*/,
                     float* dbias /*(OC) or null*/, const float* dout /*(N,OC)*/,
                     const float* inp /*(N,C)*/, const float* weight /*(OC,C)*/, int N, int C,
                     int OC, GradMode dinp_mode) {
  const bool overwrite = dinp_mode == GradMode::overwrite;
  // dinp (N,C) += dout (N,OC) · weight (OC,C); overwrite: beta = 0, dinp is never read. An
  // empty inner dimension leaves the sum empty: 0 (and no sgemm with a zero leading dimension).
  if (dinp && OC == 0 && overwrite && N > 0 && C > 0)
    std::memset(dinp, 0, sizeof(float) * static_cast<size_t>(N) * static_cast<size_t>(C));
  else if (dinp && OC > 0)
    sgemm_parallel(CblasNoTrans, CblasNoTrans, N, C, OC, 1.0f, dout, OC, weight, C, overwrite ? 0.0f : 1.0f, dinp,
                   C);
  // dweight (OC,C) += doutᵀ (OC,N) · inp (N,C)
  if (dweight) sgemm_parallel(CblasTrans, CblasNoTrans, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f, dweight, C);
  if (dbias) {
    // Column sums: each thread owns a slice of the columns and walks the rows in order, so
    // the sum order is fixed whatever the thread count, and the inner loop vectorises.
#pragma omp parallel
    {
      const int nth = omp_get_num_threads(), tid = omp_get_thread_num();
      // slices rounded to 16 columns so threads do not share cache lines of dbias
      const int blocks = (OC + 15) / 16;
      const int o0 = std::min(OC, static_cast<int>(static_cast<long>(blocks) * tid / nth) * 16);
      const int o1 = std::min(OC, static_cast<int>(static_cast<long>(blocks) * (tid + 1) / nth) * 16);
      for (int i = 0; i < N; i++) {
        const float* d = dout + static_cast<size_t>(i) * OC;
#pragma omp simd
        for (int o = o0; o < o1; o++) dbias[o] += d[o];
      }
    }
  }
}

}  // namespace competelm::cpu
