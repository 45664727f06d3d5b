// Speed of the memory-bound ops of a GPT-2 training step at the GPT-2 small shape (B = 16,
// T = 1024: N = 16384 rows, C = 768, V = 50257 padded to Vp = 50304): cross-entropy forward
// and (in place) backward, layernorm forward, residual_layernorm_forward and layernorm backward.
// Prints ms per call and the bandwidth reached on the bytes each op must move at least (each
// tensor read or written once); checks only that the results are finite. Hidden ([.bench]).
// Run: competelm-gpu-tests "[.bench]" -s   (an H100's HBM3 peaks near 3 TB/s: 3000 GB/s).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <vector>

#include "attention_ref.hpp"
#include "gpu_compare.hpp"

namespace competelm::gpu_testing {
namespace {

// Milliseconds per call of f, over `reps` calls after one warm-up call.
template <typename F>
double time_ms(Backend& be, int reps, F&& f) {
  f();
  be.synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) f();
  be.synchronize();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / reps;
}

void report(const char* what, double ms, double bytes) {
  std::printf("%-40s %8.3f ms  %7.1f GB/s  (%.0f MB moved)\n", what, ms, bytes / (ms * 1e6), bytes / 1e6);
}

bool all_finite(const std::vector<float>& v) {
  return std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); });
}

TEST_CASE("cuda memory-bound ops: GB/s of crossentropy and layernorm at the GPT-2 shape",
          "[cuda][crossentropy][layernorm][.bench]") {
  std::unique_ptr<Backend> be = make_backend("cuda", 0);
  const int N = 16 * 1024, C = 768, V = 50257, Vp = 50304;
  const double f = sizeof(float);

  {  // cross-entropy: the forward reads the logits once; the backward reads and writes them once
    Buffer logits(*be, size_t(N) * Vp), losses(*be, size_t(N));
    const std::vector<float> host = randn(size_t(N) * Vp, 91, 2.0f);
    be->upload(logits.p, host.data(), host.size() * sizeof(float));
    std::vector<int32_t> t(static_cast<size_t>(N));
    for (int i = 0; i < N; ++i) t[size_t(i)] = static_cast<int32_t>((i * 7919) % V);
    auto* targets = static_cast<int32_t*>(be->alloc(t.size() * sizeof(int32_t)));
    be->upload(targets, t.data(), t.size() * sizeof(int32_t));
    const double fwd = time_ms(*be, 10, [&] { be->crossentropy_forward(losses.p, logits.p, targets, N, V, Vp); });
    CHECK(all_finite(losses.host()));
    // In place, as the model runs it (the logits become gradients: later calls read those).
    const double bwd = time_ms(*be, 10, [&] {
      be->crossentropy_backward(logits.p, logits.p, losses.p, targets, 1.0f / N, N, V, Vp);
    });
    report("crossentropy_forward", fwd, double(N) * V * f);
    report("crossentropy_backward (in place)", bwd, 2.0 * N * Vp * f);
    std::printf("%-40s %8.3f ms\n", "crossentropy fwd + bwd", fwd + bwd);
    be->dealloc(targets);
  }
  {  // layernorm: (N, C) tensors; weight, bias, mean, rstd are small
    const size_t NC = size_t(N) * C;
    Buffer inp(*be, NC), out(*be, NC), res(*be, NC), dout(*be, NC), dinp(*be, NC);
    Buffer w(*be, size_t(C)), b(*be, size_t(C)), dw(*be, size_t(C)), db(*be, size_t(C));
    Buffer mean(*be, size_t(N)), rstd(*be, size_t(N));
    const std::vector<float> x = randn(NC, 92), g = randn(NC, 93), wh = randn(size_t(C), 94);
    be->upload(inp.p, x.data(), NC * sizeof(float));
    be->upload(res.p, x.data(), NC * sizeof(float));
    be->upload(dout.p, g.data(), NC * sizeof(float));
    be->upload(w.p, wh.data(), size_t(C) * sizeof(float));
    const int reps = 50;
    const double fwd =
        time_ms(*be, reps, [&] { be->layernorm_forward(out.p, mean.p, rstd.p, inp.p, w.p, b.p, N, C); });
    const double bwd = time_ms(*be, reps, [&] {
      be->layernorm_backward(dinp.p, dw.p, db.p, dout.p, inp.p, w.p, mean.p, rstd.p, N, C);
    });
    // res += dout each call: values grow linearly with the calls, which stays finite.
    const double rfwd = time_ms(*be, reps, [&] {
      be->residual_layernorm_forward(res.p, dout.p, out.p, mean.p, rstd.p, w.p, b.p, N, C);
    });
    report("layernorm_forward", fwd, 2.0 * NC * f);
    report("residual_layernorm_forward", rfwd, 4.0 * NC * f);
    report("layernorm_backward", bwd, 4.0 * NC * f);
    // A GPT-2 small step (src/model/gpt2.cpp): ln1 of layer 0 plain, the other 24 norms fused
    // with their residual add; 25 backwards.
    std::printf("%-40s %8.3f ms\n", "layernorm per step (1 + 24 fused fwd, 25 bwd)", fwd + 24 * rfwd + 25 * bwd);
    CHECK(all_finite(out.host()));
    CHECK(all_finite(dw.host()));
    CHECK(all_finite(db.host()));
  }
}

}  // namespace
}  // namespace competelm::gpu_testing
