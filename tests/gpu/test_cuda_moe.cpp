// CUDA MoE ops (cuda/moe_*.cu) against the CPU oracle (src/backend/cpu/moe_*.cpp): every
// moe_* member on random inputs of several shapes (N = 1, E = 1, E = 64 K = 8, E = 256, sizes
// that are no multiple of a block), ties in top-K / competition inputs, pre-filled gradient
// buffers (accumulate vs overwrite), loss values, determinism, and the MoE layer end to end.
//
// Tolerances (stated per check):
//  - index outputs (top-K, permutation, competition slots) and pure copies: exact.
//  - fp32 row math (softmax, gates, router backward): rtol 1e-5, atol 1e-7..1e-6 (expf vs
//    std::exp and double sums in another order: a few ulps).
//  - loss values (double on both sides from the same fp32 inputs; only summation order and
//    libm ulps differ): relative 1e-9, margin 1e-12.
//  - float dot products over C (combine backward's dgate): rtol 1e-4, atol 1e-4.
//  - MoE layer (cuBLAS vs OpenBLAS GEMMs underneath): forward rtol 1e-4 atol 2e-5; gradients
//    |Δ| ≤ 1e-3·|cpu| + 2e-4·max|cpu| per tensor; loss statistics relative 1e-4.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <numeric>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "core/rng.hpp"
#include "core/tensor_table.hpp"
#include "gpu_compare.hpp"
#include "moe/moe_layer.hpp"

using namespace competelm;
using namespace competelm::gpu_testing;

namespace {

constexpr double kLossEps = 1e-9, kLossMargin = 1e-12;

template <typename T>
void require_equal(const std::vector<T>& a, const std::vector<T>& b, const std::string& what) {
  REQUIRE(a.size() == b.size());
  size_t bad = a.size();
  for (size_t i = 0; i < a.size() && bad == a.size(); i++)
    if (!(a[i] == b[i])) bad = i;
  std::ostringstream msg;
  msg << what << ": first mismatch at element " << bad << " of " << a.size();
  if (bad < a.size()) msg << " (cpu " << a[bad] << ", cuda " << b[bad] << ")";
  INFO(msg.str());
  REQUIRE(bad == a.size());
}
template <typename T>
void require_equal(const Twin<T>& t, const std::string& what) {
  require_equal(t.host_cpu(), t.host_cuda(), what);
}
template <typename T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}
template <typename T>
std::vector<T> download(Backend& be, const T* p, size_t n) {
  std::vector<T> h(n);
  be.download(h.data(), p, n * sizeof(T));
  return h;
}

// Row softmax / top-K on the host through the CPU oracle (its memory is host memory).
std::vector<float> softmax_host(Pair& p, const std::vector<float>& x, int N, int E) {
  std::vector<float> out(x.size());
  p.cpu->moe_softmax_forward(out.data(), x.data(), N, E);
  return out;
}
std::vector<int32_t> topk_host(Pair& p, const std::vector<float>& x, int N, int E, int K) {
  std::vector<int32_t> idx(size_t(N) * K);
  std::vector<float> val(size_t(N) * K);
  p.cpu->moe_topk(idx.data(), val.data(), x.data(), N, E, K);
  return idx;
}
// Values from {0, 1, 2}: many exact ties.
std::vector<float> tie_values(size_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(rng.below(3));
  return v;
}
std::vector<int32_t> random_permutation(int n, uint64_t seed) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  Rng rng(seed);
  for (int i = n - 1; i > 0; i--) std::swap(v[i], v[rng.below(uint64_t(i) + 1)]);
  return v;
}

struct RouteShape {
  int N, E, K;
};
const std::vector<RouteShape> kRouteShapes = {{1, 1, 1},   {1, 5, 2},   {37, 6, 3},  {130, 64, 8},
                                              {77, 256, 8}, {50, 40, 20}, {9, 256, 100}};

}  // namespace

// ---- routing ------------------------------------------------------------------------------

