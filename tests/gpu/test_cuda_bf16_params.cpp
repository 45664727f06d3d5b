// The bf16 parameter copy (cuda/param_copy.cu) on the GPU: the stochastic-rounding kernel, the
// bf16 GEMMs reading the copy, and its invalidation. The same checks as the emulator's
// (tests/cuda_emu/emu_param_copy.cpp), on real cuBLASLt. The copy is switched on per backend
// here (set_param_copy_enabled), whatever COMPETELM_BF16_PARAM_COPY says.
//
// Tolerances (|cuda − ref| ≤ atol + rtol·|ref|): against the CPU on the very operands the GEMM
// sees (copy's weights, activations rounded to nearest) 1e-4 / 1e-4 (fp32 accumulation order
// only). Against the CPU in fp32 a rigorous bound: SR moves a weight by < one bf16 step (≤ 2⁻⁷
// relative), round to nearest an activation by ≤ 2⁻⁸, so |Σ x̂ŵ − Σ xw| ≤ (2⁻⁷ + 2⁻⁸ + 2⁻¹⁵)·Σ|xw|
// (+ 1e-4 for fp32 summation).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iterator>
#include <limits>
#include <vector>

#include "gpu_compare.hpp"
#ifdef COMPETELM_HAVE_CUDA
#include "cuda_backend.cuh"

using namespace competelm;
using namespace competelm::gpu_testing;

namespace {

using Bits = std::vector<uint16_t>;
using R = cuda::CudaBackend::ParamRounding;

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
float rne(float x) {
  uint32_t u = float_bits(x);
  u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
bool bit_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// max over (i, j) of |got − ref| / bound, bound = k·Σ_c |a[i,c]·b(j,c)| + 1e-4·(1 + |ref|);
// b(j, c) = b[j·sj + c·sc]. ≤ 1 when every element is within the bf16 rounding bound.
double bound_ratio(const std::vector<float>& got, const std::vector<float>& ref, const float* a, const float* b, int rows,
                   int cols, int inner, size_t sj, size_t sc) {
  const double k = 1.0 / 128 + 1.0 / 256 + 1.0 / 32768;
  double worst = 0;
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j) {
      double sa = 0;
      for (int c = 0; c < inner; ++c) sa += std::abs(double(a[size_t(i) * inner + c]) * b[j * sj + c * sc]);
      const size_t e = size_t(i) * cols + j;
      worst = std::max(worst, std::abs(double(got[e]) - ref[e]) / (k * sa + 1e-4 * (1 + std::abs(ref[e]))));
    }
  return worst;
}

cuda::CudaBackend& cuda_of(Pair& p) { return dynamic_cast<cuda::CudaBackend&>(*p.cuda); }

Bits copy_bits(cuda::CudaBackend& be, size_t n) {
  REQUIRE(be.param_copy() != nullptr);
  Bits b(n);
  be.download(b.data(), be.param_copy(), n * sizeof(uint16_t));
  return b;
}

}  // namespace

