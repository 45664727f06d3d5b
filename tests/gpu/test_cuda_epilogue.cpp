// The fused GEMM + GELU forward and backward (CudaBackend::matmul_gelu_forward: cuBLASLt's GELU_AUX_BIAS
// epilogue, D = gelu(pre), aux = pre) on real cuBLASLt, against the CPU oracle (matmul_forward
// then gelu_forward) and against the unfused CUDA path. The epilogue is switched on per backend
// here (set_gemm_epilogues_enabled), whatever COMPETELM_GEMM_EPILOGUES says.
//
// Pre-activations span about ±10 (weights scaled by 3/√C), so the check also tells whether
// cuBLASLt's GELU is GPT-2's tanh approximation: the erf GELU differs from it by up to ~1e-3
// around |x| ≈ 2, far above the tolerances. Tolerances (|cuda − ref| ≤ atol + rtol·|ref|):
// fp32 1e-4 / 1e-4 (accumulation order, as the plain matmul tests); bf16 on bf16-exact operands
// 1e-4 / 1e-4 (the products are exact); tf32 1e-2 / 2e-2 (as the plain TF32 test).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "gpu_compare.hpp"
#ifdef COMPETELM_HAVE_CUDA
#include "cuda_backend.cuh"

using namespace competelm;
using namespace competelm::gpu_testing;

namespace {

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

void check_gelu_gemm(int N, int C, int OC, Precision prec, double rtol, double atol, uint64_t seed) {
  CAPTURE(N, C, OC, precision_name(prec));
  Pair p;
  auto& cu = dynamic_cast<cuda::CudaBackend&>(*p.cuda);
  p.cuda->set_precision(prec);
  const size_t n_out = size_t(N) * OC;
  // bf16: operands exactly representable in bf16, so fused and CPU differ only by accumulation order.
  const auto rnd = prec == Precision::bf16 ? randn_bf16 : randn;
  auto xs = rnd(size_t(N) * C, seed, 1.0f), ws = rnd(size_t(OC) * C, seed + 1, 3.0f / std::sqrt(float(C)));
  Twin<float> x(p, xs), w(p, ws), b(p, randn(size_t(OC), seed + 2));
  // Outputs start as garbage, so a path that skips writing an element is caught.
  Twin<float> pre(p, randn(n_out, seed + 3)), out(p, randn(n_out, seed + 4));
  Twin<float> pre2(p, randn(n_out, seed + 5)), out2(p, randn(n_out, seed + 6));

  p.cpu->matmul_gelu_forward(pre.cpu, out.cpu, x.cpu, w.cpu, b.cpu, N, C, OC);
  cu.set_gemm_epilogues_enabled(true);
  p.cuda->matmul_gelu_forward(pre.cuda, out.cuda, x.cuda, w.cuda, b.cuda, N, C, OC);
  require_close(pre, rtol, atol, "pre (fused) vs cpu");
  require_close(out, rtol, atol, "out = gelu(pre) (fused) vs cpu");
  const auto fused_pre = pre.host_cuda(), fused_out = out.host_cuda();

  // Deterministic: the same call again gives the same bits.
  p.cuda->matmul_gelu_forward(pre2.cuda, out2.cuda, x.cuda, w.cuda, b.cuda, N, C, OC);
  CHECK(bitwise_equal(pre2.host_cuda(), fused_pre));
  CHECK(bitwise_equal(out2.host_cuda(), fused_out));

  // The unfused path (matmul_forward + gelu_forward) agrees; where the epilogue cannot be used
  // (OC not a multiple of 8) both calls took it, so the bits agree too.
  cu.set_gemm_epilogues_enabled(false);
  p.cuda->matmul_gelu_forward(pre2.cuda, out2.cuda, x.cuda, w.cuda, b.cuda, N, C, OC);
  require_close(pre2.host_cuda(), fused_pre, rtol, atol, "pre: unfused vs fused");
  require_close(out2.host_cuda(), fused_out, rtol, atol, "out: unfused vs fused");
  if (OC % 8 != 0) {
    CHECK(bitwise_equal(pre2.host_cuda(), fused_pre));
    CHECK(bitwise_equal(out2.host_cuda(), fused_out));
  }
}

}  // namespace

