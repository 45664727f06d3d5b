// MoeLayer (src/moe/moe_layer.hpp) against a naive double-precision reference written here:
// the reference runs every expert densely on every token and computes every routing and loss
// term directly from the spec (../shared/spec/competesmoe.md). Forwards are compared in
// value; gradients of L = Σ w·out + aux_scale·aux_loss w.r.t. the input and every parameter
// against central finite differences of the reference, for each router and step kind.
// Inputs are checked to have clear top-K margins so no FD step crosses a routing boundary.
#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "backend/cpu/cpu_backend.hpp"
#include "core/rng.hpp"
#include "core/tensor_table.hpp"
#include "fd_check.hpp"
#include "moe/moe_layer.hpp"

using competelm::BalanceLoss;
using competelm::CompetitionScore;
using competelm::GradMode;
using competelm::MoeLayer;
using competelm::MoeLayerStats;
using competelm::MoeOptions;
using competelm::MoeRouter;
using competelm::Rng;
using competelm::TensorTable;
using competelm::cpu::CpuBackend;
using namespace competelm::test;

namespace {

// Tolerances (relative to the largest magnitude of the reference tensor):
//  - forward: fp32 rounding through two small GEMMs, GELU and the gate normalisation.
//  - gradients: fp32 analytic vs double FD (FD error ~1e-9); a wrong or missing term is O(1).
constexpr double kForwardTol = 2e-5;
constexpr double kGradTol = 2e-4;
constexpr double kMinMargin = 1e-3;  // smallest gap between the K-th and (K+1)-th routing value
constexpr float kAuxScale = 1.7f;
const std::string kPrefix = "blocks.0.moe.";

struct Dims {
  int B = 2, T = 3, C = 8;
};

// ---- double reference ---------------------------------------------------------------------

using Tensors = std::map<std::string, std::vector<double>>;  // parameter name (no prefix) → values; "x" the input

double gelu(double x) {
  const double u = std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x);
  return 0.5 * x * (1.0 + std::tanh(u));
}
double softplus(double x) { return std::max(x, 0.0) + std::log1p(std::exp(-std::abs(x))); }

std::vector<double> softmax(const std::vector<double>& v) {
  const double mx = *std::max_element(v.begin(), v.end());
  std::vector<double> r(v.size());
  double s = 0;
  for (size_t i = 0; i < v.size(); i++) s += (r[i] = std::exp(v[i] - mx));
  for (double& x : r) x /= s;
  return r;
}

// Top-K indices, descending, ties to the lowest index; *margin = gap between K-th and (K+1)-th.
std::vector<int> topk(const std::vector<double>& v, int K, double* margin) {
  std::vector<int> order(v.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return v[a] > v[b]; });
  if (margin && static_cast<size_t>(K) < v.size()) *margin = std::min(*margin, v[order[K - 1]] - v[order[K]]);
  return {order.begin(), order.begin() + K};
}

// FFN_e(x) for expert e of the tensors under `which` ("experts" or "shared").
std::vector<double> ffn(const Tensors& p, const std::string& which, int e, const double* x, int C, int H) {
  const auto& w1 = p.at(which + ".fc.weight");
  const auto& b1 = p.at(which + ".fc.bias");
  const auto& w2 = p.at(which + ".proj.weight");
  const auto& b2 = p.at(which + ".proj.bias");
  std::vector<double> a(H), o(C);
  for (int h = 0; h < H; h++) {
    double s = b1[size_t(e) * H + h];
    for (int c = 0; c < C; c++) s += w1[(size_t(e) * H + h) * C + c] * x[c];
    a[h] = gelu(s);
  }
  for (int c = 0; c < C; c++) {
    double s = b2[size_t(e) * C + c];
    for (int h = 0; h < H; h++) s += w2[(size_t(e) * C + c) * H + h] * a[h];
    o[c] = s;
  }
  return o;
}

