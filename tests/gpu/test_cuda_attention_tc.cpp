// CUDA attention in bf16 precision mode (tensor cores, cuda/attention_tc.cu) vs the fp32 CPU
// oracle: forward out, the kept state (per-row log-sum-exp, checked against a double host
// computation), backward dqkv accumulated into a pre-filled buffer, determinism, and that the
// fp32 mode still takes the exact fp32 path.
//
// Tolerances: bf16 operands (8-bit mantissa) make elementwise relative checks meaningless
// (an output near zero has any relative error). Checked instead, per tensor:
//   out, and each of dq, dk, dv:  ||cuda − cpu||₂ / ||cpu||₂ ≤ 1.5e-2 (normwise), the gradient
//     parts measured without the pre-filled values (denominator floored at a tenth of the
//     whole gradient's norm: dq is ~0 for T = 1);
//   lse: max |cuda − ref| ≤ 2e-2 · qkv_scale² (rounding q, k to bf16 perturbs a score by about
//     2⁻⁹·|score|-sized terms, and scores grow with qkv_scale²).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "attention_ref.hpp"
#include "gpu_compare.hpp"

namespace competelm::gpu_testing {
namespace {

constexpr double kNormTol = 1.5e-2;

struct TcShape {
  int B, T, C, NH;
  float qkv_scale = 1.0f;  // 2: peaked softmax, strong online rescaling
};

// Sums of squares of (got − ref) and of (ref − base) over the elements whose column (mod
// `period`) lies in [lo, hi): one third of the qkv columns, or all with period = 0.
struct Norms {
  double diff2 = 0.0, ref2 = 0.0;
  bool finite = true;
};
Norms norms(const std::vector<float>& got, const std::vector<float>& ref, const std::vector<float>* base,
            size_t period = 0, size_t lo = 0, size_t hi = 0) {
  Norms n;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (period != 0) {
      const size_t col = i % period;
      if (col < lo || col >= hi) continue;
    }
    if (!std::isfinite(got[i])) n.finite = false;
    const double d = double(got[i]) - ref[i], r = double(ref[i]) - (base ? (*base)[i] : 0.0);
    n.diff2 += d * d;
    n.ref2 += r * r;
  }
  return n;
}

bool bit_identical(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

void check_attention_bf16(const TcShape& s, uint64_t seed) {
  INFO(describe(s));
  Pair p;
  p.cuda->set_precision(Precision::bf16);
  const int B = s.B, T = s.T, C = s.C, NH = s.NH;
  const size_t n_qkv = size_t(B) * T * 3 * C, n_out = size_t(B) * T * C, n_rows = size_t(B) * NH * T;
  REQUIRE(p.cuda->attention_state_elements(B, NH, T) == n_rows);
  REQUIRE(p.cuda->attention_scratch_elements(B, NH, T) == n_rows);

  const std::vector<float> qkv_host = randn(n_qkv, seed, s.qkv_scale);
  Twin<float> qkv(p, qkv_host);
  Twin<float> out(p, randn(n_out, seed + 1));  // garbage: the forward overwrites it
  Buffer att_cpu(*p.cpu, p.cpu->attention_state_elements(B, NH, T));
  Buffer att_cuda(*p.cuda, n_rows);

  // ---- forward ----
  p.cpu->attention_forward(out.cpu, att_cpu.p, qkv.cpu, B, T, C, NH);
  p.cuda->attention_forward(out.cuda, att_cuda.p, qkv.cuda, B, T, C, NH);
  const std::vector<float> out_cpu = out.host_cpu(), out_cuda = out.host_cuda();
  const Norms no = norms(out_cuda, out_cpu, nullptr);
  const double out_err = std::sqrt(no.diff2 / no.ref2);
  CAPTURE(out_err);
  REQUIRE(no.finite);
  CHECK(out_err <= kNormTol);
  CHECK(out_err > 1e-6);  // bf16 rounding shows: the tensor-core path ran, not the fp32 one

  const std::vector<float> lse = att_cuda.host(), lse_ref = host_lse(qkv_host, s);
  double lse_err = 0.0;
  for (size_t i = 0; i < lse.size(); ++i) lse_err = std::max(lse_err, std::abs(double(lse[i]) - lse_ref[i]));
  CAPTURE(lse_err);
  CHECK(lse_err <= 2e-2 * s.qkv_scale * s.qkv_scale);  // NaN fails too

  // ---- backward: dqkv += into a pre-filled buffer ----
  const std::vector<float> prefill = randn(n_qkv, seed + 3, 0.05f);
  Twin<float> dout(p, randn(n_out, seed + 2));
  Twin<float> dqkv(p, prefill);
  Buffer scratch_cpu(*p.cpu, p.cpu->attention_scratch_elements(B, NH, T));
  Buffer scratch_cuda(*p.cuda, n_rows);
  p.cpu->attention_backward(dqkv.cpu, scratch_cpu.p, dout.cpu, out.cpu, qkv.cpu, att_cpu.p, B, T, C, NH);
  p.cuda->attention_backward(dqkv.cuda, scratch_cuda.p, dout.cuda, out.cuda, qkv.cuda, att_cuda.p, B, T, C, NH);
  const std::vector<float> g_cpu = dqkv.host_cpu(), g_cuda = dqkv.host_cuda();
  const Norms all = norms(g_cuda, g_cpu, &prefill);
  REQUIRE(all.finite);
  const double grad_err = std::sqrt(all.diff2 / all.ref2);
  CAPTURE(grad_err);
  CHECK(grad_err <= kNormTol);
  const char* names[3] = {"dq", "dk", "dv"};
  for (int part = 0; part < 3; ++part) {
    const Norms n = norms(g_cuda, g_cpu, &prefill, 3 * size_t(C), size_t(part) * C, size_t(part + 1) * C);
    const double part_err = std::sqrt(n.diff2 / std::max(n.ref2, 0.01 * all.ref2));
    INFO(names[part] << ": normwise error " << part_err << " (|grad part| " << std::sqrt(n.ref2) << ")");
    CHECK(part_err <= kNormTol);
  }

  // ---- determinism: the same calls again give bit-identical results ----
  Buffer att_again(*p.cuda, n_rows);
  p.cuda->attention_forward(out.cuda, att_again.p, qkv.cuda, B, T, C, NH);
  CHECK(bit_identical(out_cuda, out.host_cuda()));
  CHECK(bit_identical(lse, att_again.host()));
  Buffer g1(*p.cuda, n_qkv), g2(*p.cuda, n_qkv);  // zeroed
  p.cuda->attention_backward(g1.p, scratch_cuda.p, dout.cuda, out.cuda, qkv.cuda, att_cuda.p, B, T, C, NH);
  p.cuda->attention_backward(g2.p, scratch_cuda.p, dout.cuda, out.cuda, qkv.cuda, att_cuda.p, B, T, C, NH);
  const std::vector<float> h1 = g1.host(), h2 = g2.host();
  CHECK(bit_identical(h1, h2));
  double norm = 0.0;  // …and the gradient is not trivially zero
  for (float x : h1) norm += double(x) * x;
  CHECK(norm > 1e-3);
}

TEST_CASE("cuda attention bf16: hs 64, awkward T match the CPU oracle normwise", "[cuda][attention][bf16]") {
  check_attention_bf16({1, 1, 64, 1}, 41);    // a single token
  check_attention_bf16({2, 17, 128, 2}, 42);  // less than one tile
  check_attention_bf16({1, 64, 192, 3}, 43);  // exactly one tile
  check_attention_bf16({2, 65, 64, 1}, 44);   // one past a tile
  check_attention_bf16({2, 200, 192, 3}, 45);  // 4 tiles, the last partial
}

TEST_CASE("cuda attention bf16: peaked softmax, hs 32 and 128", "[cuda][attention][bf16]") {
  check_attention_bf16({2, 200, 128, 2, 2.0f}, 51);  // hs 64, qkv scaled by 2: strong online rescaling
  check_attention_bf16({1, 130, 256, 2}, 52);        // hs 128
  check_attention_bf16({2, 100, 128, 4}, 53);        // hs 32
  check_attention_bf16({6, 13, 1024, 8}, 54);        // hs 128, T < 16 (zero-filled rows), B·NH = 48
  check_attention_bf16({1, 333, 256, 2}, 55);        // hs 128, 6 tiles: double-buffered dK/dV
}

TEST_CASE("cuda attention bf16: GPT-2 small layer shape", "[cuda][attention][bf16]") {
  check_attention_bf16({2, 1024, 768, 12}, 61);
}

TEST_CASE("cuda attention: fp32 mode keeps the exact fp32 path", "[cuda][attention][bf16]") {
  Pair p;
  p.cuda->set_precision(Precision::bf16);
  p.cuda->set_precision(Precision::fp32);
  const int B = 2, T = 65, C = 128, NH = 2;
  Twin<float> qkv(p, randn(size_t(B) * T * 3 * C, 71));
  Twin<float> out(p, size_t(B) * T * C);
  Buffer att_cpu(*p.cpu, p.cpu->attention_state_elements(B, NH, T));
  Buffer att_cuda(*p.cuda, p.cuda->attention_state_elements(B, NH, T));
  p.cpu->attention_forward(out.cpu, att_cpu.p, qkv.cpu, B, T, C, NH);
  p.cuda->attention_forward(out.cuda, att_cuda.p, qkv.cuda, B, T, C, NH);
  require_close(out, 1e-4, 1e-5, "fp32 mode attention_forward out");  // far below bf16 rounding
}

// Speed of fwd + bwd at the GPT-2 small training shape in both precisions (prints, checks
// nothing timing-related; the log-sum-exp must come out finite). Run: competelm-gpu-tests "[.bench]" -s
TEST_CASE("cuda attention: fwd+bwd speed, fp32 vs bf16", "[cuda][attention][bf16][.bench]") {
  Pair p;
  const int B = 16, T = 1024, C = 768, NH = 12, hs = C / NH;
  const size_t n_qkv = size_t(B) * T * 3 * C, n_out = size_t(B) * T * C, n_rows = size_t(B) * NH * T;
  Buffer qkv(*p.cuda, n_qkv), dqkv(*p.cuda, n_qkv), out(*p.cuda, n_out), dout(*p.cuda, n_out);
  Buffer lse(*p.cuda, n_rows), scratch(*p.cuda, n_rows);
  const std::vector<float> q_host = randn(n_qkv, 81), d_host = randn(n_out, 82);
  p.cuda->upload(qkv.p, q_host.data(), n_qkv * sizeof(float));
  p.cuda->upload(dout.p, d_host.data(), n_out * sizeof(float));
  const double fwd_flops = 4.0 * B * NH * double(T) * T * hs / 2.0;  // causal: half of QKᵀ and PV
  for (Precision prec : {Precision::fp32, Precision::bf16}) {
    p.cuda->set_precision(prec);
    auto fwd = [&] { p.cuda->attention_forward(out.p, lse.p, qkv.p, B, T, C, NH); };
    auto bwd = [&] { p.cuda->attention_backward(dqkv.p, scratch.p, dout.p, out.p, qkv.p, lse.p, B, T, C, NH); };
    fwd();
    bwd();
    p.cuda->synchronize();
    const int reps = 5;
    auto time_ms = [&](auto&& f) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < reps; ++i) f();
      p.cuda->synchronize();
      return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / reps;
    };
    const double f_ms = time_ms(fwd), b_ms = time_ms(bwd);
    std::printf("attention %s B=%d T=%d C=%d NH=%d: fwd %.2f ms (%.1f TFLOP/s), bwd %.2f ms (%.1f TFLOP/s)\n",
                precision_name(prec), B, T, C, NH, f_ms, fwd_flops / (f_ms * 1e9), b_ms,
                2.5 * fwd_flops / (b_ms * 1e9));
    const std::vector<float> l_host = lse.host();
    CHECK(std::all_of(l_host.begin(), l_host.end(), [](float x) { return std::isfinite(x); }));
  }
}

}  // namespace
}  // namespace competelm::gpu_testing