TEST_CASE("cuda moe router forward and backward match the cpu", "[cuda][moe]") {
  Pair p;
  for (const RouteShape& s : kRouteShapes)
    for (bool sig : {false, true}) {
      INFO("N " << s.N << " E " << s.E << " K " << s.K << " sigmoid " << sig);
      const int N = s.N, E = s.E, K = s.K;
      const size_t NE = size_t(N) * E;
      Twin<float> logits(p, randn(NE, 1, 2.0f));
      Twin<float> act(p, randn(NE, 2)), probs(p, randn(NE, 3));  // garbage: overwritten
      p.cpu->moe_router_forward(act.cpu, probs.cpu, logits.cpu, N, E, sig);
      p.cuda->moe_router_forward(act.cuda, probs.cuda, logits.cuda, N, E, sig);
      require_close(act, 1e-5, 1e-7, "act");
      require_close(probs, 1e-5, 1e-7, "probs");
      if (!sig) {  // act and probs may alias
        Twin<float> both(p, randn(NE, 4));
        p.cpu->moe_router_forward(both.cpu, both.cpu, logits.cpu, N, E, false);
        p.cuda->moe_router_forward(both.cuda, both.cuda, logits.cuda, N, E, false);
        require_close(both, 1e-5, 1e-7, "aliased act = probs");
      }
      // backward from identical inputs (the CPU forward's)
      const std::vector<float> a_h = act.host_cpu(), p_h = probs.host_cpu();
      Twin<float> a(p, a_h), pr(p, p_h);
      Twin<int32_t> idx(p, topk_host(p, a_h, N, E, K));
      for (bool with_dval : {false, true})
        for (bool with_dprobs : {false, true}) {
          INFO("dval " << with_dval << " dprobs " << with_dprobs);
          Twin<float> dval(p, randn(size_t(N) * K, 5)), dprobs(p, randn(NE, 6)), dlogits(p, randn(NE, 7));
          p.cpu->moe_router_backward(dlogits.cpu, with_dval ? dval.cpu : nullptr, idx.cpu,
                                     with_dprobs ? dprobs.cpu : nullptr, a.cpu, pr.cpu, N, E, K, sig);
          p.cuda->moe_router_backward(dlogits.cuda, with_dval ? dval.cuda : nullptr, idx.cuda,
                                      with_dprobs ? dprobs.cuda : nullptr, a.cuda, pr.cuda, N, E, K, sig);
          require_close(dlogits, 1e-5, 1e-6, "dlogits (overwritten)");
        }
    }
}

TEST_CASE("cuda moe top-K matches the cpu exactly, ties to the lowest index", "[cuda][moe]") {
  Pair p;
  SECTION("the unit test's example") {
    Twin<float> x(p, std::vector<float>{1, 3, 3, 2, 3, /**/ 0, 0, 0, 0, 0});
    Twin<int32_t> idx(p, 4);
    Twin<float> val(p, 4);
    p.cuda->moe_topk(idx.cuda, val.cuda, x.cuda, 2, 5, 2);
    CHECK(idx.host_cuda() == std::vector<int32_t>{1, 2, 0, 1});
    CHECK(val.host_cuda() == std::vector<float>{3, 3, 0, 0});
  }
  for (const RouteShape& s : kRouteShapes)
    for (bool ties : {false, true}) {
      INFO("N " << s.N << " E " << s.E << " K " << s.K << " ties " << ties);
      const size_t NE = size_t(s.N) * s.E;
      Twin<float> x(p, ties ? tie_values(NE, 11) : randn(NE, 12));
      Twin<int32_t> idx(p, std::vector<int32_t>(size_t(s.N) * s.K, -7));
      Twin<float> val(p, randn(size_t(s.N) * s.K, 13));
      p.cpu->moe_topk(idx.cpu, val.cpu, x.cpu, s.N, s.E, s.K);
      p.cuda->moe_topk(idx.cuda, val.cuda, x.cuda, s.N, s.E, s.K);
      require_equal(idx, "idx");
      require_equal(val, "val");
    }
}