struct RefOut {
  std::vector<double> out;
  double aux = 0, balance = 0, z = 0, distill = 0, diversity = 0, cbal = 0, entropy = 0;
  double margin = std::numeric_limits<double>::infinity();
  std::vector<int> idx;            // (N,K) routing used
  std::vector<double> target;      // (N,E) distillation target at this point (stop-gradient)
};

// Entropy balance: -mean_b H(mean over sequence b of p).
double entropy_balance(const std::vector<double>& p, int B, int T, int E) {
  double loss = 0;
  for (int b = 0; b < B; b++) {
    for (int e = 0; e < E; e++) {
      double P = 0;
      for (int t = 0; t < T; t++) P += p[(size_t(b) * T + t) * E + e];
      P /= T;
      loss += P * std::log(P);
    }
  }
  return loss / B;
}

// frozen: the distillation target to use (stop-gradient), or null to compute it here.
RefOut ref_forward(const MoeOptions& o, const Dims& d, const Tensors& p, bool compete,
                   const std::vector<double>* frozen) {
  const int B = d.B, T = d.T, N = B * T, C = d.C, E = o.n_experts, K = o.top_k, H = o.expert_hidden;
  const bool competing = compete && o.router == MoeRouter::CompeteSMoE;
  const auto& x = p.at("x");
  const auto& wr = p.at("router.weight");
  RefOut r;
  r.out.assign(size_t(N) * C, 0.0);
  std::vector<double> probs(size_t(N) * E), pc(size_t(N) * E);
  std::vector<int> top1(N);
  r.target.assign(size_t(N) * E, 0.0);
  for (int n = 0; n < N; n++) {
    const double* xn = x.data() + size_t(n) * C;
    std::vector<double> g(E), act(E);
    for (int e = 0; e < E; e++)
      for (int c = 0; c < C; c++) g[e] += wr[size_t(e) * C + c] * xn[c];
    const double mx = *std::max_element(g.begin(), g.end());
    double se = 0;
    for (double v : g) se += std::exp(v - mx);
    const double lse = mx + std::log(se);
    r.z += lse * lse / N;
    std::vector<double> pr(E);
    if (o.router == MoeRouter::SigmoidTopK) {
      double S = 0;
      for (int e = 0; e < E; e++) S += (act[e] = 1.0 / (1.0 + std::exp(-g[e])));
      for (int e = 0; e < E; e++) pr[e] = act[e] / S;
    } else {
      act = pr = softmax(g);
    }
    for (int e = 0; e < E; e++) {
      probs[size_t(n) * E + e] = pr[e];
      r.entropy -= pr[e] * std::log(pr[e]) / N;
    }
    double* yn = r.out.data() + size_t(n) * C;
    if (!competing) {
      const std::vector<int> idx = topk(act, K, &r.margin);
      top1[n] = idx[0];
      double S = 0;
      for (int j : idx) S += act[j];
      for (int j : idx) {
        const auto oj = ffn(p, "experts", j, xn, C, H);
        for (int c = 0; c < C; c++) yn[c] += act[j] / S * oj[c];
      }
      r.idx.insert(r.idx.end(), idx.begin(), idx.end());
    } else {
      std::vector<std::vector<double>> oe(E);
      std::vector<double> s(E);
      for (int e = 0; e < E; e++) {
        oe[e] = ffn(p, "experts", e, xn, C, H);
        double acc = 0;
        for (double v : oe[e]) acc += o.score == CompetitionScore::L2 ? v * v : softplus(v);
        s[e] = o.score == CompetitionScore::L2 ? std::sqrt(acc) : acc / C;
      }
      const std::vector<int> idx = topk(s, K, &r.margin);
      std::vector<double> sw(K);
      for (int k = 0; k < K; k++) sw[k] = s[idx[k]];
      std::vector<double> w(K);
      if (o.score == CompetitionScore::L2) {
        w = softmax(sw);
      } else {
        const double S = std::accumulate(sw.begin(), sw.end(), 0.0);
        for (int k = 0; k < K; k++) w[k] = sw[k] / S;
      }
      for (int k = 0; k < K; k++)
        for (int c = 0; c < C; c++) yn[c] += w[k] * oe[idx[k]][c];
      const std::vector<double> pcn = softmax(s);
      for (int e = 0; e < E; e++) pc[size_t(n) * E + e] = pcn[e];
      // distillation target at this point; the loss uses the frozen one when given
      double* tn = r.target.data() + size_t(n) * E;
      if (o.distill_topk_target) {
        for (int k = 0; k < K; k++) tn[idx[k]] = softmax(sw)[k];
      } else {
        for (int e = 0; e < E; e++) tn[e] = pcn[e];
      }
      const double* t = frozen ? frozen->data() + size_t(n) * E : tn;
      double full = 0, hyb = 0;
      for (int e = 0; e < E; e++) full += (pr[e] - t[e]) * (pr[e] - t[e]);
      for (int k = 0; k < K; k++) hyb += (pr[idx[k]] - t[idx[k]]) * (pr[idx[k]] - t[idx[k]]);
      r.distill += (full / E + o.distill_theta * hyb / K) / N;
      // diversity: K×K cosine matrix of the winners, diagonal zeroed, mean over K·K entries
      double div = 0;
      for (int i = 0; i < K; i++)
        for (int j = 0; j < K; j++) {
          if (i == j) continue;
          double dot = 0, ni = 0, nj = 0;
          for (int c = 0; c < C; c++) {
            dot += oe[idx[i]][c] * oe[idx[j]][c];
            ni += oe[idx[i]][c] * oe[idx[i]][c];
            nj += oe[idx[j]][c] * oe[idx[j]][c];
          }
          div += dot / std::sqrt(ni * nj);
        }
      r.diversity += div / (double(K) * K) / N;
      r.idx.insert(r.idx.end(), idx.begin(), idx.end());
    }
    for (int s = 0; s < o.shared_experts; s++) {
      const auto os = ffn(p, "shared", s, xn, C, H);
      for (int c = 0; c < C; c++) yn[c] += os[c];
    }
  }
  if (competing) {
    r.cbal = entropy_balance(pc, B, T, E);
  } else if (o.balance == BalanceLoss::Entropy) {
    r.balance = entropy_balance(probs, B, T, E);
  } else {
    for (int e = 0; e < E; e++) {
      double f = 0, P = 0;
      for (int n = 0; n < N; n++) {
        f += top1[n] == e;
        P += probs[size_t(n) * E + e];
      }
      r.balance += E * (f / N) * (P / N);
    }
  }
  const double z = o.z_loss_coef > 0 ? r.z : 0.0;
  r.aux = o.balance_coef * r.balance + o.z_loss_coef * z + o.router_coef * r.distill +
          o.diversity_coef * r.diversity + o.competition_balance_coef * r.cbal;
  return r;
}

