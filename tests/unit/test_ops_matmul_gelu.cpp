// matmul_gelu_forward (pre = inp·Wᵀ + bias, out = gelu(pre)): the CPU backend's and the Backend
// default must both give exactly the bits of matmul_forward followed by gelu_forward (a backend
// that fuses it must keep this test passing). Likewise matmul_backward_gelu (dweight += doutᵀ·inp,
// dbias += Σ dout, dpre = gelu'(pre) ∘ (dout·W)) against matmul_backward (dinp overwritten into
// the scratch) then gelu_backward, also when dpre aliases inp, as the MoE experts call it.
#include <cmath>
#include <cstring>
#include <vector>

#include <catch2/catch.hpp>

#include "backend/backend.hpp"
#include "backend/cpu/cpu_backend.hpp"
#include "core/rng.hpp"

using competelm::GradMode;
using competelm::cpu::CpuBackend;

namespace {

std::vector<float> randn(size_t n, uint64_t seed, float scale = 1.0f) {
  competelm::Rng rng(seed);
  std::vector<float> v(n);
  for (float& x : v) x = scale * rng.normal();
  return v;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

}  // namespace

TEST_CASE("matmul_gelu_forward equals matmul_forward + gelu_forward bit for bit", "[ops]") {
  for (const int threads : {1, 2, 3}) {
    CpuBackend be(threads);
    // Tiny (one sgemm), more rows than columns (row blocks), more columns than rows (column
    // blocks, one GELU per row slice), odd sizes, and an expert without tokens.
    struct Shape { int N, C, OC; };
    for (const Shape s : {Shape{1, 3, 5}, Shape{300, 64, 40}, Shape{20, 48, 257}, Shape{129, 33, 200},
                          Shape{0, 16, 32}}) {
      for (const bool with_bias : {true, false}) {
        CAPTURE(threads, s.N, s.C, s.OC, with_bias);
        const size_t n_out = size_t(s.N) * s.OC;
        const auto x = randn(size_t(s.N) * s.C, 1), w = randn(size_t(s.OC) * s.C, 2, 0.5f), b = randn(s.OC, 3);
        const float* bias = with_bias ? b.data() : nullptr;
        std::vector<float> pre_ref(n_out, -1.0f), out_ref(n_out, -2.0f);
        be.matmul_forward(pre_ref.data(), x.data(), w.data(), bias, s.N, s.C, s.OC);
        be.gelu_forward(out_ref.data(), pre_ref.data(), n_out);

        std::vector<float> pre(n_out, 7.0f), out(n_out, 8.0f);
        be.matmul_gelu_forward(pre.data(), out.data(), x.data(), w.data(), bias, s.N, s.C, s.OC);
        CHECK(same_bits(pre, pre_ref));
        CHECK(same_bits(out, out_ref));

        std::vector<float> pre_d(n_out, 7.0f), out_d(n_out, 8.0f);  // the Backend default
        be.Backend::matmul_gelu_forward(pre_d.data(), out_d.data(), x.data(), w.data(), bias, s.N, s.C, s.OC);
        CHECK(same_bits(pre_d, pre_ref));
        CHECK(same_bits(out_d, out_ref));
      }
    }
  }
}

TEST_CASE("matmul_backward_gelu equals matmul_backward + gelu_backward bit for bit", "[ops]") {
  for (const int threads : {1, 3}) {
    CpuBackend be(threads);
    struct Shape { int N, C, OC; };
    for (const Shape s : {Shape{1, 8, 5}, Shape{300, 64, 40}, Shape{20, 257, 48}, Shape{129, 33, 200},
                          Shape{0, 16, 32}}) {
      for (const bool with_bias : {true, false}) {
        for (const bool alias : {false, true}) {
          CAPTURE(threads, s.N, s.C, s.OC, with_bias, alias);
          const size_t n_in = size_t(s.N) * s.C;
          const auto dout = randn(size_t(s.N) * s.OC, 1), w = randn(size_t(s.OC) * s.C, 2, 0.5f);
          const auto pre = randn(n_in, 3, 4.0f);  // pre-activations spanning about ±10
          std::vector<float> inp(n_in);
          be.gelu_forward(inp.data(), pre.data(), n_in);
          const auto dw0 = randn(size_t(s.OC) * s.C, 4), db0 = randn(size_t(s.OC), 5);

          std::vector<float> dinp_ref(n_in, -1.0f), dpre_ref(n_in, -2.0f), dw_ref = dw0, db_ref = db0;
          be.matmul_backward(dinp_ref.data(), dw_ref.data(), with_bias ? db_ref.data() : nullptr, dout.data(),
                             inp.data(), w.data(), s.N, s.C, s.OC, GradMode::overwrite);
          be.gelu_backward(dpre_ref.data(), pre.data(), dinp_ref.data(), n_in, GradMode::overwrite);

          std::vector<float> inp_buf = inp, dpre(n_in, std::nanf("")), scratch(n_in, std::nanf(""));
          std::vector<float> dw = dw0, db = db0;
          float* dpre_ptr = alias ? inp_buf.data() : dpre.data();
          be.matmul_backward_gelu(dpre_ptr, dw.data(), with_bias ? db.data() : nullptr, dout.data(), inp_buf.data(),
                                  pre.data(), w.data(), s.N, s.C, s.OC, scratch.data());
          CHECK(same_bits(alias ? inp_buf : dpre, dpre_ref));
          CHECK(same_bits(dw, dw_ref));
          CHECK(same_bits(db, db_ref));
          CHECK(same_bits(scratch, dinp_ref));  // the default's scratch holds dout · W
        }
      }
    }
  }
}

TEST_CASE("matmul_backward_gelu's dpre is gelu'(pre) times dout·W (finite differences)", "[ops]") {
  CpuBackend be(1);
  const int N = 3, C = 16, OC = 4;
  const auto dout = randn(size_t(N) * OC, 11), w = randn(size_t(OC) * C, 12), pre = randn(size_t(N) * C, 13, 3.0f);
  std::vector<float> inp(pre.size()), dpre(pre.size()), scratch(pre.size()), dw(size_t(OC) * C, 0.0f);
  be.gelu_forward(inp.data(), pre.data(), pre.size());
  be.matmul_backward_gelu(dpre.data(), dw.data(), nullptr, dout.data(), inp.data(), pre.data(), w.data(), N, C, OC,
                          scratch.data());
  for (int i = 0; i < N; ++i)
    for (int c = 0; c < C; ++c) {
      double g = 0;  // ∂/∂pre of Σ dout · (gelu(pre) · Wᵀ), central differences in double on the tanh GELU
      auto gelu = [](double x) { return 0.5 * x * (1.0 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); };
      const double x = pre[size_t(i) * C + c], h = 1e-4;
      const double dg = (gelu(x + h) - gelu(x - h)) / (2 * h);
      for (int o = 0; o < OC; ++o) g += double(dout[size_t(i) * OC + o]) * w[size_t(o) * C + c];
      CHECK(std::abs(dpre[size_t(i) * C + c] - dg * g) <= 1e-4 * (1.0 + std::abs(dg * g)));
    }
}