TEST_CASE("cuda moe gates and row softmax match the cpu", "[cuda][moe]") {
  Pair p;
  for (const RouteShape& s : kRouteShapes) {
    INFO("N " << s.N << " E " << s.E << " K " << s.K);
    const int N = s.N, E = s.E, K = s.K;
    const size_t NK = size_t(N) * K, NE = size_t(N) * E;
    for (bool softmax : {false, true}) {
      INFO("softmax gate " << softmax);
      std::vector<float> v = randn(NK, 21);
      if (!softmax)
        for (float& x : v) x = std::abs(x) + 0.05f;  // positive, as router probabilities / scores
      Twin<float> val(p, v), gate(p, randn(NK, 22));
      p.cpu->moe_gate_forward(gate.cpu, val.cpu, N, K, softmax);
      p.cuda->moe_gate_forward(gate.cuda, val.cuda, N, K, softmax);
      require_close(gate, 1e-5, 1e-7, "gate (overwritten)");
      Twin<float> g(p, gate.host_cpu()), dgate(p, randn(NK, 23)), dval(p, randn(NK, 24));
      p.cpu->moe_gate_backward(dval.cpu, dgate.cpu, g.cpu, val.cpu, N, K, softmax);
      p.cuda->moe_gate_backward(dval.cuda, dgate.cuda, g.cuda, val.cuda, N, K, softmax);
      require_close(dval, 1e-5, 1e-6, "dval (overwritten)");
    }
    Twin<float> inp(p, randn(NE, 25, 3.0f)), out(p, randn(NE, 26));
    p.cpu->moe_softmax_forward(out.cpu, inp.cpu, N, E);
    p.cuda->moe_softmax_forward(out.cuda, inp.cuda, N, E);
    require_close(out, 1e-5, 1e-7, "softmax");
    Twin<float> o(p, out.host_cpu()), dout(p, randn(NE, 27)), dinp(p, randn(NE, 28));
    p.cpu->moe_softmax_backward(dinp.cpu, dout.cpu, o.cpu, N, E);
    p.cuda->moe_softmax_backward(dinp.cuda, dout.cuda, o.cuda, N, E);
    require_close(dinp, 1e-5, 1e-6, "softmax backward (accumulated)");
  }
}

// ---- losses and statistics ----------------------------------------------------------------

namespace {
struct LossShape {
  int B, T, E, K;
};
const std::vector<LossShape> kLossShapes = {{1, 1, 1, 1},  {2, 3, 4, 2},  {3, 300, 8, 2},
                                            {4, 64, 64, 8}, {1, 1000, 256, 8}};
}  // namespace

TEST_CASE("cuda moe losses and statistics match the cpu (values and accumulated gradients)", "[cuda][moe]") {
  Pair p;
  for (const LossShape& s : kLossShapes) {
    const int B = s.B, T = s.T, N = B * T, E = s.E, K = s.K;
    const size_t NE = size_t(N) * E;
    INFO("B " << B << " T " << T << " E " << E << " K " << K);
    const std::vector<float> logits_h = randn(NE, 31, 2.0f);
    const std::vector<float> p_h = softmax_host(p, logits_h, N, E);
    const std::vector<float> scores_h = randn(NE, 32);
    Twin<float> logits(p, logits_h), probs(p, p_h), scores(p, scores_h);
    Twin<int32_t> idx(p, topk_host(p, p_h, N, E, K)), cidx(p, topk_host(p, scores_h, N, E, K));

    // Each gradient scaled to O(1) next to the O(1) pre-filled buffer: an accumulate that
    // overwrote, or a wrong gradient, shows at the 1e-5 level.
    auto loss_check = [&](const char* what, auto&& call) {
      INFO(what);
      Twin<float> d(p, randn(NE, 33));
      const double vc = call(*p.cpu, d.cpu, true), vg = call(*p.cuda, d.cuda, true);
      CHECK(vg == Approx(vc).epsilon(kLossEps).margin(kLossMargin));
      require_close(d, 1e-5, 1e-6, std::string(what) + " gradient (accumulated)");
      const double vn = call(*p.cuda, nullptr, false);  // value only
      CHECK(vn == Approx(vc).epsilon(kLossEps).margin(kLossMargin));
    };
    auto ptr = [](Twin<float>& t, Backend& be) -> float* { return &be == &t.a ? t.cpu : t.cuda; };
    auto iptr = [](Twin<int32_t>& t, Backend& be) -> int32_t* { return &be == &t.a ? t.cpu : t.cuda; };

    loss_check("entropy balance", [&](Backend& be, float* d, bool) {
      return be.moe_entropy_balance(d, ptr(probs, be), B, T, E, 0.9f * N);
    });
    loss_check("switch balance", [&](Backend& be, float* d, bool) {
      return be.moe_switch_balance(d, ptr(probs, be), iptr(idx, be), N, E, K, 1.1f * N);
    });
    loss_check("z-loss", [&](Backend& be, float* d, bool) {
      return be.moe_z_loss(d, ptr(logits, be), N, E, 0.5f * N);
    });
    for (bool topk_target : {false, true}) {
      INFO("distill topk_target " << topk_target);
      loss_check("distillation", [&](Backend& be, float* d, bool) {
        return be.moe_distill_loss(d, ptr(probs, be), ptr(scores, be), iptr(cidx, be), N, E, K, 0.3f, topk_target,
                                   0.5f * N * E);
      });
    }
    {
      std::vector<float> pz = p_h;  // exact zeros are skipped by the entropy
      for (size_t i = 0; i < pz.size(); i += 7) pz[i] = 0.0f;
      Twin<float> q(p, pz);
      const double hc = p.cpu->moe_mean_entropy(q.cpu, N, E), hg = p.cuda->moe_mean_entropy(q.cuda, N, E);
      CHECK(hg == Approx(hc).epsilon(kLossEps).margin(kLossMargin));
    }
    {
      const double oc = p.cpu->moe_topk_overlap(idx.cpu, cidx.cpu, N, K);
      const double og = p.cuda->moe_topk_overlap(idx.cuda, cidx.cuda, N, K);
      CHECK(og == oc);  // integer counts: exact
      CHECK(p.cuda->moe_topk_overlap(idx.cuda, idx.cuda, N, K) == 1.0);
    }
  }
}