TEST_CASE("cuda matmul_gelu_forward (GELU_AUX_BIAS epilogue) matches the CPU and the unfused path, fp32",
          "[cuda][matmul][epilogue]") {
  uint64_t seed = 100;
  for (const int N : {1, 64, 1000})
    for (const int OC : {33, 768, 3072}) check_gelu_gemm(N, 768, OC, Precision::fp32, 1e-4, 1e-4, seed += 10);
  check_gelu_gemm(17, 33, 40, Precision::fp32, 1e-4, 1e-4, 500);  // odd inner dimension
}

TEST_CASE("cuda matmul_gelu_forward (GELU_AUX_BIAS epilogue) on bf16-exact operands matches the CPU, bf16",
          "[cuda][matmul][epilogue][bf16]") {
  uint64_t seed = 200;
  for (const int N : {1, 64, 1000})
    for (const int OC : {33, 768, 3072}) check_gelu_gemm(N, 768, OC, Precision::bf16, 1e-4, 1e-4, seed += 10);
}

TEST_CASE("cuda matmul_gelu_forward (GELU_AUX_BIAS epilogue) stays within TF32 accuracy", "[cuda][matmul][epilogue]") {
  check_gelu_gemm(64, 768, 768, Precision::tf32, 1e-2, 2e-2, 300);
}

TEST_CASE("cuda matmul_gelu_forward: no tokens is a no-op; a misaligned bias falls back", "[cuda][matmul][epilogue]") {
  Pair p;
  auto& cu = dynamic_cast<cuda::CudaBackend&>(*p.cuda);
  cu.set_gemm_epilogues_enabled(true);
  const int N = 5, C = 16, OC = 24;
  Twin<float> x(p, randn(size_t(N) * C, 1)), w(p, randn(size_t(OC) * C, 2)), b(p, randn(size_t(OC) + 1, 3));
  Twin<float> pre(p, randn(size_t(N) * OC, 4)), out(p, randn(size_t(N) * OC, 5));
  const auto pre0 = pre.host_cuda(), out0 = out.host_cuda();
  p.cuda->matmul_gelu_forward(pre.cuda, out.cuda, x.cuda, w.cuda, b.cuda, 0, C, OC);
  CHECK(bitwise_equal(pre.host_cuda(), pre0));
  CHECK(bitwise_equal(out.host_cuda(), out0));
  // bias + 1 float: 4-byte aligned, so the unfused path with the broadcast bias.
  p.cpu->matmul_gelu_forward(pre.cpu, out.cpu, x.cpu, w.cpu, b.cpu + 1, N, C, OC);
  p.cuda->matmul_gelu_forward(pre.cuda, out.cuda, x.cuda, w.cuda, b.cuda + 1, N, C, OC);
  require_close(pre, 1e-5, 1e-5, "pre, misaligned bias");
  require_close(out, 1e-5, 1e-5, "out, misaligned bias");
}