// ---- harness: the layer bound to buffers laid out by its own tables --------------------------

struct Harness {
  MoeOptions o;
  Dims d;
  CpuBackend be{2};
  TensorTable params, acts;
  std::vector<float> pbuf, gbuf, abuf;
  std::unique_ptr<MoeLayer> layer;

  Harness(const MoeOptions& opts, const Dims& dims) : o(opts), d(dims) {
    const int N = d.B * d.T;
    MoeLayer::add_params(params, kPrefix, o, d.C);
    MoeLayer::add_acts(acts, kPrefix, o, d.C, N);
    pbuf.assign(params.total_elements(), 0.0f);
    gbuf.assign(params.total_elements(), 0.0f);
    abuf.assign(acts.total_elements(), 0.0f);
    layer = std::make_unique<MoeLayer>(be, o, d.C, N);
    layer->bind(params, pbuf.data(), gbuf.data(), acts, abuf.data(), kPrefix);
  }
  float* param(const std::string& n) { return pbuf.data() + params.at(kPrefix + n).offset; }
  std::vector<float> grad(const std::string& n) {
    const auto& s = params.at(kPrefix + n);
    return {gbuf.begin() + long(s.offset), gbuf.begin() + long(s.offset + s.numel)};
  }
  // Names of the layer's parameters without the prefix.
  std::vector<std::string> names() const {
    std::vector<std::string> r;
    for (const auto& s : params.specs()) r.push_back(s.name.substr(kPrefix.size()));
    return r;
  }
};