TEST_CASE("cuda moe diversity loss matches the cpu", "[cuda][moe]") {
  Pair p;
  struct S {
    int N, K, C;
  };
  for (const S& s : {S{1, 1, 8}, S{1, 2, 5}, S{13, 3, 100}, S{40, 8, 257}, S{7, 16, 33}}) {
    INFO("N " << s.N << " K " << s.K << " C " << s.C);
    const int R = s.N * s.K;
    Twin<float> rows(p, randn(size_t(R) * s.C, 41));
    Twin<int32_t> ros(p, random_permutation(R, 42));
    const float scale = 3.0f * s.N;
    for (bool prefilled : {false, true}) {
      INFO("pre-filled drows " << prefilled);
      Twin<float> drows(p, prefilled ? randn(size_t(R) * s.C, 43) : std::vector<float>(size_t(R) * s.C, 0.0f));
      const double vc = p.cpu->moe_diversity_loss(drows.cpu, rows.cpu, ros.cpu, s.N, s.K, s.C, scale);
      const double vg = p.cuda->moe_diversity_loss(drows.cuda, rows.cuda, ros.cuda, s.N, s.K, s.C, scale);
      CHECK(vg == Approx(vc).epsilon(kLossEps).margin(kLossMargin));
      if (prefilled)
        require_close(drows, 1e-5, 1e-6, "drows (accumulated)");
      else
        require_close(drows, 1e-4, 1e-7, "drows");
    }
    const double vn = p.cuda->moe_diversity_loss(nullptr, rows.cuda, ros.cuda, s.N, s.K, s.C, 0.0f);
    CHECK(vn == Approx(p.cpu->moe_diversity_loss(nullptr, rows.cpu, ros.cpu, s.N, s.K, s.C, 0.0f))
                    .epsilon(kLossEps)
                    .margin(kLossMargin));
  }
}

// ---- dispatch -----------------------------------------------------------------------------

TEST_CASE("cuda moe permute is the cpu's stable counting sort", "[cuda][moe]") {
  Pair p;
  struct S {
    int N, E, K;
    int mode;  // 0: distinct top-K per token, 1: any expert (repeats), 2: every slot expert E/2
  };
  const std::vector<S> shapes = {{1, 1, 1, 0},     {1, 5, 3, 0},      {37, 6, 3, 0},   {1000, 3, 2, 1},
                                 {8192, 256, 8, 0}, {500, 300, 4, 1},  {300, 2000, 5, 1}, {2049, 64, 1, 0},
                                 {777, 4, 2, 2},    {1030, 33, 1, 1}};
  for (const S& s : shapes) {
    INFO("N " << s.N << " E " << s.E << " K " << s.K << " mode " << s.mode);
    const size_t R = size_t(s.N) * s.K;
    std::vector<int32_t> idx_h(R);
    if (s.mode == 0) {
      idx_h = topk_host(p, randn(size_t(s.N) * s.E, 51), s.N, s.E, s.K);
    } else {
      Rng rng(52);
      for (int32_t& e : idx_h) e = s.mode == 1 ? static_cast<int32_t>(rng.below(uint64_t(s.E))) : s.E / 2;
    }
    Twin<int32_t> idx(p, idx_h), offsets(p, std::vector<int32_t>(size_t(s.E) + 1, -3));
    Twin<int32_t> ros(p, std::vector<int32_t>(R, -3)), sor(p, std::vector<int32_t>(R, -3));
    p.cpu->moe_permute(offsets.cpu, ros.cpu, sor.cpu, idx.cpu, s.N, s.E, s.K);
    p.cuda->moe_permute(offsets.cuda, ros.cuda, sor.cuda, idx.cuda, s.N, s.E, s.K);
    require_equal(offsets, "offsets");
    require_equal(ros, "row_of_slot");
    require_equal(sor, "slot_of_row");
  }
}

