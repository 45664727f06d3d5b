// `competelm-cuda-emu attention`: the register-resident bf16 flash attention (cuda/attention_mma.cu,
// mma.sync / ldmatrix emulated from their PTX fragment layouts) against the fp32 CPU oracle, plus
// the fp32 CUDA-core path (cuda/attention.cu) with the shared D = rowsum(dO ∘ O) pre-pass.
//
// Tolerances (bf16 operands: elementwise relative checks are meaningless near zero), per tensor:
//   out and each of dq, dk, dv: ||got − ref||₂ / ||ref||₂ ≤ 1.5e-2 (normwise; the gradient parts
//     without the pre-filled values, the denominator floored at a tenth of the whole gradient's
//     norm since dq is ~0 for T = 1), as tests/gpu/test_cuda_attention_tc.cpp;
//   lse: max |got − ref| ≤ 2e-2 against a double-precision host log-sum-exp.
// fp32 path: 1e-4 normwise (exact operands; only the summation order differs).
// Also, on a few shapes (the emulator is slow): bit-identical results on a second run
// (determinism) and causality (changing the inputs of tokens ≥ t* leaves out, lse and dq of the
// rows < t* bit-identical).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/ops.hpp"
#include "cuda_backend.cuh"
#include "emu_dev.hpp"

using namespace competelm;
using V = std::vector<float>;

namespace {

struct Tally {
  int failures = 0;
  void expect(bool ok, const std::string& what) {
    failures += !ok;
    std::printf("%-72s %s\n", what.c_str(), ok ? "ok" : "FAIL");
  }
};

struct Shape {
  int B, T, NH, hs;
  bool rerun = false;  // also the determinism and causality checks (each a full second run)
};

// ||got − ref|| / max(||ref − base||, floor) over the elements whose column (mod period) lies in
// [lo, hi) (period 0: all); NaN/inf in got gives +inf.
double rel_err(const V& got, const V& ref, const V* base, size_t period, size_t lo, size_t hi, double floor) {
  double d2 = 0, r2 = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (period && (i % period < lo || i % period >= hi)) continue;
    if (!std::isfinite(got[i])) return INFINITY;
    const double d = double(got[i]) - ref[i], r = double(ref[i]) - (base ? (*base)[i] : 0.0);
    d2 += d * d;
    r2 += r * r;
  }
  return std::sqrt(d2) / std::max(std::sqrt(r2), floor);
}

double norm_diff(const V& a, const V& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
  return std::sqrt(s);
}

bool same_bits(const V& a, const V& b) { return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0; }

// Natural log-sum-exp of each query row's scaled causal scores, in double: (B,NH,T).
V lse_ref(const V& qkv, int B, int T, int NH, int hs) {
  const int C = NH * hs;
  const double scale = 1.0 / std::sqrt(double(hs));
  V L(size_t(B) * NH * T);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h)
      for (int t = 0; t < T; ++t) {
        std::vector<double> x(t + 1);
        double mx = -INFINITY;
        for (int s = 0; s <= t; ++s) {
          double dot = 0;
          for (int d = 0; d < hs; ++d)
            dot += double(qkv[(size_t(b) * T + t) * 3 * C + h * hs + d]) * qkv[(size_t(b) * T + s) * 3 * C + C + h * hs + d];
          x[s] = dot * scale;
          mx = std::max(mx, x[s]);
        }
        double sum = 0;
        for (double v : x) sum += std::exp(v - mx);
        L[(size_t(b) * NH + h) * T + t] = float(mx + std::log(sum));
      }
  return L;
}

struct Run {
  V out, lse, dqkv;
};

// Forward then backward on the emulated backend (dqkv pre-filled with `base`).
Run run(cuda::CudaBackend& be, emutest::Dev& d, const V& qkv, const V& dout, const V& base, int B, int T, int C, int NH) {
  const size_t nout = size_t(B) * T * C, nstate = be.attention_state_elements(B, NH, T);
  float* qkv_d = d.up(qkv);
  float* out_d = d.up(V(nout, NAN));
  float* att_d = d.up(V(nstate, NAN));
  be.attention_forward(out_d, att_d, qkv_d, B, T, C, NH);
  float* dqkv_d = d.up(base);
  float* scratch_d = d.up(V(be.attention_scratch_elements(B, NH, T), NAN));
  be.attention_backward(dqkv_d, scratch_d, d.up(dout), out_d, qkv_d, att_d, B, T, C, NH);
  Run r{d.down(out_d, nout), d.down(att_d, nstate), d.down(dqkv_d, base.size())};
  for (void* p : {static_cast<void*>(qkv_d), static_cast<void*>(out_d), static_cast<void*>(att_d),
                  static_cast<void*>(dqkv_d), static_cast<void*>(scratch_d)})
    be.dealloc(p);
  return r;
}

