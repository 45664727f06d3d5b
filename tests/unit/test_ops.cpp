// CPU backend ops: every fp32 forward against a naive double-precision forward written here,
// every backward against central finite differences of that double forward, plus the
// contracts of backend.hpp (accumulating backwards, padding columns, in-place crossentropy,
// causality, AdamW, determinism). Small odd sizes keep every case well under a second.
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "backend/backend.hpp"
#include "backend/cuda_probe.hpp"
#include "backend/cpu/cpu_backend.hpp"
#include "backend/cpu/gemm_bench.hpp"
#include "backend/cpu/simd.hpp"
#include "core/error.hpp"
#include "core/rng.hpp"
#include "fd_check.hpp"

using competelm::GradMode;
using competelm::Rng;
using competelm::cpu::CpuBackend;
using namespace competelm::test;

namespace {

// Tolerances, relative to the largest magnitude of the reference tensor:
//  - fp32 forward vs double forward: fp32 rounding over sums of ≤ a few dozen terms.
//  - fp32 analytic backward vs double finite differences: the FD error is ~1e-10, so this
//    measures the fp32 backward (≤1e-6 measured when right; a wrong term gives errors of order 1).
constexpr double kForwardTol = 5e-6;
constexpr double kGradTol = 2e-5;

constexpr int B = 2, T = 5, C = 12, NH = 3, V = 11, Vp = 16;
constexpr int N = B * T;
constexpr int OC = 16;
constexpr int maxT = 7;  // rows of wpe: more than T, as in the model

// ---- double-precision reference forwards ------------------------------------------------------

std::vector<double> ref_encoder(const std::vector<int32_t>& tokens, const std::vector<double>& wte,
                                const std::vector<double>& wpe) {
  std::vector<double> out(static_cast<size_t>(N) * C);
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++)
      for (int c = 0; c < C; c++)
        out[(b * T + t) * C + c] = wte[tokens[b * T + t] * C + c] + wpe[t * C + c];
  return out;
}

struct RefLayerNorm {
  std::vector<double> out, mean, rstd;
};
RefLayerNorm ref_layernorm(const std::vector<double>& x, const std::vector<double>& w,
                           const std::vector<double>& bias) {
  RefLayerNorm r{std::vector<double>(x.size()), std::vector<double>(N), std::vector<double>(N)};
  for (int i = 0; i < N; i++) {
    double m = 0, v = 0;
    for (int c = 0; c < C; c++) m += x[i * C + c];
    m /= C;
    for (int c = 0; c < C; c++) v += (x[i * C + c] - m) * (x[i * C + c] - m);
    v /= C;  // biased, as torch
    const double s = 1.0 / std::sqrt(v + 1e-5);
    for (int c = 0; c < C; c++) r.out[i * C + c] = (x[i * C + c] - m) * s * w[c] + bias[c];
    r.mean[i] = m;
    r.rstd[i] = s;
  }
  return r;
}

std::vector<double> ref_matmul(const std::vector<double>& x, const std::vector<double>& w,
                               const std::vector<double>* bias, int rows, int in, int outc) {
  std::vector<double> out(static_cast<size_t>(rows) * outc);
  for (int i = 0; i < rows; i++)
    for (int o = 0; o < outc; o++) {
      double s = bias ? (*bias)[o] : 0.0;
      for (int c = 0; c < in; c++) s += x[static_cast<size_t>(i) * in + c] * w[static_cast<size_t>(o) * in + c];
      out[static_cast<size_t>(i) * outc + o] = s;
    }
  return out;
}

std::vector<double> ref_attention(const std::vector<double>& qkv, int b_ = B, int t_ = T,
                                  int c_ = C, int nh = NH) {
  const int hs = c_ / nh;
  const size_t c3 = 3 * static_cast<size_t>(c_);
  std::vector<double> out(static_cast<size_t>(b_) * t_ * c_, 0.0);
  std::vector<double> a(t_);
  for (int b = 0; b < b_; b++)
    for (int h = 0; h < nh; h++)
      for (int t = 0; t < t_; t++) {
        const double* q = &qkv[(b * t_ + t) * c3 + h * hs];
        double mx = -1e300;
        for (int t2 = 0; t2 <= t; t2++) {
          const double* k = &qkv[(b * t_ + t2) * c3 + c_ + h * hs];
          double s = 0;
          for (int i = 0; i < hs; i++) s += q[i] * k[i];
          a[t2] = s / std::sqrt(static_cast<double>(hs));
          mx = std::max(mx, a[t2]);
        }
        double sum = 0;
        for (int t2 = 0; t2 <= t; t2++) sum += (a[t2] = std::exp(a[t2] - mx));
        double* o = &out[(static_cast<size_t>(b) * t_ + t) * c_ + h * hs];
        for (int t2 = 0; t2 <= t; t2++) {
          const double* v = &qkv[(b * t_ + t2) * c3 + 2 * c_ + h * hs];
          for (int i = 0; i < hs; i++) o[i] += a[t2] / sum * v[i];
        }
      }
  return out;
}

std::vector<double> ref_gelu(const std::vector<double>& x) {
  std::vector<double> out(x.size());
  const double k = std::sqrt(2.0 / M_PI);
  for (size_t i = 0; i < x.size(); i++)
    out[i] = 0.5 * x[i] * (1.0 + std::tanh(k * (x[i] + 0.044715 * x[i] * x[i] * x[i])));
  return out;
}

