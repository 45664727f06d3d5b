// MoE token dispatch: group the N·K (token, choice) slots by expert (counting sort, stable so a
// token's position order is kept inside each expert), gather input rows into that order,
// and combine / scatter the experts' rows back per token. The combine and scatter loop over
// tokens and read each token's K rows, so no two threads write the same row (deterministic
// without atomics).
#include <cstring>
#include <vector>

#include "backend/cpu/ops.hpp"

namespace competelm::cpu {

void moe_permute(int32_t* offsets, int32_t* row_of_slot, int32_t* slot_of_row, const int32_t* idx, int N,
                 int E, int K) {
  const int R = N * K;
  std::vector<int32_t> next(static_cast<size_t>(E) + 1, 0);
  for (int s = 0; s < R; s++) next[idx[s] + 1]++;
  for (int e = 0; e < E; e++) next[e + 1] += next[e];  // prefix sum: first row of each expert
  std::memcpy(offsets, next.data(), sizeof(int32_t) * (static_cast<size_t>(E) + 1));
  for (int s = 0; s < R; s++) {  // slots in token order → stable within each expert
    const int32_t r = next[idx[s]]++;
    row_of_slot[s] = r;
    slot_of_row[r] = s;
  }
}

void moe_gather_rows(float* out, const float* inp, const int32_t* src, int div, int R, int C) {
#pragma omp parallel for schedule(static)
  for (int r = 0; r < R; r++)
    std::memcpy(out + static_cast<size_t>(r) * C, inp + static_cast<size_t>(src[r] / div) * C,
                sizeof(float) * C);
}

void moe_combine_forward(float* out, const float* rows, const float* gate, const int32_t* row_of_slot,
                         int N, int K, int C) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    float* o = out + static_cast<size_t>(n) * C;
    for (int k = 0; k < K; k++) {
      const float w = gate[n * K + k];
      const float* x = rows + static_cast<size_t>(row_of_slot[n * K + k]) * C;
      if (k == 0) {
#pragma omp simd
        for (int c = 0; c < C; c++) o[c] = w * x[c];
      } else {
#pragma omp simd
        for (int c = 0; c < C; c++) o[c] += w * x[c];
      }
    }
  }
}

void moe_combine_backward(float* drows, float* dgate, const float* dout, const float* rows,
                          const float* gate, const int32_t* row_of_slot, int N, int K, int C) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const float* d = dout + static_cast<size_t>(n) * C;
    for (int k = 0; k < K; k++) {
      const size_t r = static_cast<size_t>(row_of_slot[n * K + k]) * C;
      const float w = gate[n * K + k];
      const float* x = rows + r;
      float* dx = drows + r;
      float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
      for (int c = 0; c < C; c++) {
        dot += d[c] * x[c];
        dx[c] = w * d[c];
      }
      dgate[n * K + k] = dot;
    }
  }
}

void moe_scatter_rows(float* dinp, const float* drows, const int32_t* row_of_slot, int N, int K, int C) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    float* d = dinp + static_cast<size_t>(n) * C;
    for (int k = 0; k < K; k++) {
      const float* x = drows + static_cast<size_t>(row_of_slot[n * K + k]) * C;
#pragma omp simd
      for (int c = 0; c < C; c++) d[c] += x[c];
    }
  }
}

}  // namespace competelm::cpu