// Random parameters: biases non-zero so their gradients are exercised.
Tensors random_tensors(Harness& hs, Rng& rng, float wr_std) {
  Tensors t;
  for (const std::string& n : hs.names()) {
    const size_t numel = hs.params.at(kPrefix + n).numel;
    const float sd = n == "router.weight" ? wr_std : n.ends_with(".bias") ? 0.1f : 0.35f;
    const std::vector<float> v = random_floats(rng, numel, sd);
    std::copy(v.begin(), v.end(), hs.param(n));
    t[n] = to_double(v);  // the reference uses exactly the fp32 values
  }
  return t;
}

MoeOptions base_options(MoeRouter router) {
  MoeOptions o;
  o.n_experts = 4;
  o.top_k = 2;
  o.expert_hidden = 12;
  o.router = router;
  // Large coefficients so that a wrong auxiliary gradient is visible next to the LM term.
  o.balance_coef = 0.5f;
  o.z_loss_coef = 0.1f;
  o.router_coef = 0.7f;
  o.distill_theta = 0.3f;
  o.diversity_coef = 0.4f;
  o.competition_balance_coef = 0.6f;
  return o;
}

// The full check: forward and every stat term against the reference, then the gradient of
// L = Σ w·out + aux_scale·aux w.r.t. x and every parameter against FD of the reference.
void check_layer(const MoeOptions& o, bool compete, uint64_t seed) {
  const Dims d;
  const int N = d.B * d.T, C = d.C;
  Harness hs(o, d);
  Rng rng(seed);
  // Retry seeds until the routing decisions have clear margins (so FD stays on one branch).
  Tensors t;
  std::vector<float> x;
  RefOut ref;
  for (int attempt = 0;; attempt++) {
    REQUIRE(attempt < 50);
    t = random_tensors(hs, rng, 0.8f);
    x = random_floats(rng, size_t(N) * C);
    t["x"] = to_double(x);
    ref = ref_forward(o, d, t, compete, nullptr);
    if (ref.margin > kMinMargin) break;
  }
  std::vector<float> out(size_t(N) * C);
  MoeLayerStats st;
  hs.layer->forward(out.data(), x.data(), d.B, d.T, compete, &st);
  const bool competing = compete && o.router == MoeRouter::CompeteSMoE;
  CHECK(st.competed == competing);
  CHECK(rel_error(out, ref.out) < kForwardTol);
  CHECK(st.aux_loss == Approx(ref.aux).epsilon(1e-5).margin(1e-7));
  CHECK(st.router_entropy == Approx(ref.entropy).epsilon(1e-5));
  CHECK(st.balance == Approx(ref.balance).epsilon(1e-5).margin(1e-7));
  CHECK(st.distill == Approx(ref.distill).epsilon(1e-5).margin(1e-7));
  CHECK(st.diversity == Approx(ref.diversity).epsilon(1e-5).margin(1e-7));
  CHECK(st.competition_balance == Approx(ref.cbal).epsilon(1e-5).margin(1e-7));
  if (o.z_loss_coef > 0) CHECK(st.z_loss == Approx(ref.z).epsilon(1e-5));
  if (competing) {
    CHECK(st.overlap >= 0.0);
    CHECK(st.overlap <= 1.0);
  } else {
    CHECK(st.overlap == -1.0);
  }
  // tokens per expert from the routing actually used
  std::vector<int64_t> counts(size_t(o.n_experts), 0);
  for (int j : ref.idx) counts[j]++;
  CHECK(st.tokens_per_expert == counts);

  const std::vector<float> w = random_floats(rng, size_t(N) * C);
  std::vector<float> dinp(size_t(N) * C, 0.0f);
  hs.layer->backward(dinp.data(), w.data(), kAuxScale);

  const std::vector<double> frozen = ref.target;  // stop-gradient distillation target
  auto objective_for = [&](const std::string& name) {
    return [&, name](const std::vector<double>& v) {
      Tensors tt = t;
      tt[name] = v;
      const RefOut r = ref_forward(o, d, tt, compete, &frozen);
      return weighted_sum(r.out, w) + kAuxScale * r.aux;
    };
  };
  {
    INFO("input gradient");
    CHECK(rel_error(dinp, fd_gradient(t.at("x"), objective_for("x"))) < kGradTol);
  }
  for (const std::string& n : hs.names()) {
    INFO("gradient of " << n);
    CHECK(rel_error(hs.grad(n), fd_gradient(t.at(n), objective_for(n))) < kGradTol);
  }
}

}  // namespace