std::vector<double> ref_crossentropy(const std::vector<double>& logits,
                                     const std::vector<int32_t>& targets) {
  std::vector<double> losses(N);
  for (int i = 0; i < N; i++) {
    double mx = -1e300, sum = 0;
    for (int j = 0; j < V; j++) mx = std::max(mx, logits[i * Vp + j]);
    for (int j = 0; j < V; j++) sum += std::exp(logits[i * Vp + j] - mx);
    losses[i] = std::log(sum) + mx - logits[i * Vp + targets[i]];
  }
  return losses;
}

std::vector<int32_t> random_tokens(Rng& rng, int n, int vocab) {
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(rng.below(vocab));
  return t;
}

// got == 2·once, up to the rounding of one extra add.
void require_doubled(const std::vector<float>& twice, const std::vector<float>& once) {
  std::vector<double> want(once.size());
  for (size_t i = 0; i < once.size(); i++) want[i] = 2.0 * once[i];
  CHECK(rel_error(twice, want) <= 1e-6);
}

}  // namespace

TEST_CASE("encoder forward and backward match the double reference and FD", "[ops]") {
  CpuBackend be(2);
  Rng rng(1);
  auto tokens = random_tokens(rng, N, V);
  tokens[1] = tokens[0];  // a repeated token: its dwte row gets two contributions
  auto wte = random_floats(rng, static_cast<size_t>(Vp) * C), wpe = random_floats(rng, maxT * C);
  auto w = random_floats(rng, static_cast<size_t>(N) * C);

  std::vector<float> out(static_cast<size_t>(N) * C);
  be.encoder_forward(out.data(), tokens.data(), wte.data(), wpe.data(), B, T, C);
  const auto wte_d = to_double(wte), wpe_d = to_double(wpe);
  CHECK(rel_error(out, ref_encoder(tokens, wte_d, wpe_d)) <= kForwardTol);

  std::vector<float> dwte(wte.size(), 0.0f), dwpe(wpe.size(), 0.0f);
  be.encoder_backward(dwte.data(), dwpe.data(), w.data(), tokens.data(), B, T, C);
  auto fd_wte = fd_gradient(wte_d, [&](const auto& x) { return weighted_sum(ref_encoder(tokens, x, wpe_d), w); });
  auto fd_wpe = fd_gradient(wpe_d, [&](const auto& x) { return weighted_sum(ref_encoder(tokens, wte_d, x), w); });
  CHECK(rel_error(dwte, fd_wte) <= kGradTol);
  CHECK(rel_error(dwpe, fd_wpe) <= kGradTol);

  // accumulates
  auto dwte1 = dwte, dwpe1 = dwpe;
  be.encoder_backward(dwte.data(), dwpe.data(), w.data(), tokens.data(), B, T, C);
  require_doubled(dwte, dwte1);
  require_doubled(dwpe, dwpe1);
}

TEST_CASE("layernorm forward and backward match the double reference and FD", "[ops]") {
  CpuBackend be(2);
  Rng rng(2);
  auto x = random_floats(rng, static_cast<size_t>(N) * C, 2.0f);
  for (int c = 0; c < C; c++) x[c] += 3.0f;  // a row with a large mean
  auto wt = random_floats(rng, C, 0.5f), bias = random_floats(rng, C, 0.5f);
  for (auto& v : wt) v += 1.0f;
  auto w = random_floats(rng, x.size());

  std::vector<float> out(x.size()), mean(N), rstd(N);
  be.layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), wt.data(), bias.data(), N, C);
  const auto xd = to_double(x), wd = to_double(wt), bd = to_double(bias);
  const auto ref = ref_layernorm(xd, wd, bd);
  CHECK(rel_error(out, ref.out) <= kForwardTol);
  CHECK(rel_error(mean, ref.mean) <= kForwardTol);
  CHECK(rel_error(rstd, ref.rstd) <= kForwardTol);

  std::vector<float> dx(x.size(), 0.0f), dw(C, 0.0f), db(C, 0.0f);
  be.layernorm_backward(dx.data(), dw.data(), db.data(), w.data(), x.data(), wt.data(), mean.data(),
                        rstd.data(), N, C);
  CHECK(rel_error(dx, fd_gradient(xd, [&](const auto& v) { return weighted_sum(ref_layernorm(v, wd, bd).out, w); })) <= kGradTol);
  CHECK(rel_error(dw, fd_gradient(wd, [&](const auto& v) { return weighted_sum(ref_layernorm(xd, v, bd).out, w); })) <= kGradTol);
  CHECK(rel_error(db, fd_gradient(bd, [&](const auto& v) { return weighted_sum(ref_layernorm(xd, wd, v).out, w); })) <= kGradTol);

  auto dx1 = dx, dw1 = dw, db1 = db;
  be.layernorm_backward(dx.data(), dw.data(), db.data(), w.data(), x.data(), wt.data(), mean.data(),
                        rstd.data(), N, C);
  require_doubled(dx, dx1);
  require_doubled(dw, dw1);
  require_doubled(db, db1);
}