TEST_CASE("cuda moe gather, combine and scatter match the cpu", "[cuda][moe]") {
  Pair p;
  struct S {
    int N, E, K, C;
  };
  for (const S& s : {S{1, 1, 1, 8}, S{7, 4, 2, 33}, S{37, 6, 3, 100}, S{130, 64, 8, 257}, S{64, 256, 8, 1}}) {
    INFO("N " << s.N << " E " << s.E << " K " << s.K << " C " << s.C);
    const int N = s.N, K = s.K, C = s.C, R = N * K;
    const std::vector<int32_t> idx_h = topk_host(p, randn(size_t(N) * s.E, 61), N, s.E, K);
    std::vector<int32_t> off(size_t(s.E) + 1), ros_h(static_cast<size_t>(R)), sor_h(static_cast<size_t>(R));
    p.cpu->moe_permute(off.data(), ros_h.data(), sor_h.data(), idx_h.data(), N, s.E, K);
    Twin<int32_t> ros(p, ros_h), sor(p, sor_h);

    Twin<float> inp(p, randn(size_t(N) * C, 62)), xr(p, randn(size_t(R) * C, 63));
    p.cpu->moe_gather_rows(xr.cpu, inp.cpu, sor.cpu, K, R, C);
    p.cuda->moe_gather_rows(xr.cuda, inp.cuda, sor.cuda, K, R, C);
    require_equal(xr, "gather (div = K)");
    Twin<float> yr(p, randn(size_t(R) * C, 64));
    p.cpu->moe_gather_rows(yr.cpu, xr.cpu, sor.cpu, 1, R, C);
    p.cuda->moe_gather_rows(yr.cuda, xr.cuda, sor.cuda, 1, R, C);
    require_equal(yr, "gather (div = 1)");

    Twin<float> rows(p, randn(size_t(R) * C, 65)), gate(p, randn(size_t(N) * K, 66));
    Twin<float> out(p, randn(size_t(N) * C, 67));
    p.cpu->moe_combine_forward(out.cpu, rows.cpu, gate.cpu, ros.cpu, N, K, C);
    p.cuda->moe_combine_forward(out.cuda, rows.cuda, gate.cuda, ros.cuda, N, K, C);
    require_close(out, 1e-5, 1e-6, "combine forward (overwritten)");

    Twin<float> dout(p, randn(size_t(N) * C, 68)), drows(p, randn(size_t(R) * C, 69)),
        dgate(p, randn(size_t(N) * K, 70));
    p.cpu->moe_combine_backward(drows.cpu, dgate.cpu, dout.cpu, rows.cpu, gate.cpu, ros.cpu, N, K, C);
    p.cuda->moe_combine_backward(drows.cuda, dgate.cuda, dout.cuda, rows.cuda, gate.cuda, ros.cuda, N, K, C);
    require_close(drows, 1e-6, 0.0, "combine backward drows (overwritten)");
    require_close(dgate, 1e-4, 1e-4, "combine backward dgate (overwritten)");

    Twin<float> dinp(p, randn(size_t(N) * C, 71));
    p.cpu->moe_scatter_rows(dinp.cpu, drows.cpu, ros.cpu, N, K, C);
    p.cuda->moe_scatter_rows(dinp.cuda, drows.cuda, ros.cuda, N, K, C);
    require_close(dinp, 1e-6, 1e-6, "scatter (accumulated)");
  }
}

// ---- competition --------------------------------------------------------------------------

TEST_CASE("cuda moe expert score and its backward match the cpu", "[cuda][moe]") {
  Pair p;
  const int E = 5, col = 2;  // scores are one column of an (N, E) matrix
  struct S {
    int N, C;
  };
  for (const S& s : {S{1, 1}, S{7, 33}, S{130, 768}, S{1000, 64}})
    for (bool l2 : {false, true}) {
      INFO("N " << s.N << " C " << s.C << " l2 " << l2);
      const size_t NC = size_t(s.N) * s.C, NE = size_t(s.N) * E;
      Twin<float> o(p, randn(NC, 81, 2.0f)), scores(p, randn(NE, 82));
      p.cpu->moe_expert_score(scores.cpu + col, E, o.cpu, s.N, s.C, l2);
      p.cuda->moe_expert_score(scores.cuda + col, E, o.cuda, s.N, s.C, l2);
      require_close(scores, 1e-5, 1e-6, "scores (other columns untouched)");
      std::vector<float> ds = randn(NE, 83);
      for (size_t n = 0; n < size_t(s.N); n += 3) ds[n * E + col] = 0.0f;  // rows left untouched
      Twin<float> dscores(p, ds), d_o(p, randn(NC, 84));
      p.cpu->moe_expert_score_backward(d_o.cpu, dscores.cpu + col, E, o.cpu, s.N, s.C, l2);
      p.cuda->moe_expert_score_backward(d_o.cuda, dscores.cuda + col, E, o.cuda, s.N, s.C, l2);
      require_close(d_o, 1e-5, 1e-6, "d_o (accumulated)");
    }
}

