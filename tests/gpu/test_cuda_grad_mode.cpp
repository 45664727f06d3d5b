// GradMode on the CUDA backend: matmul_backward (cuBLASLt beta = 0 vs 1, fp32 and bf16) and
// gelu_backward overwrite dinp, never reading it (a NaN pre-fill must vanish), or accumulate
// into it; weight and bias gradients accumulate either way. Overwriting gives the same values
// as accumulating into zeros (what the model did before it stopped zero-filling), and matches
// the CPU.
#include <catch2/catch.hpp>

#include <limits>
#include <vector>

#include "backend/backend.hpp"
#include "gpu_compare.hpp"

using namespace competelm;
using namespace competelm::gpu_testing;

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// A CUDA buffer from host values.
struct DevVec {
  Backend& be;
  float* p;
  size_t n;
  DevVec(Backend& b, const std::vector<float>& host) : be(b), n(host.size()) {
    p = static_cast<float*>(be.alloc(std::max<size_t>(n, 1) * sizeof(float)));
    be.upload(p, host.data(), n * sizeof(float));
  }
  ~DevVec() { be.dealloc(p); }
  DevVec(const DevVec&) = delete;
  DevVec& operator=(const DevVec&) = delete;
  std::vector<float> host() const {
    std::vector<float> h(n);
    be.download(h.data(), p, n * sizeof(float));
    return h;
  }
};

// Element-wise equal as floats (+0 == -0; any NaN fails).
bool same_values(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); i++)
    if (!(a[i] == b[i])) return false;
  return true;
}

struct Shape {
  int N, C, OC;
};

void check_overwrite(const Shape& s, Precision precision) {
  CAPTURE(s.N, s.C, s.OC, precision_name(precision));
  Pair p;
  p.cuda->set_precision(precision);
  const auto rnd = precision == Precision::bf16 ? randn_bf16 : randn;
  const size_t nx = size_t(s.N) * s.C, nw = size_t(s.OC) * s.C;
  Twin<float> inp(p, rnd(nx, 61, 1.0f)), w(p, rnd(nw, 62, 0.1f)), dout(p, rnd(size_t(s.N) * s.OC, 63, 1.0f));
  const std::vector<float> dw0 = randn(nw, 64), db0 = randn(size_t(s.OC), 65), garbage = randn(nx, 66, 10.0f);

  // CUDA, accumulating into zeros (the old zero-fill + beta = 1)
  DevVec dx_zero(*p.cuda, std::vector<float>(nx, 0.0f));
  p.cuda->matmul_backward(dx_zero.p, nullptr, nullptr, dout.cuda, inp.cuda, w.cuda, s.N, s.C, s.OC,
                          GradMode::accumulate);
  // CUDA, overwriting a NaN pre-fill (beta = 0: never read), with dweight and dbias accumulating
  DevVec dx_nan(*p.cuda, std::vector<float>(nx, kNaN)), dw(*p.cuda, dw0), db(*p.cuda, db0);
  p.cuda->matmul_backward(dx_nan.p, dw.p, db.p, dout.cuda, inp.cuda, w.cuda, s.N, s.C, s.OC, GradMode::overwrite);
  REQUIRE(same_values(dx_nan.host(), dx_zero.host()));

  // the CPU oracle, overwriting too; its dweight / dbias from the same pre-fills
  Twin<float> dx_cpu(p, std::vector<float>(nx, kNaN)), dw_cpu(p, dw0), db_cpu(p, db0);
  p.cpu->matmul_backward(dx_cpu.cpu, dw_cpu.cpu, db_cpu.cpu, dout.cpu, inp.cpu, w.cpu, s.N, s.C, s.OC,
                         GradMode::overwrite);
  require_close(dx_cpu.host_cpu(), dx_nan.host(), 1e-4, 1e-4, "dinp (overwrite)");
  require_close(dw_cpu.host_cpu(), dw.host(), 1e-4, 1e-4, "dweight (accumulated under overwrite)");
  require_close(db_cpu.host_cpu(), db.host(), 1e-4, 1e-4, "dbias (accumulated under overwrite)");

  // accumulate onto garbage: garbage + the product
  DevVec dx_acc(*p.cuda, garbage);
  p.cuda->matmul_backward(dx_acc.p, nullptr, nullptr, dout.cuda, inp.cuda, w.cuda, s.N, s.C, s.OC,
                          GradMode::accumulate);
  const std::vector<float> prod = dx_zero.host();
  std::vector<float> want(nx);
  for (size_t i = 0; i < nx; i++) want[i] = garbage[i] + prod[i];
  require_close(want, dx_acc.host(), 1e-5, 1e-5, "dinp (accumulate onto garbage)");
  // overwrite onto the same garbage: the product alone
  DevVec dx_over(*p.cuda, garbage);
  p.cuda->matmul_backward(dx_over.p, nullptr, nullptr, dout.cuda, inp.cuda, w.cuda, s.N, s.C, s.OC,
                          GradMode::overwrite);
  REQUIRE(same_values(dx_over.host(), prod));
}

}  // namespace