TEST_CASE("residual_layernorm_forward is bit-identical to accumulate + layernorm_forward", "[ops]") {
  CpuBackend be(2);
  Rng rng(12);
  for (auto [n, c] : {std::pair{1, 33}, std::pair{1, 768}, std::pair{7, 768}, std::pair{37, 100},
                      std::pair{5, 4099}, std::pair{3, 1}}) {
    CAPTURE(n, c);
    const size_t nc = static_cast<size_t>(n) * c;
    auto res0 = random_floats(rng, nc, 2.0f), x = random_floats(rng, nc, 0.5f);
    for (auto& v : res0) v += 1.5f;  // rows with a non-zero mean
    const auto wt = random_floats(rng, c, 0.5f), bias = random_floats(rng, c, 0.5f);

    auto res_ref = res0;
    std::vector<float> out_ref(nc), mean_ref(n), rstd_ref(n);
    be.accumulate(res_ref.data(), x.data(), nc);
    be.layernorm_forward(out_ref.data(), mean_ref.data(), rstd_ref.data(), res_ref.data(), wt.data(),
                         bias.data(), n, c);

    auto res = res0;
    std::vector<float> out(nc, -1.0f), mean(n, -1.0f), rstd(n, -1.0f);
    be.residual_layernorm_forward(res.data(), x.data(), out.data(), mean.data(), rstd.data(), wt.data(),
                                  bias.data(), n, c);
    REQUIRE(std::memcmp(res.data(), res_ref.data(), nc * sizeof(float)) == 0);
    REQUIRE(std::memcmp(out.data(), out_ref.data(), nc * sizeof(float)) == 0);
    REQUIRE(std::memcmp(mean.data(), mean_ref.data(), n * sizeof(float)) == 0);
    REQUIRE(std::memcmp(rstd.data(), rstd_ref.data(), n * sizeof(float)) == 0);

    // The Backend default (the two calls) that backends without a fused kernel inherit.
    auto res_d = res0;
    std::vector<float> out_d(nc), mean_d(n), rstd_d(n);
    be.Backend::residual_layernorm_forward(res_d.data(), x.data(), out_d.data(), mean_d.data(), rstd_d.data(),
                                           wt.data(), bias.data(), n, c);
    REQUIRE(std::memcmp(out_d.data(), out_ref.data(), nc * sizeof(float)) == 0);
    REQUIRE(std::memcmp(res_d.data(), res_ref.data(), nc * sizeof(float)) == 0);
  }
}

TEST_CASE("matmul forward and backward match the double reference and FD", "[ops]") {
  CpuBackend be(2);
  Rng rng(3);
  auto x = random_floats(rng, static_cast<size_t>(N) * C), wt = random_floats(rng, static_cast<size_t>(OC) * C);
  auto bias = random_floats(rng, OC);
  auto w = random_floats(rng, static_cast<size_t>(N) * OC);
  const auto xd = to_double(x), wd = to_double(wt), bd = to_double(bias);

  for (const bool with_bias : {true, false}) {
    INFO("with bias: " << with_bias);
    const std::vector<double>* bptr = with_bias ? &bd : nullptr;
    std::vector<float> out(static_cast<size_t>(N) * OC, 123.0f);  // garbage: must be overwritten
    be.matmul_forward(out.data(), x.data(), wt.data(), with_bias ? bias.data() : nullptr, N, C, OC);
    CHECK(rel_error(out, ref_matmul(xd, wd, bptr, N, C, OC)) <= kForwardTol);

    std::vector<float> dx(x.size(), 0.0f), dw(wt.size(), 0.0f), db(OC, 0.0f);
    float* dbp = with_bias ? db.data() : nullptr;
    be.matmul_backward(dx.data(), dw.data(), dbp, w.data(), x.data(), wt.data(), N, C, OC, GradMode::accumulate);
    CHECK(rel_error(dx, fd_gradient(xd, [&](const auto& v) { return weighted_sum(ref_matmul(v, wd, bptr, N, C, OC), w); })) <= kGradTol);
    CHECK(rel_error(dw, fd_gradient(wd, [&](const auto& v) { return weighted_sum(ref_matmul(xd, v, bptr, N, C, OC), w); })) <= kGradTol);
    if (with_bias)
      CHECK(rel_error(db, fd_gradient(bd, [&](const auto& v) { return weighted_sum(ref_matmul(xd, wd, &v, N, C, OC), w); })) <= kGradTol);

    auto dx1 = dx, dw1 = dw, db1 = db;
    be.matmul_backward(dx.data(), dw.data(), dbp, w.data(), x.data(), wt.data(), N, C, OC, GradMode::accumulate);
    require_doubled(dx, dx1);
    require_doubled(dw, dw1);
    if (with_bias) require_doubled(db, db1);
  }
}

