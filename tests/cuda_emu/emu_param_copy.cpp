// `competelm-cuda-emu param_copy`: the bf16 parameter copy (cuda/param_copy.cu) in the emulator:
// the stochastic-rounding kernel (neighbours only, exact values kept, unbiased on average,
// reproducible per (seed, step)), the bf16 GEMMs reading the copy (against the CPU in fp32 and
// against the per-call conversion), and the copy's invalidation by writes into the range.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/ops.hpp"
#include "cuda_backend.cuh"
#include "cuda_bf16.h"
#include "emu_dev.hpp"

using namespace competelm;
using V = std::vector<float>;
using Bits = std::vector<uint16_t>;

namespace {

struct Tally {
  int failures = 0;
  void expect(bool ok, const std::string& what) {
    failures += !ok;
    std::printf("%-64s %s\n", what.c_str(), ok ? "ok" : "FAIL");
  }
};

float bits_to_float(uint16_t b) {
  const uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float rne(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }
bool same_bits(const V& a, const V& b) { return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0; }

// The bound parameter copy's first n bf16 values, as bits.
Bits copy_bits(emutest::Dev& d, size_t n) { return d.down(static_cast<const uint16_t*>(d.be.param_copy()), n); }

// ---- the rounding kernel ----
void check_rounding(Tally& t, cuda::CudaBackend& be, emutest::Dev& d) {
  using R = cuda::CudaBackend::ParamRounding;
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0, 1);
  // Random values over many exponents, bf16-exact ones, signed zeros, subnormals, the largest
  // finite float (may round to inf), ±inf and NaN.
  V x;
  for (int i = 0; i < 3000; ++i) x.push_back(nd(rng) * std::pow(10.0f, float(i % 13 - 6)));
  for (int i = 0; i < 500; ++i) x.push_back(rne(nd(rng) * 100.0f));
  const float inf = std::numeric_limits<float>::infinity();
  for (float v : {0.0f, -0.0f, 1e-40f, -3e-39f, 1.0f, -2.5f, 3.4028235e38f, -3.4028235e38f, inf, -inf,
                  std::numeric_limits<float>::quiet_NaN()})
    x.push_back(v);
  const size_t n = x.size();
  float* p = d.up(x);
  be.set_param_buffer(p, n);
  be.write_param_copy(7, 3, R::stochastic);
  const Bits a = copy_bits(d, n);
  bool neighbours = true, exact = true, nan_ok = true;
  size_t inexact = 0;
  for (size_t i = 0; i < n; ++i) {
    const uint32_t u = float_bits(x[i]);
    const float b = bits_to_float(a[i]);
    if (std::isnan(x[i])) { nan_ok &= std::isnan(b); continue; }
    // The two bf16 values around x: toward zero (truncated bits) and the next one away from zero.
    const uint16_t lo = uint16_t(u >> 16), hi = uint16_t(lo + 1);
    if ((u & 0xFFFFu) == 0) { exact &= a[i] == lo; continue; }
    ++inexact;
    neighbours &= a[i] == lo || a[i] == hi;
    // Value check independent of the bit pattern: same sign, within one bf16 step of x.
    const float flo = bits_to_float(lo), fhi = bits_to_float(hi);
    neighbours &= std::signbit(b) == std::signbit(x[i]) && std::abs(flo) <= std::abs(x[i]) &&
                  std::abs(x[i]) <= std::abs(fhi);
  }
  t.expect(neighbours, "SR: every value rounds to one of its two bf16 neighbours");
  t.expect(exact, "SR: bf16-exact values (zeros, ±inf included) stay exact");
  t.expect(nan_ok, "SR: NaN stays NaN");
  be.write_param_copy(7, 3, R::stochastic);
  t.expect(copy_bits(d, n) == a, "SR: same (seed, step) gives identical bits");
  auto differing = [&](const Bits& b) {
    size_t k = 0;
    for (size_t i = 0; i < n; ++i) k += a[i] != b[i];
    return k;
  };
  be.write_param_copy(7, 4, R::stochastic);
  const size_t by_step = differing(copy_bits(d, n));
  be.write_param_copy(8, 3, R::stochastic);
  const size_t by_seed = differing(copy_bits(d, n));
  char msg[160];
  std::snprintf(msg, sizeof msg, "SR: another step / seed changes %zu / %zu of %zu inexact", by_step, by_seed, inexact);
  t.expect(by_step > inexact / 6 && by_seed > inexact / 6, msg);
  be.write_param_copy(7, 3, R::nearest);
  const Bits near = copy_bits(d, n);
  bool rne_ok = true;
  for (size_t i = 0; i < n; ++i)
    if (!std::isnan(x[i])) rne_ok &= near[i] == __float2bfloat16_rn(x[i]).bits;
  t.expect(rne_ok, "nearest: the copy equals __float2bfloat16_rn");

  // Unbiased: the mean of many roundings of x converges to x. Values 1 + f·2⁻⁷ (bf16 step 2⁻⁷
  // in [1, 2)) and their negatives, 1024 elements each, 8 steps: M = 8192 draws per value. The
  // bound is 5 standard deviations of the mean; round to nearest misses it by far (f ≤ 0.5 → 0).
  const double fracs[] = {0.3, 0.5, 0.01, 0.9};
  const int per = 1024, steps = 8;
  V y;
  for (double f : fracs)
    for (int s : {1, -1})
      for (int i = 0; i < per; ++i) y.push_back(float(s * (1.0 + f / 128.0)));
  float* q = d.up(y);
  be.set_param_buffer(q, y.size());
  std::vector<double> sum(2 * std::size(fracs), 0.0);
  for (int step = 0; step < steps; ++step) {
    be.write_param_copy(11, uint64_t(step), R::stochastic);
    const Bits b = copy_bits(d, y.size());
    for (size_t i = 0; i < y.size(); ++i) sum[i / per] += bits_to_float(b[i]);
  }
  for (size_t v = 0; v < sum.size(); ++v) {
    const double f = fracs[v / 2], x0 = y[v * per], M = double(per) * steps;
    const double frac = (sum[v] / M - (x0 > 0 ? 1.0 : -1.0)) * (x0 > 0 ? 128.0 : -128.0);  // estimated f
    const double bound = 5.0 * std::sqrt(f * (1 - f) / M) + 1e-4;
    const double rne_frac = f > 0.5 ? 1.0 : 0.0;
    std::snprintf(msg, sizeof msg, "SR: mean of %.0f roundings of %+.6f: f %.4f vs %.2f (bound %.4f)", M, x0, frac, f,
                  bound);
    t.expect(std::abs(frac - f) <= bound && std::abs(rne_frac - f) > bound, msg);
  }
  be.set_param_buffer(nullptr, 0);
  be.dealloc(p);
  be.dealloc(q);
}

// ---- the GEMMs reading the copy ----
struct Shape {
  int N, C, OC, offset;  // offset: the weight's element offset in the parameter buffer
};

void check_matmul(Tally& t, cuda::CudaBackend& be, emutest::Dev& d, const Shape& s, std::mt19937& rng) {
  const auto [N, C, OC, off] = s;
  std::normal_distribution<float> nd(0, 1);
  auto randv = [&](size_t n) {
    V v(n);
    for (auto& x : v) x = nd(rng);
    return v;
  };
  // The parameter buffer: a few leading floats, the weight (OC, C), its bias, a tail.
  const size_t n_params = size_t(off) + size_t(OC) * C + OC + 5;
  V params = randv(n_params);
  const V x = randv(size_t(N) * C), dout = randv(size_t(N) * OC), dx0 = randv(size_t(N) * C),
          dw0 = randv(size_t(OC) * C);
  float* P = d.up(params);
  float *w = P + off, *bias = P + off + size_t(OC) * C;
  float *px = d.up(x), *pd = d.up(dout);
  float *out = d.up(V(size_t(N) * OC)), *dx = d.up(dx0), *dw = d.up(dw0);
  struct Result { V out, dx, dw; };
  auto run = [&]() {  // forward and backward (dinp, dweight) from the same starting buffers
    Result r;
    be.matmul_forward(out, px, w, bias, N, C, OC);
    be.upload(dx, dx0.data(), dx0.size() * 4);
    be.upload(dw, dw0.data(), dw0.size() * 4);
    be.matmul_backward(dx, dw, nullptr, pd, px, w, N, C, OC, GradMode::accumulate);
    r.out = d.down(out, size_t(N) * OC);
    r.dx = d.down(dx, dx0.size());
    r.dw = d.down(dw, dw0.size());
    return r;
  };
  auto per_call = [&]() {  // the path without the copy
    be.set_param_copy_enabled(false);
    Result r = run();
    be.set_param_copy_enabled(true);
    return r;
  };
  auto same = [](const Result& a, const Result& b) { return same_bits(a.out, b.out) && same_bits(a.dx, b.dx) && same_bits(a.dw, b.dw); };
  char tag[96], msg[200];
  std::snprintf(tag, sizeof tag, "N=%d C=%d OC=%d offset=%d", N, C, OC, off);
  const bool aligned = off % 8 == 0;  // the copy is used only 16-byte aligned (8 bf16)

  be.set_param_buffer(P, n_params);
  const Result base = per_call();

  // Round-to-nearest copy: the same operands as the per-call conversion, so the same bits.
  be.write_param_copy(3, 1, cuda::CudaBackend::ParamRounding::nearest);
  std::snprintf(msg, sizeof msg, "matmul bf16, nearest copy == per-call path (%s)", tag);
  t.expect(be.param_copy() && same(run(), base), msg);
  // ... and the GEMM really reads the copy: zero the weight's part of it.
  {
    auto* copy = static_cast<uint16_t*>(const_cast<void*>(be.param_copy()));
    be.zero(copy + off, size_t(OC) * C * sizeof(uint16_t));  // outside the fp32 range: stays valid
    const V o = run().out;
    bool bias_only = true;
    for (size_t i = 0; i < o.size(); ++i) bias_only &= o[i] == params[off + size_t(OC) * C + i % OC];
    std::snprintf(msg, sizeof msg, "matmul bf16 reads the copy %s (%s)", aligned ? "when aligned" : "not: misaligned", tag);
    t.expect(be.param_copy() && bias_only == aligned, msg);
  }

  // Stochastic copy (refresh): against the CPU on the copy's weights and rounded activations
  // (exact up to summation order), against the CPU in fp32 (bf16 accuracy), and not the per-call result.
  be.refresh_param_copy(42, 7);
  const Result sr = run();
  const Bits cb = copy_bits(d, n_params);
  V w_sr(size_t(OC) * C), x_r(x.size()), dout_r(dout.size());
  for (size_t i = 0; i < w_sr.size(); ++i) w_sr[i] = aligned ? bits_to_float(cb[off + i]) : rne(params[off + i]);
  for (size_t i = 0; i < x.size(); ++i) x_r[i] = rne(x[i]);
  for (size_t i = 0; i < dout.size(); ++i) dout_r[i] = rne(dout[i]);
  V out_ref(size_t(N) * OC), out_fp32(size_t(N) * OC), dx_ref = dx0, dx_fp32 = dx0, dw_ref = dw0;
  const float* b = params.data() + off + size_t(OC) * C;
  cpu::matmul_forward(out_ref.data(), x_r.data(), w_sr.data(), b, N, C, OC);
  cpu::matmul_forward(out_fp32.data(), x.data(), params.data() + off, b, N, C, OC);
  cpu::matmul_backward(dx_ref.data(), dw_ref.data(), nullptr, dout_r.data(), x_r.data(), w_sr.data(), N, C, OC, GradMode::accumulate);
  cpu::matmul_backward(dx_fp32.data(), nullptr, nullptr, dout.data(), x.data(), params.data() + off, N, C, OC, GradMode::accumulate);
  auto err = [](const V& got, const V& ref) {
    double e = 0;
    for (size_t i = 0; i < ref.size(); ++i) e = std::max(e, std::abs(double(got[i]) - ref[i]) / (1.0 + std::abs(ref[i])));
    return e;
  };
  const double e_out = err(sr.out, out_ref), e_dx = err(sr.dx, dx_ref), e_dw = err(sr.dw, dw_ref);
  std::snprintf(msg, sizeof msg, "matmul bf16 SR copy vs CPU on its operands %.1e %.1e %.1e (%s)", e_out, e_dx, e_dw, tag);
  t.expect(be.param_copy() && e_out < 1e-5 && e_dx < 1e-5 && e_dw < 1e-5, msg);
  // Against fp32: a rigorous bound. SR moves a weight by less than one bf16 step (≤ 2⁻⁷ relative),
  // round to nearest an activation by at most half a step (≤ 2⁻⁸), so each product moves by at
  // most (2⁻⁷ + 2⁻⁸ + 2⁻¹⁵)·|x·w|: |out − out_fp32| ≤ that · Σ|x·w| (+ fp32 summation).
  const double kb = 1.0 / 128 + 1.0 / 256 + 1.0 / 32768;
  double worst = 0;  // the largest error as a fraction of its bound
  for (int i = 0; i < N; ++i)
    for (int o = 0; o < OC; ++o) {
      double sa = 0;
      for (int c = 0; c < C; ++c) sa += std::abs(double(x[size_t(i) * C + c]) * params[off + size_t(o) * C + c]);
      const size_t j = size_t(i) * OC + o;
      worst = std::max(worst, std::abs(double(sr.out[j]) - out_fp32[j]) / (kb * sa + 1e-5));
    }
  for (int i = 0; i < N; ++i)
    for (int c = 0; c < C; ++c) {
      double sa = 0;
      for (int o = 0; o < OC; ++o) sa += std::abs(double(dout[size_t(i) * OC + o]) * params[off + size_t(o) * C + c]);
      const size_t j = size_t(i) * C + c;
      worst = std::max(worst, std::abs(double(sr.dx[j]) - dx_fp32[j]) / (kb * sa + 1e-5 * (1 + std::abs(dx_fp32[j]))));
    }
  std::snprintf(msg, sizeof msg, "matmul bf16 SR copy vs CPU fp32: %.2f of the rounding bound (%s)", worst, tag);
  t.expect(worst <= 1.0, msg);
  std::snprintf(msg, sizeof msg, "matmul bf16 SR copy %s the per-call result; dweight same (%s)",
                aligned ? "differs from" : "equals", tag);
  t.expect((!same_bits(sr.out, base.out) && !same_bits(sr.dx, base.dx)) == aligned && same_bits(sr.dw, base.dw), msg);

  // Invalidation: any write into the range the backend sees → the per-call path, bit for bit.
  auto invalidated = [&](const char* how) {
    std::snprintf(msg, sizeof msg, "copy invalid after %s, matmul == per-call (%s)", how, tag);
    const bool gone = be.param_copy() == nullptr;
    t.expect(gone && same(run(), per_call()), msg);
  };
  const float one = 1.5f;
  be.upload(w + 3, &one, sizeof one);  // one weight changes
  invalidated("upload into the weight");
  be.refresh_param_copy(42, 8);
  be.upload(P + n_params - 1, &one, sizeof one);  // the tail: not the weight, still the range
  invalidated("upload into the range's tail");
  be.refresh_param_copy(42, 9);
  {
    const size_t k = 5, at = n_params - k;  // adamw on the tail only
    float *g = d.up(randv(k)), *m = d.up(V(k)), *v = d.up(V(k));
    be.adamw_update(P + at, g, m, v, k, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 1.0f, 1);
    invalidated("adamw_update on part of the range");
    be.dealloc(g), be.dealloc(m), be.dealloc(v);
  }
  be.refresh_param_copy(42, 10);
  be.zero(P, sizeof(float));
  invalidated("zero of its first element");
  be.refresh_param_copy(42, 11);
  {
    float* other = d.up(V(4, 2.0f));  // a write elsewhere leaves the copy valid
    be.upload(other, &one, sizeof one);
    std::snprintf(msg, sizeof msg, "copy still valid after an upload elsewhere (%s)", tag);
    t.expect(be.param_copy() != nullptr, msg);
    be.dealloc(other);
  }
  // A range that ends inside the weight: the copy is valid but the weight not wholly in it.
  be.set_param_buffer(P, size_t(off) + size_t(OC) * C - 1);
  be.refresh_param_copy(42, 12);
  std::snprintf(msg, sizeof msg, "weight past the range's end: per-call path (%s)", tag);
  t.expect(be.param_copy() && same(run(), per_call()), msg);

  be.set_param_buffer(P, n_params);
  be.refresh_param_copy(42, 13);
  const size_t live = be.live_bytes();
  be.dealloc(P);
  std::snprintf(msg, sizeof msg, "dealloc of the parameter block frees the copy (%s)", tag);
  t.expect(be.param_copy() == nullptr && live - be.live_bytes() == n_params * 6, msg);
  be.dealloc(px), be.dealloc(pd), be.dealloc(out), be.dealloc(dx), be.dealloc(dw);
}

}  // namespace