TEST_CASE("cuda moe compete_insert keeps the cpu's slots and rows", "[cuda][moe]") {
  Pair p;
  struct S {
    int N, E, K, C, H;
  };
  for (const S& s : {S{1, 1, 1, 8, 4}, S{7, 4, 2, 33, 20}, S{37, 6, 3, 100, 48}, S{130, 64, 8, 64, 96}})
    for (bool ties : {false, true}) {
      INFO("N " << s.N << " E " << s.E << " K " << s.K << " ties " << ties);
      const int N = s.N, E = s.E, K = s.K, C = s.C, H = s.H;
      const size_t NK = size_t(N) * K;
      Twin<int32_t> idx(p, std::vector<int32_t>(NK, 99));
      Twin<float> best(p, randn(NK, 91)), keep_o(p, randn(NK * C, 92)), keep_h(p, randn(NK * H, 93));
      for (int round = 0; round < 2; round++) {  // the second round checks that expert 0 restarts
        const size_t NE = size_t(N) * E;
        Twin<float> scores(p, ties ? tie_values(NE, 94 + round) : randn(NE, 96 + round));
        for (int e = 0; e < E; e++) {
          Twin<float> o(p, randn(size_t(N) * C, 1000 + 10 * e + round)), h(p, randn(size_t(N) * H, 2000 + 10 * e + round));
          p.cpu->moe_compete_insert(idx.cpu, best.cpu, keep_o.cpu, keep_h.cpu, scores.cpu + e, E, o.cpu, h.cpu, e, N,
                                    K, C, H);
          p.cuda->moe_compete_insert(idx.cuda, best.cuda, keep_o.cuda, keep_h.cuda, scores.cuda + e, E, o.cuda,
                                     h.cuda, e, N, K, C, H);
        }
        INFO("round " << round);
        require_equal(idx, "idx");
        require_equal(best, "best");
        require_equal(keep_o, "keep_o");
        require_equal(keep_h, "keep_h");
      }
    }
}

// ---- determinism --------------------------------------------------------------------------