TEST_CASE("matmul at sizes where OpenBLAS and OpenMP split the work", "[ops]") {
  CpuBackend be(2);
  Rng rng(4);
  const int n = 130, c = 96, oc = 203;
  auto x = random_floats(rng, static_cast<size_t>(n) * c), wt = random_floats(rng, static_cast<size_t>(oc) * c);
  auto bias = random_floats(rng, oc), dout = random_floats(rng, static_cast<size_t>(n) * oc);
  const auto xd = to_double(x), wd = to_double(wt), bd = to_double(bias);
  std::vector<float> out(static_cast<size_t>(n) * oc);
  be.matmul_forward(out.data(), x.data(), wt.data(), bias.data(), n, c, oc);
  CHECK(rel_error(out, ref_matmul(xd, wd, &bd, n, c, oc)) <= kForwardTol);
  {
    // more rows than output columns: the threads split the rows (and each fills its rows
    // with the bias first)
    const int n2 = 250, oc2 = 40;
    auto x2 = random_floats(rng, static_cast<size_t>(n2) * c), w2 = random_floats(rng, static_cast<size_t>(oc2) * c);
    auto b2 = random_floats(rng, oc2);
    const auto b2d = to_double(b2);
    std::vector<float> out2(static_cast<size_t>(n2) * oc2, 123.0f);  // stale values must not leak in
    be.matmul_forward(out2.data(), x2.data(), w2.data(), b2.data(), n2, c, oc2);
    CHECK(rel_error(out2, ref_matmul(to_double(x2), to_double(w2), &b2d, n2, c, oc2)) <= kForwardTol);
  }

  std::vector<float> dx(x.size(), 0.0f), dw(wt.size(), 0.0f), db(oc, 0.0f);
  be.matmul_backward(dx.data(), dw.data(), db.data(), dout.data(), x.data(), wt.data(), n, c, oc, GradMode::accumulate);
  // exact formulas in double: dx = dout·W, dW = doutᵀ·x, db = Σ_rows dout
  std::vector<double> rdx(dx.size(), 0.0), rdw(dw.size(), 0.0), rdb(oc, 0.0);
  for (int i = 0; i < n; i++)
    for (int o = 0; o < oc; o++) {
      const double d = dout[static_cast<size_t>(i) * oc + o];
      rdb[o] += d;
      for (int k = 0; k < c; k++) {
        rdx[static_cast<size_t>(i) * c + k] += d * wd[static_cast<size_t>(o) * c + k];
        rdw[static_cast<size_t>(o) * c + k] += d * xd[static_cast<size_t>(i) * c + k];
      }
    }
  CHECK(rel_error(dx, rdx) <= kForwardTol);
  CHECK(rel_error(dw, rdw) <= kForwardTol);
  CHECK(rel_error(db, rdb) <= kForwardTol);
}

TEST_CASE("attention forward and backward match the double reference and FD", "[ops]") {
  CpuBackend be(2);
  Rng rng(5);
  auto qkv = random_floats(rng, static_cast<size_t>(N) * 3 * C);
  auto w = random_floats(rng, static_cast<size_t>(N) * C);
  const auto qd = to_double(qkv);

  std::vector<float> out(static_cast<size_t>(N) * C), att(static_cast<size_t>(B) * NH * T * T, 7.0f);
  be.attention_forward(out.data(), att.data(), qkv.data(), B, T, C, NH);
  CHECK(rel_error(out, ref_attention(qd)) <= kForwardTol);
  // each attention row is a distribution over the past, exactly 0 on the future
  for (int r = 0; r < B * NH * T; r++) {
    const int t = r % T;
    double sum = 0;
    for (int t2 = 0; t2 < T; t2++) {
      if (t2 > t) CHECK(att[r * T + t2] == 0.0f);
      sum += att[r * T + t2];
    }
    CHECK(sum == Approx(1.0).epsilon(1e-6));
  }

  std::vector<float> dqkv(qkv.size(), 0.0f), scratch(att.size());
  be.attention_backward(dqkv.data(), scratch.data(), w.data(), out.data(), qkv.data(), att.data(), B, T, C, NH);
  CHECK(rel_error(dqkv, fd_gradient(qd, [&](const auto& v) { return weighted_sum(ref_attention(v), w); })) <= kGradTol);

  auto dqkv1 = dqkv;
  be.attention_backward(dqkv.data(), scratch.data(), w.data(), out.data(), qkv.data(), att.data(), B, T, C, NH);
  require_doubled(dqkv, dqkv1);
}

TEST_CASE("attention over more rows than one sgemm block (T = 150) matches FD", "[ops]") {
  CpuBackend be(2);
  Rng rng(13);
  const int b = 1, t = 150, c = 4, nh = 2;  // 3 row blocks of 64, the last one partial
  auto qkv = random_floats(rng, static_cast<size_t>(b) * t * 3 * c, 1.5f);
  auto w = random_floats(rng, static_cast<size_t>(b) * t * c);
  const auto qd = to_double(qkv);
  std::vector<float> out(w.size()), att(static_cast<size_t>(b) * nh * t * t), scratch(att.size(), NAN);
  be.attention_forward(out.data(), att.data(), qkv.data(), b, t, c, nh);
  CHECK(rel_error(out, ref_attention(qd, b, t, c, nh)) <= kForwardTol);
  std::vector<float> dqkv(qkv.size(), 0.0f);
  be.attention_backward(dqkv.data(), scratch.data(), w.data(), out.data(), qkv.data(), att.data(), b, t, c, nh);
  // every 5th input: all of q, k and v of tokens in every block (stride coprime with 3C = 12)
  const auto [got, fd] = fd_sampled(dqkv, qd, [&](const auto& v) { return weighted_sum(ref_attention(v, b, t, c, nh), w); }, 5);
  CHECK(rel_error(got, fd) <= kGradTol);
}

TEST_CASE("attention is causal: a later token never changes earlier outputs", "[ops]") {
  CpuBackend be(2);
  Rng rng(6);
  auto qkv = random_floats(rng, static_cast<size_t>(N) * 3 * C);
  std::vector<float> out1(static_cast<size_t>(N) * C), out2(out1.size()), att(static_cast<size_t>(B) * NH * T * T);
  be.attention_forward(out1.data(), att.data(), qkv.data(), B, T, C, NH);
  const int tc = 3;  // change q, k and v of token 3 of batch row 0
  for (int j = 0; j < 3 * C; j++) qkv[tc * 3 * C + j] += 1.5f;
  be.attention_forward(out2.data(), att.data(), qkv.data(), B, T, C, NH);
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++) {
      const bool same = std::memcmp(&out1[(b * T + t) * C], &out2[(b * T + t) * C], sizeof(float) * C) == 0;
      INFO("b=" << b << " t=" << t);
      CHECK(same == (b == 1 || t < tc));
    }
}

