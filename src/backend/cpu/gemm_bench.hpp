#pragma once
// A plain cblas_sgemm timing, the "peak" GEMM throughput the benchmark tool compares the
// training step's GEMMs against.

namespace competelm::cpu {

// GFLOP/s (2·M·N·K flops per call) of C(M,N) = A(M,K)·B(K,N), row-major, after one warm-up
// call; the best of `reps` timed calls. OpenBLAS threads itself with `threads` threads for
// the measurement (0 = the current OpenMP thread count, which a CpuBackend sets) and is put
// back to one thread afterwards, as the CPU backend runs it.
double measure_sgemm_gflops(int M, int N, int K, int reps, int threads = 0);

}  // namespace competelm::cpu