TEST_CASE("bf16 parameter copy: stochastic rounding to a neighbour, exact values kept, reproducible",
          "[cuda][bf16][param_copy]") {
  Pair p;
  auto& be = cuda_of(p);
  std::vector<float> x = randn(200000, 71);
  for (size_t i = 0; i < x.size(); ++i) x[i] *= std::pow(10.0f, float(int(i % 13) - 6));
  for (size_t i = 0; i < 5000; ++i) x[i] = rne(x[i]);  // bf16-exact
  const float inf = std::numeric_limits<float>::infinity();
  const float specials[] = {0.0f, -0.0f, 1e-40f, -3e-39f, 3.4028235e38f, -3.4028235e38f, inf, -inf,
                            std::numeric_limits<float>::quiet_NaN()};
  for (float v : specials) x.push_back(v);
  const size_t n = x.size();
  float* d = static_cast<float*>(be.alloc(n * sizeof(float)));
  be.upload(d, x.data(), n * sizeof(float));
  be.set_param_buffer(d, n);
  be.write_param_copy(7, 3, R::stochastic);
  const Bits a = copy_bits(be, n);
  size_t inexact = 0, bad = 0;
  for (size_t i = 0; i < n; ++i) {
    const uint32_t u = float_bits(x[i]);
    if (std::isnan(x[i])) {
      bad += !std::isnan(bits_to_float(a[i]));
      continue;
    }
    const uint16_t lo = uint16_t(u >> 16);
    if ((u & 0xFFFFu) == 0) {
      bad += a[i] != lo;
      continue;
    }
    ++inexact;
    bad += a[i] != lo && a[i] != uint16_t(lo + 1);
  }
  CHECK(bad == 0);
  be.write_param_copy(7, 3, R::stochastic);
  CHECK(copy_bits(be, n) == a);  // same (seed, step): the same bits
  be.write_param_copy(7, 4, R::stochastic);
  const Bits b = copy_bits(be, n);
  size_t differ = 0;
  for (size_t i = 0; i < n; ++i) differ += a[i] != b[i];
  CHECK(differ > inexact / 6);  // another step: other draws
  be.write_param_copy(7, 3, R::nearest);
  const Bits near = copy_bits(be, n);
  size_t near_bad = 0;
  for (size_t i = 0; i < n; ++i)
    if (!std::isnan(x[i])) near_bad += bits_to_float(near[i]) != rne(x[i]);
  CHECK(near_bad == 0);

  // Unbiased: 1 + f·2⁻⁷ (and negated), 65536 elements each: the mean rounding is within 5σ of x.
  const double fracs[] = {0.3, 0.5, 0.01, 0.9};
  const size_t per = 65536;
  std::vector<float> y;
  for (double f : fracs)
    for (int s : {1, -1}) y.insert(y.end(), per, float(s * (1.0 + f / 128.0)));
  float* q = static_cast<float*>(be.alloc(y.size() * sizeof(float)));
  be.upload(q, y.data(), y.size() * sizeof(float));
  be.set_param_buffer(q, y.size());
  be.write_param_copy(11, 0, R::stochastic);
  const Bits c = copy_bits(be, y.size());
  for (size_t v = 0; v < 2 * std::size(fracs); ++v) {
    double sum = 0;
    for (size_t i = v * per; i < (v + 1) * per; ++i) sum += bits_to_float(c[i]);
    const double f = fracs[v / 2], sign = y[v * per] > 0 ? 1.0 : -1.0;
    const double est = (sum / per - sign) * 128.0 * sign;
    CAPTURE(f, sign, est);
    CHECK(std::abs(est - f) <= 5.0 * std::sqrt(f * (1 - f) / per) + 1e-4);
  }
  be.set_param_buffer(nullptr, 0);
  be.dealloc(d);
  be.dealloc(q);
}