TEST_CASE("gelu forward and backward match the double reference and FD", "[ops]") {
  CpuBackend be(2);
  Rng rng(7);
  auto x = random_floats(rng, 301, 2.5f);
  x[0] = 0.0f;
  x[1] = -9.0f;
  x[2] = 9.0f;
  auto w = random_floats(rng, x.size());
  const auto xd = to_double(x);
  std::vector<float> out(x.size());
  be.gelu_forward(out.data(), x.data(), x.size());
  CHECK(rel_error(out, ref_gelu(xd)) <= kForwardTol);
  std::vector<float> dx(x.size(), 0.0f);
  be.gelu_backward(dx.data(), x.data(), w.data(), x.size(), GradMode::accumulate);
  CHECK(rel_error(dx, fd_gradient(xd, [&](const auto& v) { return weighted_sum(ref_gelu(v), w); })) <= kGradTol);
  auto dx1 = dx;
  be.gelu_backward(dx.data(), x.data(), w.data(), x.size(), GradMode::accumulate);
  require_doubled(dx, dx1);
}

TEST_CASE("crossentropy matches the double reference and FD, ignoring padding columns", "[ops]") {
  CpuBackend be(2);
  Rng rng(8);
  auto logits = random_floats(rng, static_cast<size_t>(N) * Vp, 3.0f);
  for (int i = 0; i < N; i++)  // padding columns hold garbage the op must never read
    for (int j = V; j < Vp; j++) logits[i * Vp + j] = std::numeric_limits<float>::quiet_NaN();
  logits[5] = 80.0f;  // a large logit: needs the max subtraction
  auto targets = random_tokens(rng, N, V);
  targets[0] = 5;
  const float dloss = 0.37f;
  const auto ld = to_double(logits);

  std::vector<float> losses(N);
  be.crossentropy_forward(losses.data(), logits.data(), targets.data(), N, V, Vp);
  CHECK(rel_error(losses, ref_crossentropy(ld, targets)) <= kForwardTol);

  std::vector<float> dl(logits.size(), 5.0f);  // assigned, not accumulated
  be.crossentropy_backward(dl.data(), logits.data(), losses.data(), targets.data(), dloss, N, V, Vp);
  auto fd = fd_gradient(ld, [&](const auto& v) {
    double s = 0;
    for (double l : ref_crossentropy(v, targets)) s += dloss * l;
    return s;
  });
  for (int i = 0; i < N; i++)
    for (int j = V; j < Vp; j++) {
      CHECK(dl[i * Vp + j] == 0.0f);  // padding: exactly zero gradient
      fd[i * Vp + j] = 0.0;           // (FD through NaN columns is NaN; the op ignores them)
    }
  CHECK(rel_error(dl, fd) <= kGradTol);

  // in place (dlogits aliases logits) gives bit-identical gradients
  auto inplace = logits;
  be.crossentropy_backward(inplace.data(), inplace.data(), losses.data(), targets.data(), dloss, N, V, Vp);
  CHECK(std::memcmp(inplace.data(), dl.data(), sizeof(float) * dl.size()) == 0);

  // a target outside the vocabulary is an error, not a wild read
  auto bad = targets;
  bad[3] = V;
  CHECK_THROWS_AS(be.crossentropy_forward(losses.data(), logits.data(), bad.data(), N, V, Vp), competelm::Error);
}

namespace {
namespace simd = competelm::cpu::simd;
constexpr simd::Isa kAllIsas[] = {simd::Isa::kGeneric, simd::Isa::kAvx2, simd::Isa::kAvx512};
}  // namespace

TEST_CASE("vector exp and tanh are accurate over their whole range", "[ops]") {
  for (simd::Isa isa : kAllIsas) {
    if (!simd::supported(isa)) continue;
    const simd::Kernels& k = simd::kernels_for(isa);
    INFO("kernels: " << k.name);
    const int n = 200003;  // not a multiple of 16: the tail path too
    std::vector<float> x(n), y(n), e(n), th(n);
    for (int i = 0; i < n; i++) {
      x[i] = -87.0f + 175.0f * static_cast<float>(i) / n;
      y[i] = x[i] / 8.0f;  // tanh over [-11, 11]
    }
    k.exp_shifted(e.data(), x.data(), n, 0.0f, 1.0f);
    k.tanh(th.data(), y.data(), n);
    double max_exp_rel = 0, max_tanh_abs = 0;
    for (int i = 0; i < n; i++) {
      const double want = std::exp(static_cast<double>(x[i]));
      max_exp_rel = std::max(max_exp_rel, std::abs(e[i] - want) / want);
      max_tanh_abs = std::max(max_tanh_abs, std::abs(th[i] - std::tanh(static_cast<double>(y[i]))));
    }
    CHECK(max_exp_rel <= 4e-7);  // ~3 ulp
    CHECK(max_tanh_abs <= 3e-7);
    // far outside the range: clamped, finite, no NaN; shift and scale applied
    const float ext_in[5] = {-1e30f, -200.0f, 200.0f, 0.0f, 3.0f};
    float ext[5];
    k.exp_shifted(ext, ext_in, 5, 0.0f, 1.0f);
    CHECK((ext[0] >= 0.0f && ext[0] < 1e-37f && ext[1] < 1e-37f && std::isfinite(ext[2]) && ext[3] == 1.0f));
    k.exp_shifted(ext, ext_in, 5, 3.0f, 0.5f);
    CHECK(ext[4] == 0.5f);
  }
}