TEST_CASE("cuda moe ops are bitwise deterministic", "[cuda][moe]") {
  Pair p;
  Backend& g = *p.cuda;
  const int B = 4, T = 250, N = B * T, E = 64, K = 8, C = 96, R = N * K;
  const std::vector<float> logits_h = randn(size_t(N) * E, 101, 2.0f);
  const std::vector<float> rows_h = randn(size_t(R) * C, 102), dout_h = randn(size_t(N) * C, 103);
  Twin<float> logits(p, logits_h), rows(p, rows_h), dout(p, dout_h);
  auto run = [&]() {
    std::vector<std::vector<float>> f;
    std::vector<std::vector<int32_t>> ints;
    std::vector<double> values;
    Twin<float> act(p, size_t(N) * E), val(p, size_t(N) * K), gate(p, size_t(N) * K), dl(p, size_t(N) * E);
    Twin<int32_t> idx(p, size_t(N) * K), off(p, size_t(E) + 1), ros(p, size_t(R)), sor(p, size_t(R));
    g.moe_router_forward(act.cuda, act.cuda, logits.cuda, N, E, false);
    g.moe_topk(idx.cuda, val.cuda, act.cuda, N, E, K);
    g.moe_gate_forward(gate.cuda, val.cuda, N, K, false);
    g.moe_permute(off.cuda, ros.cuda, sor.cuda, idx.cuda, N, E, K);
    Twin<float> drows(p, size_t(R) * C), dgate(p, size_t(N) * K), dval(p, size_t(N) * K), dp(p, size_t(N) * E);
    g.moe_combine_backward(drows.cuda, dgate.cuda, dout.cuda, rows.cuda, gate.cuda, ros.cuda, N, K, C);
    values.push_back(g.moe_diversity_loss(drows.cuda, rows.cuda, ros.cuda, N, K, C, 1.0f));
    g.moe_gate_backward(dval.cuda, dgate.cuda, gate.cuda, val.cuda, N, K, false);
    values.push_back(g.moe_entropy_balance(dp.cuda, act.cuda, B, T, E, 1.0f));
    values.push_back(g.moe_switch_balance(dp.cuda, act.cuda, idx.cuda, N, E, K, 1.0f));
    values.push_back(g.moe_distill_loss(dp.cuda, act.cuda, logits.cuda, idx.cuda, N, E, K, 0.2f, false, 1.0f));
    g.moe_router_backward(dl.cuda, dval.cuda, idx.cuda, dp.cuda, act.cuda, act.cuda, N, E, K, false);
    values.push_back(g.moe_z_loss(dl.cuda, logits.cuda, N, E, 1.0f));
    values.push_back(g.moe_mean_entropy(act.cuda, N, E));
    Twin<float> sc(p, size_t(R)), d_o(p, size_t(R) * C);
    g.moe_expert_score(sc.cuda, 1, rows.cuda, R, C, false);
    g.moe_expert_score_backward(d_o.cuda, sc.cuda, 1, rows.cuda, R, C, true);
    for (Twin<float>* t : {&act, &val, &gate, &dl, &drows, &dgate, &dval, &dp, &sc, &d_o}) f.push_back(t->host_cuda());
    for (Twin<int32_t>* t : {&idx, &off, &ros, &sor}) ints.push_back(t->host_cuda());
    return std::make_tuple(f, ints, values);
  };
  const auto first = run(), second = run();
  for (size_t i = 0; i < std::get<0>(first).size(); i++) {
    INFO("float output " << i);
    CHECK(same_bits(std::get<0>(first)[i], std::get<0>(second)[i]));
  }
  for (size_t i = 0; i < std::get<1>(first).size(); i++) {
    INFO("index output " << i);
    CHECK(same_bits(std::get<1>(first)[i], std::get<1>(second)[i]));
  }
  CHECK(same_bits(std::get<2>(first), std::get<2>(second)));
}

// ---- the MoE layer end to end -------------------------------------------------------------