TEST_CASE("bf16 GEMMs read the parameter copy; writes into the range fall back to per-call rounding",
          "[cuda][bf16][param_copy]") {
  struct Shape {
    int N, C, OC;
    size_t off;
  };
  const Shape shape = GENERATE(Shape{130, 768, 256, 128}, Shape{7, 33, 100, 8}, Shape{64, 96, 40, 3});
  const auto [N, C, OC, off] = shape;
  CAPTURE(N, C, OC, off);
  const bool aligned = off % 8 == 0;  // the copy is read only at 16-byte alignment
  Pair p;
  auto& be = cuda_of(p);
  be.set_precision(Precision::bf16);
  be.set_param_copy_enabled(true);
  const size_t wn = size_t(OC) * C, n_params = off + wn + size_t(OC) + 5;
  const std::vector<float> params = randn(n_params, 81, 0.1f);
  const std::vector<float> x = randn(size_t(N) * C, 82), dout = randn(size_t(N) * OC, 83);
  const std::vector<float> dx0 = randn(size_t(N) * C, 84), dw0 = randn(wn, 85);
  float* P = static_cast<float*>(be.alloc(n_params * sizeof(float)));
  be.upload(P, params.data(), n_params * sizeof(float));
  const float* w = P + off;
  const float* bias = P + off + wn;
  Twin<float> px(p, x), pd(p, dout), out(p, size_t(N) * OC), dx(p, dx0), dw(p, dw0);
  struct Result {
    std::vector<float> out, dx, dw;
  };
  auto run = [&] {
    be.matmul_forward(out.cuda, px.cuda, w, bias, N, C, OC);
    be.upload(dx.cuda, dx0.data(), dx0.size() * sizeof(float));
    be.upload(dw.cuda, dw0.data(), dw0.size() * sizeof(float));
    be.matmul_backward(dx.cuda, dw.cuda, nullptr, pd.cuda, px.cuda, w, N, C, OC, GradMode::accumulate);
    return Result{out.host_cuda(), dx.host_cuda(), dw.host_cuda()};
  };
  auto per_call = [&] {
    be.set_param_copy_enabled(false);
    Result r = run();
    be.set_param_copy_enabled(true);
    return r;
  };
  auto same = [](const Result& a, const Result& b) {
    return bit_equal(a.out, b.out) && bit_equal(a.dx, b.dx) && bit_equal(a.dw, b.dw);
  };
  be.set_param_buffer(P, n_params);
  const Result base = per_call();

  SECTION("a round-to-nearest copy gives the per-call result; the copy is what is read") {
    be.write_param_copy(3, 1, R::nearest);
    const Result r = run();
    // Same operand bits; with the weight 256-byte aligned in the copy (off = 128) the same
    // cuBLASLt algorithm too, hence the same bits; otherwise the same values within fp32 order.
    if (off % 128 == 0) CHECK(same(r, base));
    require_close(base.out, r.out, 1e-5, 1e-5, "nearest copy vs per-call: out");
    require_close(base.dx, r.dx, 1e-5, 1e-5, "nearest copy vs per-call: dinp");
    auto* copy = static_cast<uint16_t*>(const_cast<void*>(be.param_copy()));
    be.zero(copy + off, wn * sizeof(uint16_t));  // outside the fp32 range: the copy stays valid
    REQUIRE(be.param_copy() != nullptr);
    const std::vector<float> o = run().out;
    bool bias_only = true;
    for (size_t i = 0; i < o.size(); ++i) bias_only &= o[i] == params[off + wn + i % size_t(OC)];
    CHECK(bias_only == aligned);
  }

  SECTION("a stochastically rounded copy: exact on its operands, bf16-close to fp32") {
    be.refresh_param_copy(42, 7);
    const Result r = run();
    const Bits cb = copy_bits(be, n_params);
    std::vector<float> w_sr(wn), x_r(x.size()), dout_r(dout.size());
    for (size_t i = 0; i < wn; ++i) w_sr[i] = aligned ? bits_to_float(cb[off + i]) : rne(params[off + i]);
    for (size_t i = 0; i < x.size(); ++i) x_r[i] = rne(x[i]);
    for (size_t i = 0; i < dout.size(); ++i) dout_r[i] = rne(dout[i]);
    const float* b = params.data() + off + wn;
    auto& cpu = *p.cpu;
    std::vector<float> o_ref(size_t(N) * OC), o_fp(size_t(N) * OC), dx_ref = dx0, dx_fp = dx0;
    cpu.matmul_forward(o_ref.data(), x_r.data(), w_sr.data(), b, N, C, OC);
    cpu.matmul_forward(o_fp.data(), x.data(), params.data() + off, b, N, C, OC);
    cpu.matmul_backward(dx_ref.data(), nullptr, nullptr, dout_r.data(), x_r.data(), w_sr.data(), N, C, OC, GradMode::accumulate);
    cpu.matmul_backward(dx_fp.data(), nullptr, nullptr, dout.data(), x.data(), params.data() + off, N, C, OC, GradMode::accumulate);
    require_close(o_ref, r.out, 1e-4, 1e-4, "SR copy: out vs CPU on the same operands");
    require_close(dx_ref, r.dx, 1e-4, 1e-4, "SR copy: dinp vs CPU on the same operands");
    const float* wf = params.data() + off;
    CHECK(bound_ratio(r.out, o_fp, x.data(), wf, N, OC, C, size_t(C), 1) <= 1.0);      // out[i,o]: Σ_c x[i,c]·w[o,c]
    CHECK(bound_ratio(r.dx, dx_fp, dout.data(), wf, N, C, OC, 1, size_t(C)) <= 1.0);   // dinp[i,c]: Σ_o dout[i,o]·w[o,c]
    CHECK(bit_equal(r.dw, base.dw));  // dweight reads no parameter
    CHECK(bit_equal(r.out, base.out) == !aligned);
    be.refresh_param_copy(42, 7);
    CHECK(same(run(), r));  // deterministic
  }

  SECTION("upload, zero or adamw into the range invalidates the copy: per-call results") {
    const float one = 1.5f;
    be.refresh_param_copy(42, 8);
    be.upload(P + n_params - 1, &one, sizeof one);
    CHECK(be.param_copy() == nullptr);
    CHECK(same(run(), per_call()));
    be.refresh_param_copy(42, 9);
    const size_t k = 5;
    Twin<float> g(p, randn(k, 86)), m(p, k), v(p, k);
    be.adamw_update(P + n_params - k, g.cuda, m.cuda, v.cuda, k, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 1.0f, 1);
    CHECK(be.param_copy() == nullptr);
    CHECK(same(run(), per_call()));
    be.refresh_param_copy(42, 10);
    be.zero(P, sizeof(float));
    CHECK(be.param_copy() == nullptr);
    CHECK(same(run(), per_call()));
    be.refresh_param_copy(42, 11);
    be.upload(dx.cuda, &one, sizeof one);  // elsewhere: still valid
    CHECK(be.param_copy() != nullptr);
  }
  be.dealloc(P);
  CHECK(be.param_copy() == nullptr);
}

#endif  // COMPETELM_HAVE_CUDA