// The AVX2/AVX-512 variants run the generic kernels' code at other widths; they may differ
// only by FMA contraction (a rounding or two), never by a lane, tail or alignment mistake.
TEST_CASE("every supported vector instruction set agrees with the generic kernels", "[ops]") {
  Rng rng(21);
  const simd::Kernels& ref = simd::kernels_for(simd::Isa::kGeneric);
  // exp: element by element; the rest: relative to the largest magnitude (rounding near a
  // zero crossing, e.g. in m = β1·m + (1-β1)·g, is small only in absolute terms)
  auto max_rel = [](const std::vector<float>& a, const std::vector<float>& b) {
    double worst = 0;
    for (size_t i = 0; i < a.size(); i++)
      worst = std::max(worst, std::abs(static_cast<double>(a[i]) - b[i]) / std::abs(static_cast<double>(a[i])));
    return worst;
  };
  auto norm_err = [](const std::vector<float>& a, const std::vector<float>& b) { return rel_error(b, to_double(a)); };
  for (simd::Isa isa : kAllIsas) {
    if (!simd::supported(isa)) continue;
    const simd::Kernels& k = simd::kernels_for(isa);
    INFO("kernels: " << k.name);
    for (size_t n : {size_t{1}, size_t{15}, size_t{16}, size_t{33}, size_t{1000}, size_t{50257}}) {
      INFO("n = " << n);
      // offset by one float: unaligned loads and stores; the guard elements must stay put
      auto x = random_floats(rng, n + 2, 4.0f), d = random_floats(rng, n + 2), acc = random_floats(rng, n + 2);
      std::vector<float> a(n + 2, 7.0f), b(n + 2, 7.0f);
      ref.exp_shifted(a.data() + 1, x.data() + 1, n, 1.5f, 0.25f);
      k.exp_shifted(b.data() + 1, x.data() + 1, n, 1.5f, 0.25f);
      CHECK(max_rel(a, b) <= 1e-6);
      CHECK((b[0] == 7.0f && b[n + 1] == 7.0f));
      ref.gelu_forward(a.data() + 1, x.data() + 1, n);
      k.gelu_forward(b.data() + 1, x.data() + 1, n);
      CHECK(norm_err(a, b) <= 1e-6);
      a = acc, b = acc;
      ref.gelu_backward(a.data() + 1, x.data() + 1, d.data() + 1, n);
      k.gelu_backward(b.data() + 1, x.data() + 1, d.data() + 1, n);
      CHECK(norm_err(a, b) <= 1e-6);
      CHECK((b[0] == acc[0] && b[n + 1] == acc[n + 1]));
      const simd::SoftmaxStats sa = ref.softmax_stats(x.data() + 1, n), sb = k.softmax_stats(x.data() + 1, n);
      CHECK(sa.max == sb.max);
      CHECK(sb.sum_exp == Approx(sa.sum_exp).epsilon(1e-6));
      CHECK(k.sum_squares(x.data() + 1, n) == Approx(ref.sum_squares(x.data() + 1, n)).epsilon(1e-13));
      const simd::AdamwCoeffs c{0.7f, 0.999f, 0.9f, 0.95f, 0.1f, 0.05f, 0.3f, 1e-8f, -0.01f};
      auto p1 = x, m1 = d, v1 = random_floats(rng, n + 2, 1.0f);
      for (float& vv : v1) vv = vv * vv;
      auto p2 = p1, m2 = m1, v2 = v1;
      ref.adamw(p1.data() + 1, acc.data() + 1, m1.data() + 1, v1.data() + 1, n, c);
      k.adamw(p2.data() + 1, acc.data() + 1, m2.data() + 1, v2.data() + 1, n, c);
      CHECK(norm_err(p1, p2) <= 1e-6);
      CHECK(norm_err(m1, m2) <= 1e-6);
      CHECK(norm_err(v1, v2) <= 1e-6);
      CHECK((p2[0] == x[0] && p2[n + 1] == x[n + 1]));
    }
  }
}

TEST_CASE("the backend runs the widest vector instruction set the CPU supports", "[ops]") {
  const simd::Isa want = simd::supported(simd::Isa::kAvx512) ? simd::Isa::kAvx512
                         : simd::supported(simd::Isa::kAvx2) ? simd::Isa::kAvx2
                                                             : simd::Isa::kGeneric;
  CHECK(&simd::kernels() == &simd::kernels_for(want));
  CHECK(simd::supported(simd::Isa::kGeneric));
}

TEST_CASE("softmax_stats and sum_squares match double references", "[ops]") {
  Rng rng(22);
  const size_t n = 50257;
  auto x = random_floats(rng, n, 10.0f);
  double mx = -1e300, sumsq = 0;
  for (float v : x) mx = std::max(mx, static_cast<double>(v)), sumsq += static_cast<double>(v) * v;
  double se = 0;
  for (float v : x) se += std::exp(static_cast<double>(v) - mx);
  const simd::SoftmaxStats s = simd::kernels().softmax_stats(x.data(), n);
  CHECK(s.max == static_cast<float>(mx));
  CHECK(s.sum_exp == Approx(se).epsilon(1e-6));
  CHECK(simd::kernels().sum_squares(x.data(), n) == Approx(sumsq).epsilon(1e-12));
  CHECK(simd::kernels().sum_squares(x.data(), 0) == 0.0);
}