void check_shape(Tally& tally, cuda::CudaBackend& be, emutest::Dev& d, const Shape& s, bool bf16, std::mt19937& rng) {
  const int B = s.B, T = s.T, NH = s.NH, hs = s.hs, C = NH * hs;
  std::normal_distribution<float> nd(0, 1);
  V qkv(size_t(B) * T * 3 * C), dout(size_t(B) * T * C), base(qkv.size());
  for (auto& x : qkv) x = nd(rng);
  for (auto& x : dout) x = nd(rng);
  for (auto& x : base) x = nd(rng);

  V out_ref(dout.size()), att(size_t(B) * NH * T * T), scratch(att.size()), grad(qkv.size(), 0.0f);
  cpu::attention_forward(out_ref.data(), att.data(), qkv.data(), B, T, C, NH);
  cpu::attention_backward(grad.data(), scratch.data(), dout.data(), qkv.data(), att.data(), B, T, C, NH);
  V dqkv_ref = base;
  for (size_t i = 0; i < grad.size(); ++i) dqkv_ref[i] += grad[i];

  const Run r = run(be, d, qkv, dout, base, B, T, C, NH);
  char name[160];
  const char* path = bf16 ? "mma bf16" : "fp32";
  const double tol = bf16 ? 1.5e-2 : 1e-4;
  std::snprintf(name, sizeof name, "%s B=%d T=%d NH=%d hs=%d", path, B, T, NH, hs);
  const std::string tag = name;

  const double e_out = rel_err(r.out, out_ref, nullptr, 0, 0, 0, 0.0);
  tally.expect(e_out <= tol, tag + " out rel " + std::to_string(e_out));
  const V L = lse_ref(qkv, B, T, NH, hs);
  double e_lse = 0;
  for (size_t i = 0; i < L.size(); ++i) e_lse = std::max(e_lse, std::isfinite(r.lse[i]) ? std::abs(double(r.lse[i]) - L[i]) : INFINITY);
  tally.expect(e_lse <= (bf16 ? 2e-2 : 1e-4), tag + " lse max abs " + std::to_string(e_lse));
  const double floor = 0.1 * norm_diff(dqkv_ref, base);
  const char* parts[3] = {"dq", "dk", "dv"};
  for (int p = 0; p < 3; ++p) {
    const double e = rel_err(r.dqkv, dqkv_ref, &base, size_t(3) * C, size_t(p) * C, size_t(p + 1) * C, floor);
    tally.expect(e <= tol, tag + " " + parts[p] + " rel " + std::to_string(e));
  }

  if (!s.rerun) return;  // the emulator is slow: the reruns on a few shapes only
  // Determinism: the same call again, bit for bit.
  const Run r2 = run(be, d, qkv, dout, base, B, T, C, NH);
  tally.expect(same_bits(r.out, r2.out) && same_bits(r.lse, r2.lse) && same_bits(r.dqkv, r2.dqkv),
               tag + " deterministic");

  // Causality: new inputs for tokens ≥ t* leave the earlier rows' out, lse, dq bit-identical.
  if (T >= 2) {
    const int ts = T / 2 + 1;
    V qkv2 = qkv, dout2 = dout;
    for (int b = 0; b < B; ++b)
      for (int t = ts; t < T; ++t) {
        for (int c = 0; c < 3 * C; ++c) qkv2[(size_t(b) * T + t) * 3 * C + c] = nd(rng) * 3.0f;
        for (int c = 0; c < C; ++c) dout2[(size_t(b) * T + t) * C + c] = nd(rng);
      }
    const Run r3 = run(be, d, qkv2, dout2, base, B, T, C, NH);
    bool same = true;
    for (int b = 0; b < B; ++b)
      for (int t = 0; t < ts; ++t) {
        same &= std::memcmp(&r.out[(size_t(b) * T + t) * C], &r3.out[(size_t(b) * T + t) * C], size_t(C) * 4) == 0;
        same &= std::memcmp(&r.dqkv[(size_t(b) * T + t) * 3 * C], &r3.dqkv[(size_t(b) * T + t) * 3 * C], size_t(C) * 4) == 0;
        for (int h = 0; h < NH; ++h) same &= r.lse[(size_t(b) * NH + h) * T + t] == r3.lse[(size_t(b) * NH + h) * T + t];
      }
    tally.expect(same, tag + " causal (rows < " + std::to_string(ts) + " unchanged)");
  }
}

}  // namespace

int run_attention_checks() {
  Tally tally;
  std::mt19937 rng(7);
  cuda::CudaBackend be(0);
  emutest::Dev d{be};
  be.set_precision(Precision::bf16);
  be.set_attention_mma_enabled(true);
  for (const Shape& s : {Shape{1, 1, 2, 64}, Shape{2, 17, 2, 64}, Shape{1, 64, 2, 64}, Shape{1, 100, 2, 64, true},
                         Shape{1, 130, 2, 64, true}, Shape{1, 17, 2, 32}, Shape{1, 75, 2, 32, true}})
    check_shape(tally, be, d, s, true, rng);
  // The fp32 CUDA-core kernels with the shared D pre-pass.
  be.set_precision(Precision::fp32);
  for (const Shape& s : {Shape{1, 37, 2, 32, true}, Shape{2, 5, 3, 16}}) check_shape(tally, be, d, s, false, rng);
  return tally.failures;
}