TEST_CASE("moe softmax_topk: forward and gradients vs reference (entropy balance, z-loss)", "[moe]") {
  MoeOptions o = base_options(MoeRouter::SoftmaxTopK);
  check_layer(o, false, 11);
  SECTION("K = 1") {
    o.top_k = 1;
    check_layer(o, false, 12);
  }
}

TEST_CASE("moe softmax_topk: switch balance, shared expert", "[moe]") {
  MoeOptions o = base_options(MoeRouter::SoftmaxTopK);
  o.balance = BalanceLoss::Switch;
  o.shared_experts = 1;
  o.z_loss_coef = 0.0f;
  check_layer(o, false, 21);
}

TEST_CASE("moe sigmoid_topk: forward and gradients vs reference", "[moe]") {
  MoeOptions o = base_options(MoeRouter::SigmoidTopK);
  check_layer(o, false, 31);
  SECTION("shared experts, switch balance") {
    o.shared_experts = 2;
    o.balance = BalanceLoss::Switch;
    check_layer(o, false, 32);
  }
}

TEST_CASE("moe competesmoe normal step equals router routing", "[moe]") {
  MoeOptions o = base_options(MoeRouter::CompeteSMoE);
  check_layer(o, false, 41);
  // compete=true is ignored by the other routers
  MoeOptions s = base_options(MoeRouter::SoftmaxTopK);
  check_layer(s, true, 42);
}

TEST_CASE("moe competesmoe competition step, softplus_mean score", "[moe]") {
  MoeOptions o = base_options(MoeRouter::CompeteSMoE);
  o.score = CompetitionScore::SoftplusMean;
  check_layer(o, true, 51);
  SECTION("shared expert, no affinity balance (no backward recompute)") {
    o.shared_experts = 1;
    o.competition_balance_coef = 0.0f;
    check_layer(o, true, 52);
  }
  SECTION("2024 top-K distillation target, K = 3") {
    o.distill_topk_target = true;
    o.top_k = 3;
    check_layer(o, true, 53);
  }
}

TEST_CASE("moe competesmoe competition step, l2 score", "[moe]") {
  MoeOptions o = base_options(MoeRouter::CompeteSMoE);
  o.score = CompetitionScore::L2;
  o.shared_experts = 1;
  check_layer(o, true, 61);
}