TEST_CASE("residual, accumulate and scale", "[ops]") {
  CpuBackend be(2);
  Rng rng(9);
  const size_t n = 1001;
  auto a = random_floats(rng, n), b = random_floats(rng, n);
  std::vector<float> out(n);
  be.residual_forward(out.data(), a.data(), b.data(), n);
  for (size_t i = 0; i < n; i++) REQUIRE(out[i] == a[i] + b[i]);
  auto y = a;
  be.accumulate(y.data(), b.data(), n);
  be.accumulate(y.data(), b.data(), n);
  for (size_t i = 0; i < n; i++) REQUIRE(y[i] == (a[i] + b[i]) + b[i]);
  be.scale(y.data(), 0.5f, n);
  for (size_t i = 0; i < n; i++) REQUIRE(y[i] == ((a[i] + b[i]) + b[i]) * 0.5f);
}

TEST_CASE("sum_squares is exact to double rounding", "[ops]") {
  CpuBackend be(2);
  Rng rng(10);
  auto x = random_floats(rng, 200003);
  double want = 0;
  for (float v : x) want += static_cast<double>(v) * v;
  CHECK(be.sum_squares(x.data(), x.size()) == Approx(want).epsilon(1e-12));
  CHECK(be.sum_squares(x.data(), 0) == 0.0);
}

TEST_CASE("adamw_update follows the documented AdamW formula", "[ops]") {
  CpuBackend be(2);
  Rng rng(11);
  const size_t n = 257;
  const float lr = 1e-2f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f, gs = 0.7f;
  auto p = random_floats(rng, n);
  std::vector<float> m(n, 0.0f), v(n, 0.0f);
  std::vector<double> rp = to_double(p), rm(n, 0.0), rv(n, 0.0);
  for (int t = 1; t <= 5; t++) {
    auto g = random_floats(rng, n);
    g[0] = 0.0f;  // zero gradient: only the decay and the old moments act
    be.adamw_update(p.data(), g.data(), m.data(), v.data(), n, lr, b1, b2, eps, wd, gs, t);
    for (size_t i = 0; i < n; i++) {
      const double gi = static_cast<double>(g[i]) * gs;
      rm[i] = b1 * rm[i] + (1.0 - b1) * gi;
      rv[i] = b2 * rv[i] + (1.0 - b2) * gi * gi;
      const double mhat = rm[i] / (1.0 - std::pow(static_cast<double>(b1), t));
      const double vhat = rv[i] / (1.0 - std::pow(static_cast<double>(b2), t));
      rp[i] -= lr * (mhat / (std::sqrt(vhat) + eps) + wd * rp[i]);
    }
  }
  CHECK(rel_error(p, rp) <= 1e-5);
  CHECK(rel_error(m, rm) <= 1e-5);
  CHECK(rel_error(v, rv) <= 1e-5);
}

namespace {

// A miniature training step touching every op, returning every output and gradient.
std::vector<float> mini_step(int threads) {
  CpuBackend be(threads);
  const int b = 2, t = 33, c = 48, nh = 4, v = 101, vp = 128, n = b * t;
  Rng rng(12);
  auto tokens = random_tokens(rng, n, v), targets = random_tokens(rng, n, v);
  auto wte = random_floats(rng, static_cast<size_t>(vp) * c, 0.1f), wpe = random_floats(rng, static_cast<size_t>(t) * c, 0.1f);
  auto lnw = random_floats(rng, c), lnb = random_floats(rng, c);
  auto wqkv = random_floats(rng, static_cast<size_t>(3) * c * c, 0.2f), bqkv = random_floats(rng, 3 * c);
  const size_t nc = static_cast<size_t>(n) * c;
  std::vector<float> x(nc), ln(nc), mean(n), rstd(n), qkv(nc * 3), att(static_cast<size_t>(b) * nh * t * t), ao(nc),
      res(nc), ge(nc), logits(static_cast<size_t>(n) * vp), losses(n);
  be.encoder_forward(x.data(), tokens.data(), wte.data(), wpe.data(), b, t, c);
  be.layernorm_forward(ln.data(), mean.data(), rstd.data(), x.data(), lnw.data(), lnb.data(), n, c);
  be.matmul_forward(qkv.data(), ln.data(), wqkv.data(), bqkv.data(), n, c, 3 * c);
  be.attention_forward(ao.data(), att.data(), qkv.data(), b, t, c, nh);
  be.residual_forward(res.data(), x.data(), ao.data(), nc);
  be.gelu_forward(ge.data(), res.data(), nc);
  be.matmul_forward(logits.data(), ge.data(), wte.data(), nullptr, n, c, vp);
  be.crossentropy_forward(losses.data(), logits.data(), targets.data(), n, v, vp);

  std::vector<float> dwte(wte.size()), dwpe(wpe.size()), dlnw(c), dlnb(c), dwqkv(wqkv.size()), dbqkv(3 * c),
      dge(nc), dres(nc), dqkv(qkv.size()), dln(nc), dx(nc), scratch(att.size());
  be.crossentropy_backward(logits.data(), logits.data(), losses.data(), targets.data(), 1.0f / n, n, v, vp);
  be.matmul_backward(dge.data(), dwte.data(), nullptr, logits.data(), ge.data(), wte.data(), n, c, vp, GradMode::accumulate);
  be.gelu_backward(dres.data(), res.data(), dge.data(), nc, GradMode::accumulate);
  be.accumulate(dx.data(), dres.data(), nc);
  be.attention_backward(dqkv.data(), scratch.data(), dres.data(), ao.data(), qkv.data(), att.data(), b, t, c, nh);
  be.matmul_backward(dln.data(), dwqkv.data(), dbqkv.data(), dqkv.data(), ln.data(), wqkv.data(), n, c, 3 * c, GradMode::accumulate);
  be.layernorm_backward(dx.data(), dlnw.data(), dlnb.data(), dln.data(), x.data(), lnw.data(), mean.data(), rstd.data(), n, c);
  be.encoder_backward(dwte.data(), dwpe.data(), dx.data(), tokens.data(), b, t, c);
  const double norm2 = be.sum_squares(dwte.data(), dwte.size());
  std::vector<float> m(wte.size()), vv(wte.size());
  be.adamw_update(wte.data(), dwte.data(), m.data(), vv.data(), wte.size(), 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f,
                  static_cast<float>(1.0 / std::sqrt(norm2 + 1.0)), 1);

  std::vector<float> all;
  for (const auto* vec : {&losses, &logits, &dwte, &dwpe, &dlnw, &dlnb, &dwqkv, &dbqkv, &dqkv, &dx, &wte, &m, &vv})
    all.insert(all.end(), vec->begin(), vec->end());
  all.push_back(static_cast<float>(norm2));
  return all;
}

}  // namespace