// ---- the fused backward: matmul_backward_gelu through cuBLASLt's DGELU epilogue ----
// dpre = gelu'(pre) ∘ (dout · W) with aux = pre; dweight and dbias as matmul_backward. Against
// the CPU oracle (matmul_backward then gelu_backward) and against the unfused CUDA path. The
// epilogue is switched on per backend (set_dgelu_epilogue_enabled), whatever
// COMPETELM_DGELU_EPILOGUE says. Pre-activations span about ±10 (sd 4): a GELU derivative other
// than the tanh approximation's differs by ~1e-3 there. Tolerances as the forward above.
namespace {

void check_dgelu_gemm(int N, int C, int OC, Precision prec, double rtol, double atol, uint64_t seed,
                      bool alias = false) {
  CAPTURE(N, C, OC, precision_name(prec), alias);
  Pair p;
  auto& cu = dynamic_cast<cuda::CudaBackend&>(*p.cuda);
  p.cuda->set_precision(prec);
  const size_t n_in = size_t(N) * C;
  const auto rnd = prec == Precision::bf16 ? randn_bf16 : randn;
  const auto inp0 = rnd(n_in, seed, 1.0f);
  Twin<float> dout(p, rnd(size_t(N) * OC, seed + 1, 1.0f)), w(p, rnd(size_t(OC) * C, seed + 2, 1.0f / std::sqrt(float(OC))));
  Twin<float> pre(p, randn(n_in, seed + 3, 4.0f)), inp(p, inp0);
  Twin<float> dw(p, randn(size_t(OC) * C, seed + 4)), db(p, randn(size_t(OC), seed + 5));
  // Outputs and scratch start as garbage, so a path that skips writing an element is caught.
  Twin<float> dpre(p, randn(n_in, seed + 6)), scratch(p, randn(n_in, seed + 7));
  const auto dw0 = dw.host_cuda(), db0 = db.host_cuda();
  float* dpre_cpu = alias ? inp.cpu : dpre.cpu;
  float* dpre_cuda = alias ? inp.cuda : dpre.cuda;

  p.cpu->matmul_backward_gelu(dpre_cpu, dw.cpu, db.cpu, dout.cpu, inp.cpu, pre.cpu, w.cpu, N, C, OC, scratch.cpu);
  cu.set_dgelu_epilogue_enabled(true);
  p.cuda->matmul_backward_gelu(dpre_cuda, dw.cuda, db.cuda, dout.cuda, inp.cuda, pre.cuda, w.cuda, N, C, OC,
                               scratch.cuda);
  require_close(alias ? inp : dpre, rtol, atol, "dpre (fused) vs cpu");
  require_close(dw, rtol, atol, "dweight (fused) vs cpu");
  require_close(db, rtol, atol, "dbias (fused) vs cpu");
  const auto fused = (alias ? inp : dpre).host_cuda(), fused_dw = dw.host_cuda(), fused_db = db.host_cuda();

  // Deterministic, and the unfused path agrees (its weight and bias gradients bit for bit).
  for (const bool on : {true, false}) {
    cu.set_dgelu_epilogue_enabled(on);
    Twin<float> inp2(p, inp0), dpre2(p, randn(n_in, seed + 8)), dw2(p, dw0), db2(p, db0);
    float* out = alias ? inp2.cuda : dpre2.cuda;
    p.cuda->matmul_backward_gelu(out, dw2.cuda, db2.cuda, dout.cuda, inp2.cuda, pre.cuda, w.cuda, N, C, OC,
                                 scratch.cuda);
    const auto got = (alias ? inp2 : dpre2).host_cuda();
    if (on) {
      CHECK(bitwise_equal(got, fused));
    } else {
      require_close(got, fused, rtol, atol, "dpre: unfused vs fused");
      if (C % 8 != 0) CHECK(bitwise_equal(got, fused));  // both calls were unfused
    }
    CHECK(bitwise_equal(dw2.host_cuda(), fused_dw));
    CHECK(bitwise_equal(db2.host_cuda(), fused_db));
  }
}

}  // namespace

TEST_CASE("cuda matmul_backward_gelu (DGELU epilogue) matches the CPU and the unfused path, fp32",
          "[cuda][matmul][epilogue]") {
  uint64_t seed = 600;
  for (const int N : {1, 64, 1000}) check_dgelu_gemm(N, 3072, 768, Precision::fp32, 1e-4, 1e-4, seed += 10);
  check_dgelu_gemm(17, 40, 33, Precision::fp32, 1e-4, 1e-4, 700);        // odd inner dimension
  check_dgelu_gemm(17, 33, 40, Precision::fp32, 1e-4, 1e-4, 710);        // C % 8 != 0: unfused
  check_dgelu_gemm(64, 3072, 768, Precision::fp32, 1e-4, 1e-4, 720, true);  // dpre aliases inp (MoE)
}

TEST_CASE("cuda matmul_backward_gelu (DGELU epilogue) on bf16-exact operands matches the CPU, bf16",
          "[cuda][matmul][epilogue][bf16]") {
  uint64_t seed = 800;
  for (const int N : {1, 64, 1000}) check_dgelu_gemm(N, 3072, 768, Precision::bf16, 1e-4, 1e-4, seed += 10);
  check_dgelu_gemm(64, 3072, 768, Precision::bf16, 1e-4, 1e-4, 900, true);
}

#endif  // COMPETELM_HAVE_CUDA
