// Token + position embeddings.
#include <omp.h>

#include "backend/cpu/ops.hpp"

namespace competelm::cpu {

void encoder_forward(float* out /*(B,T,C)*/, const int32_t* tokens /*(B,T)*/,
                     const float* wte /*(Vp,C)*/, const float* wpe /*(maxT,C)*/, int B, int T,
                     int C) {
#pragma omp parallel for schedule(static)
  for (int bt = 0; bt < B * T; bt++) {
    const int t = bt % T;
    float* o = out + static_cast<size_t>(bt) * C;
    const float* e = wte + static_cast<size_t>(tokens[bt]) * C;
    const float* p = wpe + static_cast<size_t>(t) * C;
#pragma omp simd
    for (int c = 0; c < C; c++) o[c] = e[c] + p[c];
  }
}

// Tokens repeat, so rows of dwte receive several contributions: each thread owns a slice of
// the channels and walks every position in order, which needs no atomics and adds the
// contributions in the same (position) order whatever the thread count.
void encoder_backward(float* dwte /*(Vp,C)*/, float* dwpe /*(maxT,C)*/,
                      const float* dout /*(B,T,C)*/, const int32_t* tokens /*(B,T)*/, int B,
                      int T, int C) {
#pragma omp parallel
  {
    const int nth = omp_get_num_threads(), tid = omp_get_thread_num();
    const int c0 = static_cast<int>(static_cast<long>(C) * tid / nth);
    const int c1 = static_cast<int>(static_cast<long>(C) * (tid + 1) / nth);
    for (int bt = 0; bt < B * T; bt++) {
      const int t = bt % T;
      const float* d = dout + static_cast<size_t>(bt) * C;
      float* gw = dwte + static_cast<size_t>(tokens[bt]) * C;
      float* gp = dwpe + static_cast<size_t>(t) * C;
#pragma omp simd
      for (int c = c0; c < c1; c++) {
        gw[c] += d[c];
        gp[c] += d[c];
      }
    }
  }
}

}  // namespace competelm::cpu
