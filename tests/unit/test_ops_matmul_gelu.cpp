// matmul_gelu_forward (pre = inp·Wᵀ + bias, out = gelu(pre)): the CPU backend's and the Backend
// default must both give exactly the bits of matmul_forward followed by gelu_forward (a backend
// that fuses it must keep this test passing).
#include <cstring>
#include <vector>

#include <catch2/catch.hpp>

#include "backend/backend.hpp"
#include "backend/cpu/cpu_backend.hpp"
#include "core/rng.hpp"

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
