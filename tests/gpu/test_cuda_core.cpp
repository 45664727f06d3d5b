// The CUDA backend's core ops against the CPU oracle: memory, embeddings, layernorm, linear
// layers, pointwise ops, cross-entropy and the optimizer kernels. Forward and backward on
// awkward shapes (N = 1, sizes that are no multiple of a block or a warp, large C); the
// backward ops' outputs are pre-filled with random values so that += (not =) is checked;
// every op is run twice and must give bit-identical results (no atomics anywhere).
//
// Tolerances (|cuda − cpu| ≤ atol + rtol·|cpu|): element-wise adds and the embedding
// backward follow the CPU's order of fp32 operations (1e-6, effectively exact); reductions
// over a row or a GEMM's inner dimension 1e-5..1e-4; Σ x² in double 1e-10.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "backend/cuda_factory.hpp"
#include "backend/cuda_info.hpp"
#include "core/error.hpp"
#include "gpu_compare.hpp"
#ifdef COMPETELM_HAVE_CUDA
#include "cuda_backend.cuh"
#endif

using namespace competelm;
using namespace competelm::gpu_testing;

namespace {

template <typename T>
bool bit_equal(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

std::vector<int32_t> random_ids(size_t n, int below, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> v(n);
  for (auto& x : v) x = static_cast<int32_t>(rng.below(uint64_t(below)));
  return v;
}

// A device buffer of the CUDA backend alone (for determinism reruns).
struct Dev {
  Backend& be;
  float* p;
  size_t n;
  Dev(Backend& b, const std::vector<float>& host) : be(b), n(host.size()) {
    p = static_cast<float*>(be.alloc(std::max<size_t>(n, 1) * sizeof(float)));
    be.upload(p, host.data(), n * sizeof(float));
  }
  ~Dev() { be.dealloc(p); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  std::vector<float> host() const {
    std::vector<float> h(n);
    be.download(h.data(), p, n * sizeof(float));
    return h;
  }
};

}  // namespace

// ---- memory -------------------------------------------------------------------------------

TEST_CASE("cuda memory: zeroed alloc, round trips, zero, accounting, bad dealloc", "[cuda][memory]") {
  Pair p;
  Backend& be = *p.cuda;
  const size_t n = (size_t{1} << 20) + 13;
  float* d = static_cast<float*>(be.alloc(n * sizeof(float)));
  std::vector<float> h(n, 1.0f);
  be.download(h.data(), d, n * sizeof(float));
  for (float x : h) REQUIRE(x == 0.0f);  // alloc returns zeroed memory
  const std::vector<float> src = randn(n, 1);
  be.upload(d, src.data(), n * sizeof(float));
  be.download(h.data(), d, n * sizeof(float));
  REQUIRE(bit_equal(h, src));
  be.zero(d + 5, 7 * sizeof(float));
  be.download(h.data(), d, n * sizeof(float));
  for (size_t i = 0; i < n; ++i) REQUIRE(h[i] == ((i >= 5 && i < 12) ? 0.0f : src[i]));
  be.synchronize();
  CHECK(cuda_peak_memory_bytes(be) >= n * sizeof(float));
  CHECK(cuda_peak_memory_bytes(*p.cpu) == 0);
#ifdef COMPETELM_HAVE_CUDA
  auto& cb = dynamic_cast<cuda::CudaBackend&>(be);
  const size_t live = cb.live_bytes();
  void* extra = be.alloc(1000);
  CHECK(cb.live_bytes() == live + 1000);
  be.dealloc(extra);
  CHECK(cb.live_bytes() == live);
  CHECK(cb.peak_bytes() >= live + 1000);
#endif
  int not_ours = 0;
  REQUIRE_THROWS_WITH(be.dealloc(&not_ours), Catch::Contains("did not allocate"));
  be.dealloc(d);
  be.dealloc(nullptr);  // no-op
}

TEST_CASE("cuda backend on a device that does not exist names it", "[cuda][memory]") {
  // make_backend maps a rank's local GPU index onto the visible ones (977 % count): the
  // backend itself must refuse an index that does not exist, naming it.
  REQUIRE_THROWS_WITH(make_cuda_backend(977), Catch::Contains("977"));
}

// ---- embeddings -----------------------------------------------------------------------------

TEST_CASE("cuda encoder forward and backward match the CPU", "[cuda][encoder]") {
  struct Shape {
    int B, T, C, V;
  };
  // V small against B·T: rows of dwte receive many tokens; V = 1: every token is the same.
  for (const Shape s : {Shape{1, 1, 1, 3}, Shape{2, 7, 33, 50}, Shape{3, 5, 17, 1}, Shape{4, 64, 768, 300},
                        Shape{2, 129, 100, 5000}}) {
    CAPTURE(s.B, s.T, s.C, s.V);
    Pair p;
    const size_t BT = size_t(s.B) * s.T;
    Twin<int32_t> tokens(p, random_ids(BT, s.V, 11));
    Twin<float> wte(p, randn(size_t(s.V) * s.C, 12)), wpe(p, randn(size_t(s.T) * s.C, 13));
    Twin<float> out(p, randn(BT * s.C, 14));
    p.cpu->encoder_forward(out.cpu, tokens.cpu, wte.cpu, wpe.cpu, s.B, s.T, s.C);
    p.cuda->encoder_forward(out.cuda, tokens.cuda, wte.cuda, wpe.cuda, s.B, s.T, s.C);
    require_close(out, 0.0, 0.0, "encoder out");

    const std::vector<float> dwte0 = randn(size_t(s.V) * s.C, 15), dwpe0 = randn(size_t(s.T) * s.C, 16);
    Twin<float> dwte(p, dwte0), dwpe(p, dwpe0), dout(p, randn(BT * s.C, 17));
    p.cpu->encoder_backward(dwte.cpu, dwpe.cpu, dout.cpu, tokens.cpu, s.B, s.T, s.C);
    p.cuda->encoder_backward(dwte.cuda, dwpe.cuda, dout.cuda, tokens.cuda, s.B, s.T, s.C);
    // Same order of fp32 additions as the CPU (position order per row).
    require_close(dwte, 1e-6, 1e-6, "dwte");
    require_close(dwpe, 1e-6, 1e-6, "dwpe");
    // Determinism: the same call from the same state gives the same bits.
    Dev dwte2(*p.cuda, dwte0), dwpe2(*p.cuda, dwpe0);
    p.cuda->encoder_backward(dwte2.p, dwpe2.p, dout.cuda, tokens.cuda, s.B, s.T, s.C);
    REQUIRE(bit_equal(dwte2.host(), dwte.host_cuda()));
    REQUIRE(bit_equal(dwpe2.host(), dwpe.host_cuda()));
  }
}

// ---- layernorm -------------------------------------------------------------------------------

TEST_CASE("cuda layernorm forward and backward match the CPU", "[cuda][layernorm]") {
  struct Shape {
    int N, C;
  };
  // C % 4 == 0 and C <= 1024 take the float4 path (cuda/layernorm.cu); N = 2048: 64 partial rows
  // of dweight / dbias in the backward.
  for (const Shape s : {Shape{1, 1}, Shape{1, 7}, Shape{5, 33}, Shape{37, 768}, Shape{300, 1600}, Shape{3, 4099},
                        Shape{2048, 768}, Shape{70, 1024}, Shape{33, 40}}) {
    CAPTURE(s.N, s.C);
    Pair p;
    const size_t NC = size_t(s.N) * s.C;
    std::vector<float> x = randn(NC, 21, 2.0f);
    for (size_t i = 0; i < NC; ++i) x[i] += 0.5f;  // a non-zero mean
    Twin<float> inp(p, x), w(p, randn(size_t(s.C), 22)), b(p, randn(size_t(s.C), 23));
    Twin<float> out(p, randn(NC, 24)), mean(p, randn(size_t(s.N), 25)), rstd(p, randn(size_t(s.N), 26));
    p.cpu->layernorm_forward(out.cpu, mean.cpu, rstd.cpu, inp.cpu, w.cpu, b.cpu, s.N, s.C);
    p.cuda->layernorm_forward(out.cuda, mean.cuda, rstd.cuda, inp.cuda, w.cuda, b.cuda, s.N, s.C);
    require_close(mean, 1e-5, 1e-6, "mean");
    require_close(rstd, 1e-5, 1e-6, "rstd");
    require_close(out, 1e-5, 1e-5, "out");

    const std::vector<float> dinp0 = randn(NC, 27), dw0 = randn(size_t(s.C), 28), db0 = randn(size_t(s.C), 29);
    Twin<float> dinp(p, dinp0), dw(p, dw0), db(p, db0), dout(p, randn(NC, 30));
    // Both backends from the CPU's statistics, so the backward is compared on its own.
    Twin<float> m_in(p, mean.host_cpu()), r_in(p, rstd.host_cpu());
    p.cpu->layernorm_backward(dinp.cpu, dw.cpu, db.cpu, dout.cpu, inp.cpu, w.cpu, m_in.cpu, r_in.cpu, s.N, s.C);
    p.cuda->layernorm_backward(dinp.cuda, dw.cuda, db.cuda, dout.cuda, inp.cuda, w.cuda, m_in.cuda, r_in.cuda, s.N,
                               s.C);
    require_close(dinp, 1e-4, 1e-4, "dinp");
    require_close(dw, 1e-4, 1e-4, "dweight");
    require_close(db, 1e-4, 1e-4, "dbias");
    Dev dinp2(*p.cuda, dinp0), dw2(*p.cuda, dw0), db2(*p.cuda, db0);
    p.cuda->layernorm_backward(dinp2.p, dw2.p, db2.p, dout.cuda, inp.cuda, w.cuda, m_in.cuda, r_in.cuda, s.N, s.C);
    REQUIRE(bit_equal(dinp2.host(), dinp.host_cuda()));
    REQUIRE(bit_equal(dw2.host(), dw.host_cuda()));
    REQUIRE(bit_equal(db2.host(), db.host_cuda()));
  }
}

TEST_CASE("cuda residual_layernorm_forward matches the CPU's accumulate + layernorm", "[cuda][layernorm]") {
  struct Shape {
    int N, C;
  };
  for (const Shape s : {Shape{1, 1}, Shape{1, 33}, Shape{1, 768}, Shape{37, 768}, Shape{300, 1600}, Shape{3, 4099},
                        Shape{2048, 768}, Shape{33, 40}}) {
    CAPTURE(s.N, s.C);
    Pair p;
    const size_t NC = size_t(s.N) * s.C;
    std::vector<float> r0 = randn(NC, 41, 2.0f);
    for (size_t i = 0; i < NC; ++i) r0[i] += 0.5f;  // a non-zero mean
    const std::vector<float> out0 = randn(NC, 44), mean0 = randn(size_t(s.N), 45), rstd0 = randn(size_t(s.N), 46);
    Twin<float> res(p, r0), x(p, randn(NC, 42)), w(p, randn(size_t(s.C), 43)), b(p, randn(size_t(s.C), 47));
    Twin<float> out(p, out0), mean(p, mean0), rstd(p, rstd0);
    // The oracle: the two separate CPU ops.
    p.cpu->accumulate(res.cpu, x.cpu, NC);
    p.cpu->layernorm_forward(out.cpu, mean.cpu, rstd.cpu, res.cpu, w.cpu, b.cpu, s.N, s.C);
    p.cuda->residual_layernorm_forward(res.cuda, x.cuda, out.cuda, mean.cuda, rstd.cuda, w.cuda, b.cuda, s.N, s.C);
    require_close(res, 0, 0, "res");  // one fp32 add per element, as the CPU
    require_close(mean, 1e-5, 1e-6, "mean");
    require_close(rstd, 1e-5, 1e-6, "rstd");
    require_close(out, 1e-5, 1e-5, "out");
    // Deterministic: the same call again gives the same bits.
    Dev res2(*p.cuda, r0), out2(*p.cuda, out0), mean2(*p.cuda, mean0), rstd2(*p.cuda, rstd0);
    p.cuda->residual_layernorm_forward(res2.p, x.cuda, out2.p, mean2.p, rstd2.p, w.cuda, b.cuda, s.N, s.C);
    REQUIRE(bit_equal(res2.host(), res.host_cuda()));
    REQUIRE(bit_equal(out2.host(), out.host_cuda()));
    REQUIRE(bit_equal(mean2.host(), mean.host_cuda()));
    REQUIRE(bit_equal(rstd2.host(), rstd.host_cuda()));
  }
}

// ---- linear layers --------------------------------------------------------------------------

namespace {
struct MatmulShape {
  int N, C, OC;
};

// offset: elements added to every CUDA pointer (and the CPU's, for the same data) so that the
// GEMM sees 4-byte-aligned operands, as expert slices of the MoE layers can be.
void check_matmul(const MatmulShape& s, bool with_bias, size_t offset, double rtol, double atol,
                  Precision precision = Precision::fp32) {
  CAPTURE(s.N, s.C, s.OC, with_bias, offset, precision_name(precision));
  Pair p;
  p.cuda->set_precision(precision);
  // bf16: operands exactly representable in bf16 (see randn_bf16), so that the tolerance can
  // stay at fp32 accumulation level and catch any layout or conversion mistake.
  const auto rnd = precision == Precision::bf16 ? randn_bf16 : randn;
  const size_t o = offset;
  Twin<float> inp(p, rnd(o + size_t(s.N) * s.C, 31, 1.0f)), w(p, rnd(o + size_t(s.OC) * s.C, 32, 0.1f));
  Twin<float> bias(p, randn(o + size_t(s.OC), 33));
  Twin<float> out(p, randn(o + size_t(s.N) * s.OC, 34));
  const float* bc = with_bias ? bias.cpu + o : nullptr;
  const float* bg = with_bias ? bias.cuda + o : nullptr;
  p.cpu->matmul_forward(out.cpu + o, inp.cpu + o, w.cpu + o, bc, s.N, s.C, s.OC);
  p.cuda->matmul_forward(out.cuda + o, inp.cuda + o, w.cuda + o, bg, s.N, s.C, s.OC);
  require_close(out, rtol, atol, "matmul out");

  const std::vector<float> dinp0 = randn(o + size_t(s.N) * s.C, 35), dw0 = randn(o + size_t(s.OC) * s.C, 36);
  const std::vector<float> db0 = randn(o + size_t(s.OC), 37);
  Twin<float> dinp(p, dinp0), dw(p, dw0), db(p, db0), dout(p, rnd(o + size_t(s.N) * s.OC, 38, 1.0f));
  float* dbc = with_bias ? db.cpu + o : nullptr;
  float* dbg = with_bias ? db.cuda + o : nullptr;
  p.cpu->matmul_backward(dinp.cpu + o, dw.cpu + o, dbc, dout.cpu + o, inp.cpu + o, w.cpu + o, s.N, s.C, s.OC, GradMode::accumulate);
  p.cuda->matmul_backward(dinp.cuda + o, dw.cuda + o, dbg, dout.cuda + o, inp.cuda + o, w.cuda + o, s.N, s.C, s.OC, GradMode::accumulate);
  require_close(dinp, rtol, atol, "dinp");
  require_close(dw, rtol, atol, "dweight");
  require_close(db, rtol, atol, "dbias");  // untouched (= pre-fill) without a bias

  // Deterministic: the backward again from the same pre-fill.
  Dev dinp2(*p.cuda, dinp0), dw2(*p.cuda, dw0), db2(*p.cuda, db0);
  p.cuda->matmul_backward(dinp2.p + o, dw2.p + o, with_bias ? db2.p + o : nullptr, dout.cuda + o, inp.cuda + o,
                          w.cuda + o, s.N, s.C, s.OC, GradMode::accumulate);
  REQUIRE(bit_equal(dinp2.host(), dinp.host_cuda()));
  REQUIRE(bit_equal(dw2.host(), dw.host_cuda()));
  REQUIRE(bit_equal(db2.host(), db.host_cuda()));
}
}  // namespace

TEST_CASE("cuda matmul forward and backward match the CPU", "[cuda][matmul]") {
  for (const MatmulShape s : {MatmulShape{1, 1, 1}, MatmulShape{3, 5, 7}, MatmulShape{17, 33, 65},
                              MatmulShape{130, 257, 100}, MatmulShape{64, 768, 2304}, MatmulShape{3, 768, 5000}}) {
    check_matmul(s, true, 0, 1e-4, 1e-4);
    check_matmul(s, false, 0, 1e-4, 1e-4);
  }
}

TEST_CASE("cuda matmul on 4-byte-aligned operands (expert slices) matches the CPU", "[cuda][matmul]") {
  for (const MatmulShape s : {MatmulShape{5, 12, 7}, MatmulShape{33, 48, 96}}) {
    check_matmul(s, true, 1, 1e-4, 1e-4);
    check_matmul(s, true, 3, 1e-4, 1e-4);
    check_matmul(s, false, 2, 1e-4, 1e-4);
  }
}

TEST_CASE("cuda matmul backward with null dinp / dweight / dbias touches only the others", "[cuda][matmul]") {
  Pair p;
  const int N = 9, C = 20, OC = 11;
  Twin<float> inp(p, randn(size_t(N) * C, 41)), w(p, randn(size_t(OC) * C, 42)), dout(p, randn(size_t(N) * OC, 43));
  Twin<float> dinp(p, randn(size_t(N) * C, 44)), dw(p, randn(size_t(OC) * C, 45)), db(p, randn(size_t(OC), 46));
  p.cpu->matmul_backward(nullptr, dw.cpu, nullptr, dout.cpu, inp.cpu, w.cpu, N, C, OC, GradMode::accumulate);
  p.cuda->matmul_backward(nullptr, dw.cuda, nullptr, dout.cuda, inp.cuda, w.cuda, N, C, OC, GradMode::accumulate);
  p.cpu->matmul_backward(dinp.cpu, nullptr, db.cpu, dout.cpu, inp.cpu, w.cpu, N, C, OC, GradMode::accumulate);
  p.cuda->matmul_backward(dinp.cuda, nullptr, db.cuda, dout.cuda, inp.cuda, w.cuda, N, C, OC, GradMode::accumulate);
  require_close(dinp, 1e-5, 1e-5, "dinp");
  require_close(dw, 1e-5, 1e-5, "dweight");
  require_close(db, 1e-5, 1e-5, "dbias");
  // N = 0 (an expert without tokens) is a no-op.
  p.cuda->matmul_forward(dinp.cuda, inp.cuda, w.cuda, nullptr, 0, C, OC);
  p.cuda->matmul_backward(dinp.cuda, dw.cuda, db.cuda, dout.cuda, inp.cuda, w.cuda, 0, C, OC, GradMode::accumulate);
  require_close(dinp, 1e-5, 1e-5, "dinp after N = 0");
}

TEST_CASE("cuda matmul with TF32 stays within TF32 accuracy", "[cuda][matmul]") {
  // TF32 keeps 10 mantissa bits: ~1e-3 relative per product.
  check_matmul(MatmulShape{64, 768, 256}, true, 0, 1e-2, 2e-2, Precision::tf32);
}

TEST_CASE("cuda matmul in bf16 on bf16-exact operands matches the CPU (packed and 4-byte-aligned)",
          "[cuda][matmul][bf16]") {
  // Odd element counts (the flat conversion's tail), 4-byte-aligned operands (the strided
  // conversion), bias through the epilogue and not, the LM head's wide output.
  for (const MatmulShape s : {MatmulShape{3, 5, 7}, MatmulShape{17, 33, 65}, MatmulShape{130, 257, 100},
                              MatmulShape{64, 768, 2304}, MatmulShape{3, 768, 5000}}) {
    check_matmul(s, true, 0, 1e-4, 1e-4, Precision::bf16);
    check_matmul(s, false, 1, 1e-4, 1e-4, Precision::bf16);
  }
}

TEST_CASE("cuda matmul in bf16 on arbitrary fp32 operands stays within bf16 accuracy", "[cuda][matmul][bf16]") {
  // bf16 keeps 8 mantissa bits: ~0.3% relative per operand; with inner dimensions of a few
  // hundred the worst element error stays below ~0.2 (dweight, inner N = 130) and ~0.04 (out).
  check_matmul(MatmulShape{130, 768, 256}, true, 0, 3e-2, 0.25, Precision::bf16);
}

// ---- pointwise ---------------------------------------------------------------------------------

TEST_CASE("cuda gelu, residual, accumulate and scale match the CPU", "[cuda][pointwise]") {
  for (const size_t n : {size_t{1}, size_t{1000}, (size_t{1} << 20) + 3}) {
    CAPTURE(n);
    Pair p;
    Twin<float> x(p, randn(n, 51, 3.0f)), y(p, randn(n, 52)), out(p, randn(n, 53));
    p.cpu->gelu_forward(out.cpu, x.cpu, n);
    p.cuda->gelu_forward(out.cuda, x.cuda, n);
    require_close(out, 1e-5, 1e-6, "gelu");
    const std::vector<float> d0 = randn(n, 54);
    Twin<float> dinp(p, d0);
    p.cpu->gelu_backward(dinp.cpu, x.cpu, y.cpu, n, GradMode::accumulate);
    p.cuda->gelu_backward(dinp.cuda, x.cuda, y.cuda, n, GradMode::accumulate);
    require_close(dinp, 1e-5, 1e-5, "gelu backward (+=)");

    p.cpu->residual_forward(out.cpu, x.cpu, y.cpu, n);
    p.cuda->residual_forward(out.cuda, x.cuda, y.cuda, n);
    require_close(out, 0.0, 0.0, "residual");
    p.cpu->accumulate(y.cpu, x.cpu, n);
    p.cuda->accumulate(y.cuda, x.cuda, n);
    require_close(y, 0.0, 0.0, "accumulate");
    p.cpu->scale(y.cpu, -0.37f, n);
    p.cuda->scale(y.cuda, -0.37f, n);
    require_close(y, 0.0, 0.0, "scale");
  }
}

TEST_CASE("cuda pointwise ops reach elements beyond 2^31", "[cuda][pointwise][large]") {
  Pair p;
  Backend& be = *p.cuda;
  const size_t n = (size_t{1} << 31) + 1000;  // 8 GiB of floats
  float* x = nullptr;
  try {
    x = static_cast<float*>(be.alloc(n * sizeof(float)));
  } catch (const Error& e) {
    WARN("skipped: " << e.what());
    return;
  }
  const size_t tail = 4096;
  const std::vector<float> pattern = randn(tail, 55);
  be.upload(x + (n - tail), pattern.data(), tail * sizeof(float));
  be.upload(x, pattern.data(), tail * sizeof(float));
  be.scale(x, 2.0f, n);
  be.accumulate(x, x, n);  // y == x: 4·pattern
  std::vector<float> back(tail), head(tail);
  be.download(back.data(), x + (n - tail), tail * sizeof(float));
  be.download(head.data(), x, tail * sizeof(float));
  be.dealloc(x);
  for (size_t i = 0; i < tail; ++i) {
    REQUIRE(back[i] == 4.0f * pattern[i]);
    REQUIRE(head[i] == 4.0f * pattern[i]);
  }
}

// ---- cross-entropy ---------------------------------------------------------------------------

TEST_CASE("cuda crossentropy forward and (in-place) backward match the CPU", "[cuda][crossentropy]") {
  struct Shape {
    int N, V, Vp;
  };
  for (const Shape s : {Shape{1, 1, 128}, Shape{3, 5, 8}, Shape{7, 1000, 1024}, Shape{5, 50257, 50304},
                        Shape{64, 300, 300}, Shape{4, 1001, 1003}, Shape{64, 50257, 50304}}) {
    CAPTURE(s.N, s.V, s.Vp);
    Pair p;
    const size_t n = size_t(s.N) * s.Vp;
    const std::vector<float> logits0 = randn(n, 61, 3.0f);
    Twin<float> logits(p, logits0);
    Twin<int32_t> targets(p, random_ids(size_t(s.N), s.V, 62));
    Twin<float> losses(p, randn(size_t(s.N), 63));
    p.cpu->crossentropy_forward(losses.cpu, logits.cpu, targets.cpu, s.N, s.V, s.Vp);
    p.cuda->crossentropy_forward(losses.cuda, logits.cuda, targets.cuda, s.N, s.V, s.Vp);
    require_close(losses, 1e-5, 1e-5, "losses");
    REQUIRE(bit_equal(logits.host_cuda(), logits0));  // logits untouched

    const float dloss = 1.0f / float(s.N);
    // Out of place into a buffer of garbage (= semantics, padding columns zeroed).
    Twin<float> dlogits(p, randn(n, 64));
    Twin<float> cpu_losses(p, losses.host_cpu());  // the backward on the same losses on both sides
    p.cpu->crossentropy_backward(dlogits.cpu, logits.cpu, cpu_losses.cpu, targets.cpu, dloss, s.N, s.V, s.Vp);
    p.cuda->crossentropy_backward(dlogits.cuda, logits.cuda, cpu_losses.cuda, targets.cuda, dloss, s.N, s.V, s.Vp);
    require_close(dlogits, 1e-4, 1e-7, "dlogits");
    const std::vector<float> g = dlogits.host_cuda();
    for (int i = 0; i < s.N; ++i)
      for (int j = s.V; j < s.Vp; ++j) REQUIRE(g[size_t(i) * s.Vp + j] == 0.0f);
    // In place: dlogits aliases logits.
    p.cpu->crossentropy_backward(logits.cpu, logits.cpu, cpu_losses.cpu, targets.cpu, dloss, s.N, s.V, s.Vp);
    p.cuda->crossentropy_backward(logits.cuda, logits.cuda, cpu_losses.cuda, targets.cuda, dloss, s.N, s.V, s.Vp);
    require_close(logits, 1e-4, 1e-7, "dlogits in place");
    REQUIRE(bit_equal(logits.host_cuda(), g));  // in place = out of place, bit for bit
  }
}

TEST_CASE("cuda crossentropy of a target outside the vocabulary is NaN, not an out-of-bounds read",
          "[cuda][crossentropy]") {
  Pair p;
  const int N = 2, V = 10, Vp = 16;
  Twin<float> logits(p, randn(size_t(N) * Vp, 65));
  Twin<int32_t> targets(p, std::vector<int32_t>{3, 12});
  Twin<float> losses(p, size_t(N));
  p.cuda->crossentropy_forward(losses.cuda, logits.cuda, targets.cuda, N, V, Vp);
  const std::vector<float> l = losses.host_cuda();
  CHECK(std::isfinite(l[0]));
  CHECK(std::isnan(l[1]));
}

// ---- optimizer ------------------------------------------------------------------------------

TEST_CASE("cuda sum_squares matches the CPU and is deterministic", "[cuda][optimizer]") {
  for (const size_t n : {size_t{1}, size_t{1000}, size_t{8193}, size_t{10'000'019}}) {
    CAPTURE(n);
    Pair p;
    Twin<float> x(p, randn(n, 71));
    const double a = p.cpu->sum_squares(x.cpu, n), b = p.cuda->sum_squares(x.cuda, n);
    CHECK(b == Approx(a).epsilon(1e-10));
    CHECK(p.cuda->sum_squares(x.cuda, n) == b);  // bit-identical rerun
    CHECK(p.cuda->sum_squares(x.cuda + 1, n - 1) == Approx(p.cpu->sum_squares(x.cpu + 1, n - 1)).epsilon(1e-10));
  }
  Pair p;
  CHECK(p.cuda->sum_squares(nullptr, 0) == 0.0);
}

TEST_CASE("cuda sum_squares_ranges (one fetch for many ranges) matches the CPU and is deterministic",
          "[cuda][optimizer]") {
  Pair p;
  const size_t n = 3'000'017;
  Twin<float> x(p, randn(n, 72));
  const std::vector<std::pair<size_t, size_t>> ranges{{0, 768}, {768, 768}, {1000, 2'400'000}, {2'400'000, n}};
  const double a = p.cpu->sum_squares_ranges(x.cpu, ranges), b = p.cuda->sum_squares_ranges(x.cuda, ranges);
  CHECK(b == Approx(a).epsilon(1e-10));
  CHECK(p.cuda->sum_squares_ranges(x.cuda, ranges) == b);  // bit-identical rerun
  CHECK(p.cuda->sum_squares_ranges(x.cuda, {}) == 0.0);
}

TEST_CASE("cuda adamw_update matches the CPU over several steps", "[cuda][optimizer]") {
  for (const size_t n : {size_t{1}, size_t{17}, size_t{100'003}}) {
    CAPTURE(n);
    Pair p;
    Twin<float> params(p, randn(n, 81)), grads(p, randn(n, 82)), m(p, n), v(p, n);
    for (int t = 1; t <= 4; ++t) {
      const std::vector<float> g = randn(n, 83 + t, 0.1f * t);
      p.cpu->upload(grads.cpu, g.data(), n * sizeof(float));
      p.cuda->upload(grads.cuda, g.data(), n * sizeof(float));
      const float grad_scale = t == 2 ? 0.5f : 1.0f, wd = t == 3 ? 0.0f : 0.1f;
      p.cpu->adamw_update(params.cpu, grads.cpu, m.cpu, v.cpu, n, 1e-3f, 0.9f, 0.95f, 1e-8f, wd, grad_scale, t);
      p.cuda->adamw_update(params.cuda, grads.cuda, m.cuda, v.cuda, n, 1e-3f, 0.9f, 0.95f, 1e-8f, wd, grad_scale, t);
    }
    require_close(m, 1e-5, 1e-8, "m");
    require_close(v, 1e-5, 1e-10, "v");
    require_close(params, 1e-5, 1e-6, "params");
  }
}
