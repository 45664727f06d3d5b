// competelm-bench CONFIG.yaml [--set k=v]... [--steps N] [--warmup N]
// Times full training steps (forward, backward, grad norm, AdamW) of the config's model on
// random tokens and prints ms/step, tokens/s, achieved GFLOP/s, a per-op breakdown, and the
// GEMMs' GFLOP/s next to what a plain large cblas_sgemm reaches on this machine.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "backend/backend.hpp"
#include "backend/cpu/gemm_bench.hpp"
#include "backend/profiling_backend.hpp"
#include "config/config.hpp"
#include "core/cli.hpp"
#include "core/error.hpp"
#include "core/rng.hpp"
#include "model/gpt2.hpp"
#include "train/adamw.hpp"

using namespace competelm;

namespace {

struct StepRunner {
  GPT2& model;
  AdamW& opt;
  Backend& be;
  std::vector<int32_t> inputs, targets;
  int B, T;
  float run() {
    model.zero_grad();
    const float loss = model.forward(inputs.data(), targets.data(), B, T);
    model.backward(1.0f);
    const double norm = global_grad_norm(be, model.params(), model.grad_buffer());
    opt.step(model.param_buffer(), model.grad_buffer(), 1e-4f, norm > 1.0 ? float(1.0 / norm) : 1.0f);
    be.synchronize();
    return loss;
  }
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int main_bench(int argc, char** argv) {
  Cli cli("competelm-bench", "CONFIG.yaml [--set key=value]... [--steps N] [--warmup N]",
          "Benchmarks training steps of the config's model (random tokens, B = train.micro_batch,\n"
          "T = model.seq_len) and prints ms/step, tokens/s, GFLOP/s and a per-op breakdown.\n"
          "The last line is machine-readable: RESULT key=value ...");
  cli.positional("CONFIG", "YAML config whose model / train / run sections are used");
  cli.option("set", "KEY=VALUE", "override a config key", true);
  cli.option("steps", "N", "timed steps (default 5)");
  cli.option("warmup", "N", "untimed warm-up steps (default 1)");
  cli.option("no-profile", "", "skip the per-op breakdown pass");
  if (!cli.parse(argc, argv)) return 0;
  const Config cfg = load_config(cli.get("CONFIG"), cli.all("set"));
  const int steps = std::stoi(cli.get("steps", "5")), warmup = std::stoi(cli.get("warmup", "1"));
  if (steps < 1 || warmup < 0) fail("--steps must be ≥ 1 and --warmup ≥ 0");

  std::unique_ptr<Backend> backend = make_backend(cfg.run.device, cfg.run.threads);
  ProfilingBackend prof(*backend);
  ModelShape shape{cfg.model.n_layer, cfg.model.d_model, cfg.model.n_head, cfg.model.seq_len,
                   cfg.model.vocab_size};
  const int B = cfg.train.micro_batch, T = cfg.model.seq_len;
  // The model talks to the profiling wrapper; it only times when asked to (see below).
  GPT2 model(prof, shape, ModelInit{}, B, T);
  model.init_weights(cfg.run.seed);
  AdamW opt(prof, model.params(), AdamWOptions{});
  Rng rng(cfg.run.seed);
  StepRunner runner{model, opt, prof, std::vector<int32_t>(size_t(B) * T), std::vector<int32_t>(size_t(B) * T), B, T};
  for (auto& x : runner.inputs) x = static_cast<int32_t>(rng.below(cfg.model.vocab_size));
  for (auto& x : runner.targets) x = static_cast<int32_t>(rng.below(cfg.model.vocab_size));

  std::printf("competelm-bench: %s backend, model L=%d C=%d NH=%d T=%d V=%d, %.2fM params, B=%d\n",
              backend->name().c_str(), shape.n_layer, shape.d_model, shape.n_head, T, shape.vocab_size,
              model.num_parameters() / 1e6, B);
  for (int i = 0; i < warmup; ++i) runner.run();
  std::vector<double> ms;
  for (int i = 0; i < steps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    runner.run();
    ms.push_back(seconds_since(t0) * 1e3);
  }
  std::sort(ms.begin(), ms.end());
  const double med = ms[ms.size() / 2];
  const double tokens = double(B) * T;
  const double flops = model.flops_per_token(T) * tokens;
  std::printf("step: median %.1f ms (min %.1f, max %.1f) over %d steps | %.0f tokens/s | %.1f GFLOP/s (model FLOPs)\n",
              med, ms.front(), ms.back(), steps, tokens / (med / 1e3), flops / (med / 1e3) / 1e9);

  double gemm_gflops = 0.0, peak = 0.0;
  if (!cli.has("no-profile")) {
    prof.reset();
    for (int i = 0; i < steps; ++i) runner.run();
    // Wall time of the profiled steps is split by op; "other" is what no op accounts for.
    double total = 0;
    for (const auto& [name, s] : prof.stats()) total += s.seconds;
    std::printf("\nper-op time (profiled pass, %d steps):\n  %-14s %9s %7s %10s\n", steps, "op", "ms/step", "share",
                "GFLOP/s");
    for (const auto& [name, s] : prof.stats())
      std::printf("  %-14s %9.2f %6.1f%% %10s\n", name.c_str(), s.seconds * 1e3 / steps, 100.0 * s.seconds / total,
                  s.flops > 0 ? fmt::format("{:.1f}", s.flops / s.seconds / 1e9).c_str() : "-");
    const OpStats& mm = prof.stats().at("matmul");
    gemm_gflops = mm.flops / mm.seconds / 1e9;
    if (backend->name() == "cpu") {
      peak = cpu::measure_sgemm_gflops(2048, 2048, 2048, 3);
      std::printf("\nGEMMs in the step: %.1f GFLOP/s = %.0f%% of a plain 2048³ cblas_sgemm (%.1f GFLOP/s)\n",
                  gemm_gflops, 100.0 * gemm_gflops / peak, peak);
    }
  }
  std::printf("RESULT ms_per_step=%.3f tokens_per_s=%.1f model_gflops=%.2f gemm_gflops=%.2f sgemm_peak_gflops=%.2f\n",
              med, tokens / (med / 1e3), flops / (med / 1e3) / 1e9, gemm_gflops, peak);
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return run_tool("competelm-bench", main_bench, argc, argv); }