TEST_CASE("moe E=1 K=1 equals the dense MLP", "[moe]") {
  MoeOptions o = base_options(MoeRouter::SoftmaxTopK);
  o.n_experts = 1;
  o.top_k = 1;
  o.expert_hidden = 64;
  o.z_loss_coef = 0.0f;  // (the z-loss of a single logit is not constant; the balance is)
  const Dims d{2, 3, 16};
  const int N = d.B * d.T, C = d.C, H = o.expert_hidden;
  Harness hs(o, d);
  Rng rng(7);
  random_tensors(hs, rng, 0.5f);
  const std::vector<float> x = random_floats(rng, size_t(N) * C);
  std::vector<float> out(size_t(N) * C), h(size_t(N) * H), a(size_t(N) * H), ref(size_t(N) * C);
  hs.layer->forward(out.data(), x.data(), d.B, d.T, false, nullptr);
  CpuBackend& be = hs.be;
  be.matmul_forward(h.data(), x.data(), hs.param("experts.fc.weight"), hs.param("experts.fc.bias"), N, C, H);
  be.gelu_forward(a.data(), h.data(), h.size());
  be.matmul_forward(ref.data(), a.data(), hs.param("experts.proj.weight"), hs.param("experts.proj.bias"), N, H, C);
  for (size_t i = 0; i < out.size(); i++) REQUIRE(out[i] == Approx(ref[i]).margin(1e-6));
  // backward: the router gets no gradient (softmax over one expert is constant)
  const std::vector<float> w = random_floats(rng, size_t(N) * C);
  std::vector<float> dinp(size_t(N) * C, 0.0f), dref(size_t(N) * C, 0.0f), da(size_t(N) * H, 0.0f),
      dh(size_t(N) * H, 0.0f);
  hs.layer->backward(dinp.data(), w.data(), 1.0f);
  std::vector<float> dw2(size_t(C) * H), db2(C), dw1(size_t(H) * C), db1(H);
  be.matmul_backward(da.data(), dw2.data(), db2.data(), w.data(), a.data(), hs.param("experts.proj.weight"), N, H, C, GradMode::accumulate);
  be.gelu_backward(dh.data(), h.data(), da.data(), dh.size(), GradMode::accumulate);
  be.matmul_backward(dref.data(), dw1.data(), db1.data(), dh.data(), x.data(), hs.param("experts.fc.weight"), N, C, H, GradMode::accumulate);
  for (size_t i = 0; i < dinp.size(); i++) REQUIRE(dinp[i] == Approx(dref[i]).margin(1e-6));
  const std::vector<float> g1 = hs.grad("experts.fc.weight"), g2 = hs.grad("experts.proj.weight");
  for (size_t i = 0; i < g1.size(); i++) REQUIRE(g1[i] == Approx(dw1[i]).margin(1e-6));
  for (size_t i = 0; i < g2.size(); i++) REQUIRE(g2[i] == Approx(dw2[i]).margin(1e-6));
  for (float g : hs.grad("router.weight")) REQUIRE(std::abs(g) < 1e-6f);
}

TEST_CASE("moe ties go to the lowest expert index", "[moe]") {
  CpuBackend be(2);
  SECTION("top-K op") {
    const std::vector<float> x = {1, 3, 3, 2, 3, /**/ 0, 0, 0, 0, 0};
    std::vector<int32_t> idx(4);
    std::vector<float> val(4);
    be.moe_topk(idx.data(), val.data(), x.data(), 2, 5, 2);
    CHECK(idx == std::vector<int32_t>{1, 2, 0, 1});
    CHECK(val == std::vector<float>{3, 3, 0, 0});
  }
  SECTION("router with equal logits, competition with identical experts") {
    MoeOptions o = base_options(MoeRouter::CompeteSMoE);
    const Dims d;
    const int N = d.B * d.T;
    Harness hs(o, d);
    Rng rng(3);
    random_tensors(hs, rng, 0.5f);
    std::fill(hs.param("router.weight"), hs.param("router.weight") + o.n_experts * d.C, 0.0f);  // uniform p_R
    const size_t per = size_t(o.expert_hidden) * d.C;  // make every expert a copy of expert 0
    for (const char* n : {"experts.fc.weight", "experts.proj.weight"})
      for (int e = 1; e < o.n_experts; e++) std::copy(hs.param(n), hs.param(n) + per, hs.param(n) + e * per);
    for (int e = 1; e < o.n_experts; e++) {
      std::copy(hs.param("experts.fc.bias"), hs.param("experts.fc.bias") + o.expert_hidden,
                hs.param("experts.fc.bias") + e * o.expert_hidden);
      std::copy(hs.param("experts.proj.bias"), hs.param("experts.proj.bias") + d.C, hs.param("experts.proj.bias") + e * d.C);
    }
    const std::vector<float> x = random_floats(rng, size_t(N) * d.C);
    std::vector<float> out(x.size());
    const std::vector<int64_t> want = {N, N, 0, 0};
    for (bool compete : {false, true}) {
      MoeLayerStats st;
      hs.layer->forward(out.data(), x.data(), d.B, d.T, compete, &st);
      CHECK(st.tokens_per_expert == want);
      if (compete) CHECK(st.overlap == 1.0);
    }
  }
}