namespace {

const std::string kPrefix = "blocks.0.moe.";

// The layer bound to buffers in one backend's memory, laid out by its own tables.
struct LayerRig {
  Backend& be;
  TensorTable params, acts;
  float *pbuf = nullptr, *gbuf = nullptr, *abuf = nullptr;
  std::unique_ptr<MoeLayer> layer;
  LayerRig(Backend& b, const MoeOptions& o, int C, int N, const std::vector<float>& host_params) : be(b) {
    MoeLayer::add_params(params, kPrefix, o, C);
    MoeLayer::add_acts(acts, kPrefix, o, C, N);
    REQUIRE(host_params.size() == params.total_elements());
    pbuf = static_cast<float*>(be.alloc(sizeof(float) * params.total_elements()));
    gbuf = static_cast<float*>(be.alloc(sizeof(float) * params.total_elements()));
    abuf = static_cast<float*>(be.alloc(sizeof(float) * acts.total_elements()));
    be.upload(pbuf, host_params.data(), sizeof(float) * host_params.size());
    layer = std::make_unique<MoeLayer>(be, o, C, N);
    layer->bind(params, pbuf, gbuf, acts, abuf, kPrefix);
  }
  ~LayerRig() {
    be.dealloc(pbuf);
    be.dealloc(gbuf);
    be.dealloc(abuf);
  }
  LayerRig(const LayerRig&) = delete;
  LayerRig& operator=(const LayerRig&) = delete;
  std::vector<float> grad(const TensorSpec& s) const {
    std::vector<float> h(s.numel);
    be.download(h.data(), gbuf + s.offset, sizeof(float) * s.numel);
    return h;
  }
};

// |cuda − cpu| ≤ rel·|cpu| + scaled·max|cpu| everywhere.
void require_close_scaled(const std::vector<float>& cpu, const std::vector<float>& cuda, double rel, double scaled,
                          const std::string& what) {
  double mx = 0.0;
  for (float v : cpu) mx = std::max(mx, double(std::abs(v)));
  require_close(cpu, cuda, rel, scaled * mx + 1e-9, what);
}

MoeOptions layer_options(MoeRouter router) {
  MoeOptions o;
  o.n_experts = 4;
  o.top_k = 2;
  o.expert_hidden = 24;
  o.router = router;
  // Large coefficients so that every auxiliary gradient is visible next to the LM term.
  o.balance_coef = 0.5f;
  o.z_loss_coef = 0.1f;
  o.router_coef = 0.7f;
  o.distill_theta = 0.3f;
  o.diversity_coef = 0.4f;
  o.competition_balance_coef = 0.6f;
  return o;
}

void compare_layer(const MoeOptions& o, bool compete, uint64_t seed) {
  Pair p;
  const int B = 2, T = 8, C = 32, N = B * T;
  TensorTable layout;
  MoeLayer::add_params(layout, kPrefix, o, C);
  std::vector<float> host(layout.total_elements(), 0.0f);
  Rng rng(seed);
  for (const TensorSpec& s : layout.specs()) {
    const bool bias = s.name.size() > 5 && s.name.compare(s.name.size() - 5, 5, ".bias") == 0;
    const float sd = s.name == kPrefix + "router.weight" ? 0.8f : bias ? 0.1f : 0.35f;
    for (size_t i = 0; i < s.numel; i++) host[s.offset + i] = sd * rng.normal();
  }
  LayerRig rc(*p.cpu, o, C, N, host), rg(*p.cuda, o, C, N, host);
  Twin<float> x(p, randn(size_t(N) * C, seed + 1)), out(p, randn(size_t(N) * C, seed + 2));
  Twin<float> dout(p, randn(size_t(N) * C, seed + 3)), dinp(p, randn(size_t(N) * C, seed + 4));
  MoeLayerStats sc, sg;
  rc.layer->forward(out.cpu, x.cpu, B, T, compete, &sc);
  rg.layer->forward(out.cuda, x.cuda, B, T, compete, &sg);
  CHECK(sg.competed == sc.competed);
  REQUIRE(sg.tokens_per_expert == sc.tokens_per_expert);  // the same routing (inputs have no near-ties)
  require_close(out, 1e-4, 2e-5, "layer output");
  CHECK(sg.overlap == sc.overlap);
  CHECK(sg.router_entropy == Approx(sc.router_entropy).epsilon(1e-4));
  CHECK(sg.balance == Approx(sc.balance).epsilon(1e-4).margin(1e-7));
  CHECK(sg.z_loss == Approx(sc.z_loss).epsilon(1e-4).margin(1e-7));
  CHECK(sg.distill == Approx(sc.distill).epsilon(1e-4).margin(1e-7));
  CHECK(sg.diversity == Approx(sc.diversity).epsilon(1e-4).margin(1e-7));
  CHECK(sg.competition_balance == Approx(sc.competition_balance).epsilon(1e-4).margin(1e-7));
  CHECK(sg.aux_loss == Approx(sc.aux_loss).epsilon(1e-4).margin(1e-7));

  rc.layer->backward(dinp.cpu, dout.cpu, 1.7f);
  rg.layer->backward(dinp.cuda, dout.cuda, 1.7f);
  require_close_scaled(dinp.host_cpu(), dinp.host_cuda(), 1e-3, 2e-4, "dinp (accumulated)");
  for (const TensorSpec& s : rc.params.specs())
    require_close_scaled(rc.grad(s), rg.grad(rg.params.at(s.name)), 1e-3, 2e-4, "gradient of " + s.name);
}

}  // namespace

TEST_CASE("cuda moe layer forward and backward match the cpu for every router", "[cuda][moe]") {
  SECTION("softmax_topk, entropy balance, z-loss") { compare_layer(layer_options(MoeRouter::SoftmaxTopK), false, 11); }
  SECTION("sigmoid_topk, switch balance, shared expert") {
    MoeOptions o = layer_options(MoeRouter::SigmoidTopK);
    o.balance = BalanceLoss::Switch;
    o.shared_experts = 1;
    compare_layer(o, false, 21);
  }
  SECTION("competesmoe normal step") { compare_layer(layer_options(MoeRouter::CompeteSMoE), false, 31); }
  SECTION("competesmoe competition step, softplus_mean score (affinity balance recompute)") {
    MoeOptions o = layer_options(MoeRouter::CompeteSMoE);
    o.score = CompetitionScore::SoftplusMean;
    compare_layer(o, true, 41);
  }
  SECTION("competesmoe competition step, softplus_mean, top-K target, K = 3") {
    MoeOptions o = layer_options(MoeRouter::CompeteSMoE);
    o.distill_topk_target = true;
    o.top_k = 3;
    compare_layer(o, true, 45);
  }
  SECTION("competesmoe competition step, l2 score, shared expert") {
    MoeOptions o = layer_options(MoeRouter::CompeteSMoE);
    o.score = CompetitionScore::L2;
    o.shared_experts = 1;
    compare_layer(o, true, 51);
  }
}
