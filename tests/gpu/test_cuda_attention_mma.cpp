// The register-resident bf16 flash attention (cuda/attention_mma.cu: mma.sync m16n8k16, switched
// on here with set_attention_mma_enabled whatever COMPETELM_ATTENTION_MMA says) vs the fp32 CPU
// oracle: forward out, the kept per-row log-sum-exp (against a double host computation),
// backward dqkv accumulated into a pre-filled buffer, determinism, causality, and agreement with
// the wmma path (attention_tc.cu) it replaces.
//
// Tolerances as tests/gpu/test_cuda_attention_tc.cpp (bf16 operands): per tensor, out and each
// of dq, dk, dv ||cuda − cpu||₂ / ||cpu||₂ ≤ 1.5e-2 (the gradient parts without the pre-filled
// values, the denominator floored at a tenth of the whole gradient's norm), lse max abs error ≤
// 2e-2 · qkv_scale².
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "attention_ref.hpp"
#include "cuda_backend.cuh"
#include "gpu_compare.hpp"

namespace competelm::gpu_testing {
namespace {

constexpr double kNormTol = 1.5e-2;

struct MmaShape {
  int B, T, C, NH;
  float qkv_scale = 1.0f;
};

double rel_err(const std::vector<float>& got, const std::vector<float>& ref, const std::vector<float>* base,
               size_t period, size_t lo, size_t hi, double floor2, bool& finite) {
  double d2 = 0.0, r2 = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (period != 0 && (i % period < lo || i % period >= hi)) continue;
    if (!std::isfinite(got[i])) finite = false;
    const double d = double(got[i]) - ref[i], r = double(ref[i]) - (base ? (*base)[i] : 0.0);
    d2 += d * d;
    r2 += r * r;
  }
  return std::sqrt(d2 / std::max(r2, floor2));
}

bool bit_identical(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

cuda::CudaBackend& cuda_of(Pair& p) { return dynamic_cast<cuda::CudaBackend&>(*p.cuda); }

void check_attention_mma(const MmaShape& s, uint64_t seed) {
  INFO(describe(s));
  Pair p;
  cuda::CudaBackend& cu = cuda_of(p);
  cu.set_precision(Precision::bf16);
  cu.set_attention_mma_enabled(true);
  const int B = s.B, T = s.T, C = s.C, NH = s.NH;
  const size_t n_qkv = size_t(B) * T * 3 * C, n_out = size_t(B) * T * C, n_rows = size_t(B) * NH * T;

  const std::vector<float> qkv_host = randn(n_qkv, seed, s.qkv_scale);
  Twin<float> qkv(p, qkv_host);
  Twin<float> out(p, randn(n_out, seed + 1));  // garbage: the forward overwrites it
  Buffer att_cpu(*p.cpu, p.cpu->attention_state_elements(B, NH, T));
  Buffer att_cuda(*p.cuda, n_rows);

  // ---- forward ----
  p.cpu->attention_forward(out.cpu, att_cpu.p, qkv.cpu, B, T, C, NH);
  cu.attention_forward(out.cuda, att_cuda.p, qkv.cuda, B, T, C, NH);
  const std::vector<float> out_cpu = out.host_cpu(), out_cuda = out.host_cuda();
  bool finite = true;
  const double out_err = rel_err(out_cuda, out_cpu, nullptr, 0, 0, 0, 0.0, finite);
  CAPTURE(out_err);
  REQUIRE(finite);
  CHECK(out_err <= kNormTol);
  CHECK(out_err > 1e-6);  // bf16 rounding shows: a tensor-core path ran, not the fp32 one

  const std::vector<float> lse = att_cuda.host(), lse_ref = host_lse(qkv_host, s);
  double lse_err = 0.0;
  for (size_t i = 0; i < lse.size(); ++i)
    lse_err = std::max(lse_err, std::isfinite(lse[i]) ? std::abs(double(lse[i]) - lse_ref[i]) : INFINITY);
  CAPTURE(lse_err);
  CHECK(lse_err <= 2e-2 * s.qkv_scale * s.qkv_scale);

  // ---- backward: dqkv += into a pre-filled buffer ----
  const std::vector<float> prefill = randn(n_qkv, seed + 3, 0.05f);
  Twin<float> dout(p, randn(n_out, seed + 2));
  Twin<float> dqkv(p, prefill);
  Buffer scratch_cpu(*p.cpu, p.cpu->attention_scratch_elements(B, NH, T));
  Buffer scratch_cuda(*p.cuda, n_rows);
  p.cpu->attention_backward(dqkv.cpu, scratch_cpu.p, dout.cpu, out.cpu, qkv.cpu, att_cpu.p, B, T, C, NH);
  cu.attention_backward(dqkv.cuda, scratch_cuda.p, dout.cuda, out.cuda, qkv.cuda, att_cuda.p, B, T, C, NH);
  const std::vector<float> g_cpu = dqkv.host_cpu(), g_cuda = dqkv.host_cuda();
  double all2 = 0.0;
  for (size_t i = 0; i < g_cpu.size(); ++i) all2 += (double(g_cpu[i]) - prefill[i]) * (double(g_cpu[i]) - prefill[i]);
  const char* names[3] = {"dq", "dk", "dv"};
  for (int part = 0; part < 3; ++part) {
    finite = true;
    const double e = rel_err(g_cuda, g_cpu, &prefill, 3 * size_t(C), size_t(part) * C, size_t(part + 1) * C,
                             0.01 * all2, finite);
    INFO(names[part] << ": normwise error " << e);
    CHECK(finite);
    CHECK(e <= kNormTol);
  }

  // ---- determinism: the same calls again give bit-identical results ----
  Buffer att_again(*p.cuda, n_rows);
  cu.attention_forward(out.cuda, att_again.p, qkv.cuda, B, T, C, NH);
  CHECK(bit_identical(out_cuda, out.host_cuda()));
  CHECK(bit_identical(lse, att_again.host()));
  Buffer g1(*p.cuda, n_qkv), g2(*p.cuda, n_qkv);  // zeroed
  cu.attention_backward(g1.p, scratch_cuda.p, dout.cuda, out.cuda, qkv.cuda, att_cuda.p, B, T, C, NH);
  cu.attention_backward(g2.p, scratch_cuda.p, dout.cuda, out.cuda, qkv.cuda, att_cuda.p, B, T, C, NH);
  const std::vector<float> h1 = g1.host(), h2 = g2.host();
  CHECK(bit_identical(h1, h2));

  // ---- the wmma path agrees (both bf16: within twice the oracle tolerance of each other) ----
  cu.set_attention_mma_enabled(false);
  Twin<float> out_tc(p, n_out);
  Buffer att_tc(*p.cuda, n_rows), g_tc(*p.cuda, n_qkv);
  cu.attention_forward(out_tc.cuda, att_tc.p, qkv.cuda, B, T, C, NH);
  cu.attention_backward(g_tc.p, scratch_cuda.p, dout.cuda, out_tc.cuda, qkv.cuda, att_tc.p, B, T, C, NH);
  finite = true;
  CHECK(rel_err(out_cuda, out_tc.host_cuda(), nullptr, 0, 0, 0, 0.0, finite) <= 2 * kNormTol);
  CHECK(rel_err(h1, g_tc.host(), nullptr, 0, 0, 0, 0.0, finite) <= 2 * kNormTol);
  CHECK(finite);
}

TEST_CASE("cuda attention mma: hs 64, awkward T match the CPU oracle normwise", "[cuda][attention][mma]") {
  check_attention_mma({1, 1, 64, 1}, 141);     // a single token
  check_attention_mma({2, 17, 128, 2}, 142);   // less than one tile
  check_attention_mma({1, 64, 192, 3}, 143);   // exactly one tile
  check_attention_mma({2, 65, 64, 1}, 144);    // one past a tile
  check_attention_mma({2, 200, 192, 3}, 145);  // 4 tiles, the last partial
  check_attention_mma({1, 333, 128, 2}, 146);  // 6 tiles: double buffering on every path
}

TEST_CASE("cuda attention mma: peaked softmax, hs 32", "[cuda][attention][mma]") {
  check_attention_mma({2, 200, 128, 2, 2.0f}, 151);  // hs 64, qkv scaled by 2: strong online rescaling
  check_attention_mma({2, 100, 128, 4}, 152);        // hs 32
  check_attention_mma({6, 13, 256, 8}, 153);         // hs 32, T < 16, B·NH = 48
  check_attention_mma({1, 257, 64, 2, 1.5f}, 154);   // hs 32, one past 4 tiles
}

TEST_CASE("cuda attention mma: GPT-2 small layer shapes", "[cuda][attention][mma]") {
  check_attention_mma({4, 256, 768, 12}, 161);
  check_attention_mma({4, 1024, 768, 12}, 162);
}

TEST_CASE("cuda attention mma: causal, and hs 128 falls back to the wmma path", "[cuda][attention][mma]") {
  Pair p;
  cuda::CudaBackend& cu = cuda_of(p);
  cu.set_precision(Precision::bf16);
  cu.set_attention_mma_enabled(true);
  const int B = 2, T = 150, C = 128, NH = 2, ts = 77;
  std::vector<float> qkv = randn(size_t(B) * T * 3 * C, 171), dout = randn(size_t(B) * T * C, 172);
  auto run = [&](const std::vector<float>& q, const std::vector<float>& d, std::vector<float>& o,
                 std::vector<float>& l, std::vector<float>& g) {
    Twin<float> tq(p, q), td(p, d), to(p, d.size()), tg(p, q.size());
    Buffer lse(*p.cuda, size_t(B) * NH * T), scr(*p.cuda, size_t(B) * NH * T);
    cu.attention_forward(to.cuda, lse.p, tq.cuda, B, T, C, NH);
    cu.attention_backward(tg.cuda, scr.p, td.cuda, to.cuda, tq.cuda, lse.p, B, T, C, NH);
    o = to.host_cuda();
    l = lse.host();
    g = tg.host_cuda();
  };
  std::vector<float> o1, l1, g1, o2, l2, g2;
  run(qkv, dout, o1, l1, g1);
  const std::vector<float> noise = randn(qkv.size(), 173, 3.0f);
  for (int b = 0; b < B; ++b)
    for (int t = ts; t < T; ++t) {
      for (int c = 0; c < 3 * C; ++c) qkv[(size_t(b) * T + t) * 3 * C + c] = noise[(size_t(b) * T + t) * 3 * C + c];
      for (int c = 0; c < C; ++c) dout[(size_t(b) * T + t) * C + c] *= -2.0f;
    }
  run(qkv, dout, o2, l2, g2);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < ts; ++t) {
      CHECK(std::memcmp(&o1[(size_t(b) * T + t) * C], &o2[(size_t(b) * T + t) * C], C * sizeof(float)) == 0);
      CHECK(std::memcmp(&g1[(size_t(b) * T + t) * 3 * C], &g2[(size_t(b) * T + t) * 3 * C], C * sizeof(float)) == 0);
      for (int h = 0; h < NH; ++h) CHECK(l1[(size_t(b) * NH + h) * T + t] == l2[(size_t(b) * NH + h) * T + t]);
    }
  // hs 128 has no mma kernel: the bf16 mode still works (attention_tc.cu).
  Twin<float> q3(p, randn(size_t(1) * 20 * 3 * 256, 174)), o3(p, size_t(20) * 256);
  Buffer l3(*p.cuda, size_t(2) * 20), l3_cpu(*p.cpu, p.cpu->attention_state_elements(1, 2, 20));
  cu.attention_forward(o3.cuda, l3.p, q3.cuda, 1, 20, 256, 2);
  p.cpu->attention_forward(o3.cpu, l3_cpu.p, q3.cpu, 1, 20, 256, 2);
  bool finite = true;
  CHECK(rel_err(o3.host_cuda(), o3.host_cpu(), nullptr, 0, 0, 0, 0.0, finite) <= kNormTol);
  CHECK(finite);
}

// Speed of fwd + bwd at the GPT-2 small training shape: wmma (attention_tc.cu) vs mma
// (attention_mma.cu). Prints; checks only that the log-sum-exp is finite.
// Run: competelm-gpu-tests "[.bench]" -s
TEST_CASE("cuda attention mma: fwd+bwd speed, tc vs mma", "[cuda][attention][mma][.bench]") {
  Pair p;
  cuda::CudaBackend& cu = cuda_of(p);
  cu.set_precision(Precision::bf16);
  const int B = 16, T = 1024, C = 768, NH = 12, hs = C / NH;
  const size_t n_qkv = size_t(B) * T * 3 * C, n_out = size_t(B) * T * C, n_rows = size_t(B) * NH * T;
  Buffer qkv(*p.cuda, n_qkv), dqkv(*p.cuda, n_qkv), out(*p.cuda, n_out), dout(*p.cuda, n_out);
  Buffer lse(*p.cuda, n_rows), scratch(*p.cuda, n_rows);
  const std::vector<float> q_host = randn(n_qkv, 181), d_host = randn(n_out, 182);
  p.cuda->upload(qkv.p, q_host.data(), n_qkv * sizeof(float));
  p.cuda->upload(dout.p, d_host.data(), n_out * sizeof(float));
  const double fwd_flops = 4.0 * B * NH * double(T) * T * hs / 2.0;  // causal: half of QKᵀ and PV
  for (bool mma : {false, true}) {
    cu.set_attention_mma_enabled(mma);
    auto fwd = [&] { cu.attention_forward(out.p, lse.p, qkv.p, B, T, C, NH); };
    auto bwd = [&] { cu.attention_backward(dqkv.p, scratch.p, dout.p, out.p, qkv.p, lse.p, B, T, C, NH); };
    fwd();
    bwd();
    cu.synchronize();
    const int reps = 10;
    auto time_ms = [&](auto&& f) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < reps; ++i) f();
      cu.synchronize();
      return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / reps;
    };
    const double f_ms = time_ms(fwd), b_ms = time_ms(bwd);
    std::printf("attention bf16 %s B=%d T=%d C=%d NH=%d: fwd %.2f ms (%.1f TFLOP/s), bwd %.2f ms (%.1f TFLOP/s)\n",
                mma ? "mma " : "wmma", B, T, C, NH, f_ms, fwd_flops / (f_ms * 1e9), b_ms,
                2.5 * fwd_flops / (b_ms * 1e9));
    const std::vector<float> l_host = lse.host();
    CHECK(std::all_of(l_host.begin(), l_host.end(), [](float x) { return std::isfinite(x); }));
  }
}

}  // namespace
}  // namespace competelm::gpu_testing
