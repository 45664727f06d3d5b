#include "backend/cpu/gemm_bench.hpp"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <vector>

#include "core/error.hpp"
#include "core/rng.hpp"

extern "C" void openblas_set_num_threads(int);  // in libopenblas, not declared by cblas.h

namespace competelm::cpu {

double measure_sgemm_gflops(int M, int N, int K, int reps, int threads) {
  if (M <= 0 || N <= 0 || K <= 0 || reps <= 0)
    fail("sgemm benchmark: sizes and reps must be positive (got {}x{}x{}, {} reps)", M, N, K, reps);
  Rng rng(1234);
  std::vector<float> a(static_cast<size_t>(M) * K), b(static_cast<size_t>(K) * N),
      c(static_cast<size_t>(M) * N, 0.0f);
  for (float& x : a) x = rng.uniform() - 0.5f;
  for (float& x : b) x = rng.uniform() - 0.5f;
  auto run = [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, a.data(), K, b.data(),
                N, 0.0f, c.data(), N);
  };
  openblas_set_num_threads(threads > 0 ? threads : omp_get_max_threads());
  run();  // warm-up: thread pool start, page faults, caches
  double best = 1e30;
  for (int r = 0; r < reps; r++) {
    const auto t0 = std::chrono::steady_clock::now();
    run();
    const auto t1 = std::chrono::steady_clock::now();
    best = std::min(best, std::chrono::duration<double>(t1 - t0).count());
  }
  openblas_set_num_threads(1);
  return 2.0 * M * N * static_cast<double>(K) / best / 1e9;
}

}  // namespace competelm::cpu
