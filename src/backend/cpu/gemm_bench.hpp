#pragma once
// A plain cblas_sgemm timing, the "peak" GEMM throughput the benchmark tool compares the
// training step's GEMMs against. Uses the current OpenBLAS thread count (a CpuBackend sets
// it at construction).

namespace competelm::cpu {

// GFLOP/s (2·M·N·K flops per call) of C(M,N) = A(M,K)·B(K,N), row-major, after one warm-up
// call; the best of `reps` timed calls.
double measure_sgemm_gflops(int M, int N, int K, int reps);

}  // namespace competelm::cpu