TEST_CASE("moe dispatch: every token reaches exactly K distinct experts, stable grouping", "[moe]") {
  CpuBackend be(2);
  const int N = 37, E = 6, K = 3;
  Rng rng(5);
  const std::vector<float> logits = random_floats(rng, size_t(N) * E);
  std::vector<float> act(logits.size()), val(size_t(N) * K);
  std::vector<int32_t> idx(size_t(N) * K), offsets(E + 1), row_of_slot(size_t(N) * K), slot_of_row(size_t(N) * K);
  be.moe_router_forward(act.data(), act.data(), logits.data(), N, E, false);
  be.moe_topk(idx.data(), val.data(), act.data(), N, E, K);
  for (int n = 0; n < N; n++) {
    const std::set<int32_t> s(idx.begin() + n * K, idx.begin() + (n + 1) * K);
    REQUIRE(s.size() == size_t(K));
  }
  be.moe_permute(offsets.data(), row_of_slot.data(), slot_of_row.data(), idx.data(), N, E, K);
  CHECK(offsets[0] == 0);
  CHECK(offsets[E] == N * K);  // counts sum to N·K
  std::vector<int> seen(size_t(N) * K, 0);
  for (int s = 0; s < N * K; s++) {
    const int r = row_of_slot[s];
    seen[r]++;
    CHECK(slot_of_row[r] == s);
    CHECK(r >= offsets[idx[s]]);  // the row lies in its expert's range
    CHECK(r < offsets[idx[s] + 1]);
  }
  for (int c : seen) CHECK(c == 1);  // a permutation
  for (int e = 0; e < E; e++)        // stable: token order kept within an expert
    for (int r = offsets[e] + 1; r < offsets[e + 1]; r++) CHECK(slot_of_row[r] > slot_of_row[r - 1]);
}

TEST_CASE("moe activation memory: competition keeps O(N·K·(C+H) + N·E), never N·E·C", "[moe]") {
  const int C = 64, N = 256;
  MoeOptions o = base_options(MoeRouter::CompeteSMoE);
  o.n_experts = 32;
  o.top_k = 2;
  o.expert_hidden = C;
  CpuBackend be(2);
  const MoeLayer comp(be, o, C, N);
  MoeOptions s = o;
  s.router = MoeRouter::SoftmaxTopK;
  const MoeLayer plain(be, s, C, N);
  const double naive = double(N) * o.n_experts * C * sizeof(float);  // one [N, E, C] tensor
  CHECK(comp.activation_bytes() < naive);
  // The competition path adds (N,E) score tensors and one expert's (N,·) scratch only.
  const size_t extra = comp.activation_bytes() - plain.activation_bytes();
  CHECK(extra < 0.25 * naive);
  CHECK(extra <= sizeof(float) * (size_t(N) * (2 * o.expert_hidden + C) + 5 * size_t(N) * o.n_experts +
                                  4 * size_t(N) * o.top_k));
  // and the table registered by add_acts holds exactly that
  TensorTable acts;
  MoeLayer::add_acts(acts, "m.", o, C, N);
  CHECK(acts.count_elements() * sizeof(float) == comp.activation_bytes());
}