TEST_CASE("a step through every op is bit-identical run to run", "[ops]") {
  for (int threads : {1, 2}) {
    INFO("threads: " << threads);
    const auto a = mini_step(threads), b = mini_step(threads);
    REQUIRE(a.size() == b.size());
    CHECK(std::memcmp(a.data(), b.data(), sizeof(float) * a.size()) == 0);
    bool finite = true;
    for (float x : a) finite = finite && std::isfinite(x);
    CHECK(finite);
  }
}

TEST_CASE("cpu backend memory is zeroed and 64-byte aligned", "[ops]") {
  CpuBackend be(1);
  // 5 MiB + 3: a huge-page-aligned buffer whose size is not a multiple of the page
  for (size_t bytes : {size_t{0}, size_t{4}, size_t{1000}, size_t{1} << 20, (size_t{5} << 20) + 3}) {
    auto* p = static_cast<unsigned char*>(be.alloc(bytes));
    REQUIRE(p != nullptr);
    CHECK(reinterpret_cast<uintptr_t>(p) % 64 == 0);
    if (bytes >= (size_t{4} << 20)) CHECK(reinterpret_cast<uintptr_t>(p) % (size_t{2} << 20) == 0);
    bool zero = true;
    for (size_t i = 0; i < bytes; i++) zero = zero && p[i] == 0;
    CHECK(zero);
    be.dealloc(p);
  }
  float host[3] = {1, 2, 3}, back[3] = {};
  auto* d = static_cast<float*>(be.alloc(sizeof host));
  be.upload(d, host, sizeof host);
  be.download(back, d, sizeof back);
  CHECK(std::memcmp(host, back, sizeof host) == 0);
  be.zero(d, sizeof host);
  be.download(back, d, sizeof back);
  CHECK((back[0] == 0.0f && back[1] == 0.0f && back[2] == 0.0f));
  be.dealloc(d);
}

TEST_CASE("make_backend picks cpu and names unavailable or unknown devices", "[ops]") {
  CHECK(competelm::make_backend("cpu", 1)->name() == "cpu");
  const competelm::CudaProbe probe = competelm::probe_cuda();
  if (probe.built && probe.devices > 0) {  // a CUDA build on a GPU machine
    CHECK(competelm::make_backend("cuda", 1)->name() == "cuda");
    CHECK(competelm::make_backend("auto", 1)->name() == "cuda");
  } else {
    CHECK(competelm::make_backend("auto", 1)->name() == "cpu");
    try {
      competelm::make_backend("cuda", 1);
      FAIL("cuda backend without CUDA or without a GPU");
    } catch (const competelm::Error& e) {
      CHECK_THAT(e.what(), Catch::Contains("run.device: cuda"));
      CHECK_THAT(e.hint(), Catch::Contains("cpu"));
    }
  }
  try {
    competelm::make_backend("tpu", 1);
    FAIL("unknown device accepted");
  } catch (const competelm::Error& e) {
    CHECK_THAT(e.what(), Catch::Contains("'tpu'"));
    CHECK_THAT(e.what(), Catch::Contains("cpu, cuda or auto"));
  }
  CHECK_THROWS_AS(CpuBackend(-1), competelm::Error);
}

TEST_CASE("run.precision: the CPU backend takes fp32 (and auto), refuses tf32/bf16 with a hint", "[ops]") {
  auto be = competelm::make_backend("cpu", 1);
  competelm::apply_precision(*be, "auto");
  CHECK(be->precision() == competelm::Precision::fp32);
  competelm::apply_precision(*be, "fp32");
  CHECK(be->precision() == competelm::Precision::fp32);
  CHECK(be->memory_is_host());
  for (const char* p : {"bf16", "tf32"}) {
    try {
      competelm::apply_precision(*be, p);
      FAIL("the CPU backend accepted run.precision " << p);
    } catch (const competelm::Error& e) {
      CHECK_THAT(e.what(), Catch::Contains(std::string("run.precision: ") + p) && Catch::Contains("CUDA"));
      CHECK_THAT(e.hint(), Catch::Contains("fp32"));
    }
  }
  CHECK_THROWS_WITH(competelm::apply_precision(*be, "fp8"), Catch::Contains("'fp8'"));
}

TEST_CASE("sgemm benchmark reports a positive throughput", "[ops]") {
  CpuBackend be(1);
  const double gflops = competelm::cpu::measure_sgemm_gflops(64, 48, 32, 3);
  CHECK(std::isfinite(gflops));
  CHECK(gflops > 0.0);
  CHECK_THROWS_AS(competelm::cpu::measure_sgemm_gflops(0, 4, 4, 1), competelm::Error);
}
