// GradMode on the CPU backend: matmul_backward and gelu_backward overwrite dinp (never reading
// it: a NaN pre-fill must vanish) or accumulate into it; the weight and bias gradients are
// accumulated either way. Overwriting must give exactly what accumulating into zeros gives, so
// that the model's backward (which overwrites instead of zero-filling) keeps its bits.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "backend/cpu/cpu_backend.hpp"
#include "backend/cpu/simd.hpp"
#include "core/rng.hpp"
#include "fd_check.hpp"

using competelm::GradMode;
using competelm::Rng;
using competelm::cpu::CpuBackend;
using namespace competelm::test;

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// Element-wise equal as floats (+0 == -0; any NaN fails).
bool same_values(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); i++)
    if (!(a[i] == b[i])) return false;
  return true;
}

// |got - (base + delta)| ≤ 1e-5·(1 + |base + delta|) everywhere.
bool is_sum(const std::vector<float>& got, const std::vector<float>& base, const std::vector<float>& delta) {
  for (size_t i = 0; i < got.size(); i++) {
    const double want = double(base[i]) + delta[i];
    if (!(std::abs(got[i] - want) <= 1e-5 * (1.0 + std::abs(want)))) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("matmul_backward: overwrite ignores dinp's contents, accumulate adds to them", "[ops][grad_mode]") {
  CpuBackend be(2);
  Rng rng(91);
  // small; more rows than columns (row split); more columns (column split); an inner dimension
  // over several of OpenBLAS's K panels (partial sums added into dinp); an empty inner dimension
  struct Shape {
    int N, C, OC;
  };
  for (const Shape s : {Shape{3, 5, 7}, Shape{250, 96, 40}, Shape{130, 96, 203}, Shape{40, 48, 1500}, Shape{6, 4, 0}}) {
    CAPTURE(s.N, s.C, s.OC);
    const auto x = random_floats(rng, size_t(s.N) * s.C), wt = random_floats(rng, size_t(s.OC) * s.C);
    const auto dout = random_floats(rng, size_t(s.N) * s.OC);
    const auto dw0 = random_floats(rng, wt.size()), db0 = random_floats(rng, size_t(s.OC));
    const auto garbage = random_floats(rng, x.size(), 10.0f);

    // the reference: accumulate into zeros
    std::vector<float> dx_ref(x.size(), 0.0f), dw_ref = dw0, db_ref = db0;
    be.matmul_backward(dx_ref.data(), dw_ref.data(), db_ref.data(), dout.data(), x.data(), wt.data(), s.N, s.C,
                       s.OC, GradMode::accumulate);

    // overwrite over NaN: dinp is never read; dweight and dbias still accumulate
    std::vector<float> dx(x.size(), kNaN), dw = dw0, db = db0;
    be.matmul_backward(dx.data(), dw.data(), db.data(), dout.data(), x.data(), wt.data(), s.N, s.C, s.OC,
                       GradMode::overwrite);
    CHECK(same_values(dx, dx_ref));
    CHECK(same_values(dw, dw_ref));
    CHECK(same_values(db, db_ref));
    if (s.OC == 0) CHECK(same_values(dx, std::vector<float>(x.size(), 0.0f)));

    // overwrite over finite garbage: the same result
    dx = garbage;
    be.matmul_backward(dx.data(), nullptr, nullptr, dout.data(), x.data(), wt.data(), s.N, s.C, s.OC,
                       GradMode::overwrite);
    CHECK(same_values(dx, dx_ref));

    // accumulate over the garbage: garbage + the product
    dx = garbage;
    be.matmul_backward(dx.data(), nullptr, nullptr, dout.data(), x.data(), wt.data(), s.N, s.C, s.OC,
                       GradMode::accumulate);
    CHECK(is_sum(dx, garbage, dx_ref));
    if (s.OC > 0) CHECK_FALSE(same_values(dx, dx_ref));
  }
}

TEST_CASE("gelu_backward: overwrite ignores dinp's contents, accumulate adds to them", "[ops][grad_mode]") {
  CpuBackend be(2);
  Rng rng(92);
  for (const size_t n : {size_t{1}, size_t{17}, size_t{1000}, size_t{4099}}) {
    CAPTURE(n);
    const auto x = random_floats(rng, n, 3.0f), dout = random_floats(rng, n), garbage = random_floats(rng, n, 10.0f);
    std::vector<float> ref(n, 0.0f);
    be.gelu_backward(ref.data(), x.data(), dout.data(), n, GradMode::accumulate);
    std::vector<float> d(n, kNaN);
    be.gelu_backward(d.data(), x.data(), dout.data(), n, GradMode::overwrite);
    CHECK(same_values(d, ref));
    d = garbage;
    be.gelu_backward(d.data(), x.data(), dout.data(), n, GradMode::overwrite);
    CHECK(same_values(d, ref));
    d = garbage;
    be.gelu_backward(d.data(), x.data(), dout.data(), n, GradMode::accumulate);
    CHECK(is_sum(d, garbage, ref));
    CHECK_FALSE(same_values(d, ref));
  }
}

TEST_CASE("every vector instruction set's overwriting gelu_backward equals accumulating into zeros",
          "[ops][grad_mode]") {
  namespace simd = competelm::cpu::simd;
  Rng rng(93);
  for (const simd::Isa isa : {simd::Isa::kGeneric, simd::Isa::kAvx2, simd::Isa::kAvx512}) {
    if (!simd::supported(isa)) continue;
    const simd::Kernels& k = simd::kernels_for(isa);
    INFO("kernels: " << k.name);
    for (const size_t n : {size_t{1}, size_t{15}, size_t{16}, size_t{33}, size_t{1000}}) {
      CAPTURE(n);
      // offset by one float, guard elements either side must stay put
      const auto x = random_floats(rng, n + 2, 4.0f), dout = random_floats(rng, n + 2);
      std::vector<float> acc(n + 2, 0.0f), set(n + 2, kNaN);
      acc[0] = acc[n + 1] = set[0] = set[n + 1] = 7.0f;
      k.gelu_backward(acc.data() + 1, x.data() + 1, dout.data() + 1, n);
      k.gelu_backward_set(set.data() + 1, x.data() + 1, dout.data() + 1, n);
      CHECK(same_values(set, acc));
    }
  }
}
