#pragma once
// cuBLASLt descriptors and the chosen algorithm per GEMM configuration, so that a training
// step's ~150 GEMMs skip the heuristic query after the first step. One algorithm per
// configuration for the backend's lifetime also keeps the results bit-identical run to run.
#include <cublasLt.h>

#include <array>
#include <cstdint>
#include <map>

namespace competelm::cuda {

// (trans_a, trans_b, m, n, k, lda, ldb, ldd, epilogue, precision, align A, B, D, bias, aux): the
// pointer alignments are part of the key because cuBLASLt picks kernels by them; epilogue is
// 0 none, 1 bias, 2 GELU_AUX_BIAS (the aux alignment is 0 without it).
using GemmKey = std::array<int64_t, 15>;

struct GemmPlan {
  bool found = true;  // false: cuBLASLt has no algorithm for this (epilogue) configuration
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

struct MatmulCache {
  std::map<GemmKey, GemmPlan> plans;
  MatmulCache() = default;
  MatmulCache(const MatmulCache&) = delete;
  MatmulCache& operator=(const MatmulCache&) = delete;
  ~MatmulCache() {
    for (auto& kv : plans) destroy(kv.second);
  }
  static void destroy(GemmPlan& p) noexcept {  // errors ignored: used on teardown paths
    if (p.desc) cublasLtMatmulDescDestroy(p.desc);
    if (p.a) cublasLtMatrixLayoutDestroy(p.a);
    if (p.b) cublasLtMatrixLayoutDestroy(p.b);
    if (p.d) cublasLtMatrixLayoutDestroy(p.d);
    p = GemmPlan{};
  }
};

}  // namespace competelm::cuda