TEST_CASE("cuda matmul_backward overwrites dinp without reading it, or accumulates into it", "[cuda][matmul]") {
  for (const Precision prec : {Precision::fp32, Precision::bf16})
    for (const Shape s : {Shape{3, 5, 7}, Shape{130, 257, 100}, Shape{64, 768, 2304}, Shape{256, 768, 3072}})
      check_overwrite(s, prec);
}

TEST_CASE("cuda matmul_backward with no inner dimension: overwrite gives zeros, accumulate leaves dinp",
          "[cuda][matmul]") {
  Pair p;
  const int N = 6, C = 5;
  const std::vector<float> x = randn(size_t(N) * C, 67), dx0 = randn(size_t(N) * C, 68);
  DevVec px(*p.cuda, x), over(*p.cuda, std::vector<float>(x.size(), kNaN)), acc(*p.cuda, dx0);
  p.cuda->matmul_backward(over.p, nullptr, nullptr, px.p, px.p, px.p, N, C, 0, GradMode::overwrite);
  p.cuda->matmul_backward(acc.p, nullptr, nullptr, px.p, px.p, px.p, N, C, 0, GradMode::accumulate);
  REQUIRE(same_values(over.host(), std::vector<float>(x.size(), 0.0f)));
  REQUIRE(same_values(acc.host(), dx0));
}

TEST_CASE("cuda gelu_backward overwrites dinp without reading it, or accumulates into it", "[cuda][pointwise]") {
  for (const size_t n : {size_t{1}, size_t{1000}, (size_t{1} << 20) + 3}) {
    CAPTURE(n);
    Pair p;
    Twin<float> x(p, randn(n, 71, 3.0f)), dout(p, randn(n, 72));
    const std::vector<float> garbage = randn(n, 73, 10.0f);
    DevVec zero(*p.cuda, std::vector<float>(n, 0.0f)), nan(*p.cuda, std::vector<float>(n, kNaN)),
        acc(*p.cuda, garbage);
    p.cuda->gelu_backward(zero.p, x.cuda, dout.cuda, n, GradMode::accumulate);
    p.cuda->gelu_backward(nan.p, x.cuda, dout.cuda, n, GradMode::overwrite);
    p.cuda->gelu_backward(acc.p, x.cuda, dout.cuda, n, GradMode::accumulate);
    const std::vector<float> prod = zero.host();
    REQUIRE(same_values(nan.host(), prod));
    std::vector<float> want(n);
    for (size_t i = 0; i < n; i++) want[i] = garbage[i] + prod[i];
    require_close(want, acc.host(), 1e-6, 1e-6, "gelu backward (accumulate onto garbage)");
    Twin<float> cpu(p, std::vector<float>(n, kNaN));
    p.cpu->gelu_backward(cpu.cpu, x.cpu, dout.cpu, n, GradMode::overwrite);
    require_close(cpu.host_cpu(), prod, 1e-5, 1e-5, "gelu backward (overwrite) vs CPU");
  }
}