int run_param_copy_checks() {
  Tally t;
  emu::g_serial = true;  // no kernel here uses a barrier or a shuffle
  {
    // The gate: kBf16ParamCopyVerified, overridden by COMPETELM_BF16_PARAM_COPY=0 or 1.
    const char* saved = std::getenv("COMPETELM_BF16_PARAM_COPY");
    const std::string saved_value = saved ? saved : "";
    for (const char* value : {"0", "1", "", "yes"}) {
      setenv("COMPETELM_BF16_PARAM_COPY", value, 1);
      const bool want = std::string(value) == "1" || (std::string(value) != "0" && cuda::kBf16ParamCopyVerified);
      t.expect(cuda::CudaBackend(0).param_copy_enabled() == want,
               "gate: COMPETELM_BF16_PARAM_COPY=" + std::string(value) + " over kBf16ParamCopyVerified");
    }
    if (saved) setenv("COMPETELM_BF16_PARAM_COPY", saved_value.c_str(), 1);
    else unsetenv("COMPETELM_BF16_PARAM_COPY");
    cuda::CudaBackend plain(0);
    plain.set_param_copy_enabled(true);
    emutest::Dev d{plain};
    float* p = d.up(V(64, 0.3f));
    plain.set_param_buffer(p, 64);
    plain.refresh_param_copy(1, 1);  // fp32 precision: no copy
    t.expect(plain.param_copy() == nullptr, "refresh in fp32 precision writes no copy");
    plain.set_precision(Precision::bf16);
    plain.set_param_copy_enabled(false);
    plain.refresh_param_copy(1, 1);  // switched off: no copy
    t.expect(plain.param_copy() == nullptr, "refresh with the copy switched off writes none");
    plain.set_param_copy_enabled(true);
    plain.refresh_param_copy(1, 1);
    t.expect(plain.param_copy() != nullptr, "refresh in bf16 with the copy on writes it");
    plain.dealloc(p);
  }
  cuda::CudaBackend be(0);
  be.set_precision(Precision::bf16);
  be.set_param_copy_enabled(true);
  emutest::Dev d{be};
  check_rounding(t, be, d);
  std::mt19937 rng(9);
  for (const Shape& s : {Shape{5, 33, 7, 8}, Shape{37, 64, 48, 16}, Shape{1, 3, 5, 0}, Shape{9, 40, 24, 3}})
    check_matmul(t, be, d, s, rng);
  emu::g_serial = false;
  return t.failures;
}
