// competelm-bench CONFIG.yaml [--set k=v]... [--device D] [--steps N] [--warmup N] [--moe-overhead]
// Times full training steps (forward, backward, grad norm, AdamW) of the config's model on
// random tokens and prints ms/step, tokens/s, achieved GFLOP/s, a per-op breakdown, and the
// GEMMs' GFLOP/s next to what a plain large cblas_sgemm reaches on this machine (CPU) or
// the MFU against the GPU's fp32 peak and the peak device memory (CUDA). With
// --moe-overhead: the MoE step with softmax_topk against the FLOP-equivalent dense step, and
// CompeteSMoE's measured competition overhead against the expected rate × (E/K − 1) share.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "backend/backend.hpp"
#include "backend/cpu/gemm_bench.hpp"
#include "backend/cuda_info.hpp"
#include "backend/profiling_backend.hpp"
#include "config/config.hpp"
#include "core/cli.hpp"
#include "core/error.hpp"
#include "core/rng.hpp"
#include "model/from_config.hpp"
#include "model/gpt2.hpp"
#include "moe/moe_config.hpp"
#include "train/adamw.hpp"

using namespace competelm;

namespace {

struct BenchResult {
  double median_ms = 0, min_ms = 0, max_ms = 0;
  double tokens = 0, flops_per_step = 0;
  double active_params = 0;
};

// One model + optimizer on random tokens; run() is a whole training step.
class StepBench {
 public:
  StepBench(Backend& be, const Config& cfg)
      : be_(be), B_(cfg.train.micro_batch), T_(cfg.model.seq_len), seed_(cfg.run.seed),
        model_(be, model_shape(cfg), model_init(cfg), B_, T_, model_moe(cfg)),
        opt_(be, model_.params(), AdamWOptions{}) {
    model_.init_weights(cfg.run.seed);
    // As the trainer: the bf16 parameter copy (CUDA, when enabled) is bound and written once
    // per step, so its cost and the GEMMs' savings are in the timings.
    be_.set_param_buffer(model_.param_buffer(), model_.params().total_elements());
    be_.refresh_param_copy(seed_, steps_done_);
    Rng rng(cfg.run.seed);
    inputs_.resize(size_t(B_) * T_);
    targets_.resize(size_t(B_) * T_);
    for (auto& x : inputs_) x = static_cast<int32_t>(rng.below(cfg.model.vocab_size));
    for (auto& x : targets_) x = static_cast<int32_t>(rng.below(cfg.model.vocab_size));
  }
  GPT2& model() { return model_; }

  void step(bool compete_all) {
    model_.zero_grad();
    if (compete_all) model_.set_competition(std::vector<bool>(model_.num_moe_layers(), true));
    model_.forward(inputs_.data(), targets_.data(), B_, T_);
    model_.backward(1.0f);
    const double norm = global_grad_norm(be_, model_.params(), model_.grad_buffer());
    opt_.step(model_.param_buffer(), model_.grad_buffer(), 1e-4f, norm > 1.0 ? float(1.0 / norm) : 1.0f);
    be_.refresh_param_copy(seed_, ++steps_done_);
    be_.synchronize();
  }

  BenchResult time(int steps, int warmup, bool compete_all = false) {
    for (int i = 0; i < warmup; ++i) step(compete_all);
    std::vector<double> ms;
    for (int i = 0; i < steps; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      step(compete_all);
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(ms.begin(), ms.end());
    BenchResult r;
    r.median_ms = ms[ms.size() / 2];
    r.min_ms = ms.front();
    r.max_ms = ms.back();
    r.tokens = double(B_) * T_;
    r.flops_per_step = model_.flops_per_token(T_) * r.tokens;
    r.active_params = double(model_.num_active_parameters());
    return r;
  }

 private:
  Backend& be_;
  int B_, T_;
  uint64_t seed_;
  uint64_t steps_done_ = 0;
  GPT2 model_;
  AdamW opt_;
  std::vector<int32_t> inputs_, targets_;
};

void print_result(const char* what, const BenchResult& r) {
  std::printf("%-34s median %8.1f ms (min %.1f, max %.1f) | %7.0f tokens/s | %6.1f GFLOP/s (model FLOPs)\n", what,
              r.median_ms, r.min_ms, r.max_ms, r.tokens / (r.median_ms / 1e3),
              r.flops_per_step / (r.median_ms / 1e3) / 1e9);
}

// The MoE overhead report (issue targets: SMoE step ≤ 1.3× the FLOP-equivalent dense step;
// CompeteSMoE's measured average overhead within 1.5× of rate × (E/K − 1) × FFN share).
int moe_overhead(Backend& be, const Config& cfg, int steps, int warmup) {
  if (cfg.moe.n_experts == 0) fail("--moe-overhead needs a MoE config (moe.n_experts > 0)");
  Config smoe = cfg, compete = cfg, dense = cfg;
  smoe.moe.router = "softmax_topk";
  compete.moe.router = "competesmoe";
  dense.moe.n_experts = 0;  // dense MLP of hidden 4C: FLOP-equivalent when K·H = 4C
  const MoeOptions o = moe_options(cfg);
  BenchResult d, s, cn, ca;
  size_t smoe_bytes = 0;
  { StepBench b(be, dense); d = b.time(steps, warmup); }
  {
    StepBench b(be, smoe);
    s = b.time(steps, warmup);
    smoe_bytes = b.model().moe_activation_bytes();
  }
  StepBench cb(be, compete);
  cn = cb.time(steps, warmup, false);
  ca = cb.time(steps, warmup, true);
  const int n_moe = cb.model().num_moe_layers();
  print_result("dense (FLOP-equivalent MLP)", d);
  print_result("MoE softmax_topk", s);
  print_result("MoE competesmoe, normal step", cn);
  print_result("MoE competesmoe, all layers compete", ca);
  // The share of a step's FLOPs in the routed experts (forward + backward), per token.
  const double C = cfg.model.d_model, H = o.expert_hidden, K = o.top_k, E = o.n_experts;
  const double expert_flops = n_moe * K * 6.0 * (2.0 * C * H);
  const double ffn_share = expert_flops / cb.model().flops_per_token(cfg.model.seq_len);
  const double rate = cfg.moe.competition_rate;
  const double expected = rate * (E / K - 1.0) * ffn_share;
  // On average a fraction `rate` of the (layer, step) pairs compete. Ratios use each
  // configuration's fastest step: on a shared machine noise only ever adds time.
  const double measured = rate * (ca.min_ms - cn.min_ms) / s.min_ms;
  // Memory (spec §7): what competition adds to the MoE layers' activations, against what
  // running every expert under autograd keeps: [tokens, E, C] outputs plus the [tokens, E, H]
  // hidden activations before and after the GELU.
  const double N = double(cfg.train.micro_batch) * cfg.model.seq_len, MiB = 1048576.0;
  const double ours = double(cb.model().moe_activation_bytes()) - double(smoe_bytes);
  const double dense_all = n_moe * N * E * (C + 2 * H) * 4;
  std::printf("\nMoE activation memory, %d layers, N=%.0f tokens: softmax_topk %.1f MiB, competesmoe %.1f MiB "
              "(+%.1f MiB for competition); storing every expert's output and hidden activations would add "
              "%.1f MiB ([tokens, E, C] alone: %.1f MiB)\n",
              n_moe, N, smoe_bytes / MiB, cb.model().moe_activation_bytes() / MiB, ours / MiB, dense_all / MiB,
              n_moe * N * E * C * 4 / MiB);
  std::printf("\nratios of the fastest steps (noise on a shared machine only adds time):\n");
  std::printf("MoE softmax_topk step / dense step: %.3f× (target ≤ 1.3×; K·H = %.0f vs dense 4C = %.0f)\n",
              s.min_ms / d.min_ms, K * H, 4 * C);
  std::printf("competition step (all %d MoE layers) / normal step: %.3f×\n", n_moe, ca.min_ms / cn.min_ms);
  std::printf("CompeteSMoE average overhead at rate %.3f: measured %.2f%%, expected rate×(E/K−1)×FFN share "
              "= %.3f×%.1f×%.3f = %.2f%% → ratio %.2f (target ≤ 1.5)\n",
              rate, 100 * measured, rate, E / K - 1, ffn_share, 100 * expected, measured / expected);
  std::printf("RESULT moe_vs_dense=%.4f competition_step_ratio=%.4f overhead_measured=%.5f overhead_expected=%.5f "
              "overhead_ratio=%.4f\n",
              s.min_ms / d.min_ms, ca.min_ms / cn.min_ms, measured, expected, measured / expected);
  return 0;
}

int main_bench(int argc, char** argv) {
  Cli cli("competelm-bench",
          "CONFIG.yaml [--set key=value]... [--device cpu|cuda|auto] [--steps N] [--warmup N] [--moe-overhead]",
          "Benchmarks training steps of the config's model (random tokens, B = train.micro_batch,\n"
          "T = model.seq_len) and prints ms/step, tokens/s, GFLOP/s and a per-op breakdown.\n"
          "The last line is machine-readable: RESULT key=value ...");
  cli.positional("CONFIG", "YAML config whose model / moe / train / run sections are used");
  cli.option("set", "KEY=VALUE", "override a config key", true);
  cli.option("device", "D", "backend: cpu, cuda or auto (default: the config's run.device)");
  cli.option("steps", "N", "timed steps (default 5)");
  cli.option("warmup", "N", "untimed warm-up steps (default 1)");
  cli.option("no-profile", "", "skip the per-op breakdown pass");
  cli.option("moe-overhead", "", "MoE config: SMoE vs dense and CompeteSMoE's competition overhead");
  if (!cli.parse(argc, argv)) return 0;
  std::vector<std::string> sets = cli.all("set");
  if (cli.has("device")) sets.push_back("run.device=" + cli.get("device"));
  const Config cfg = load_config(cli.get("CONFIG"), sets);
  const int steps = std::stoi(cli.get("steps", "5")), warmup = std::stoi(cli.get("warmup", "1"));
  if (steps < 1 || warmup < 0) fail("--steps must be ≥ 1 and --warmup ≥ 0");

  std::unique_ptr<Backend> backend = make_backend(cfg.run.device, cfg.run.threads);
  apply_precision(*backend, cfg.run.precision);
  std::printf("competelm-bench: %s backend (%s), model L=%d C=%d NH=%d T=%d V=%d, B=%d%s\n", backend->name().c_str(),
              precision_name(backend->precision()), cfg.model.n_layer, cfg.model.d_model, cfg.model.n_head,
              cfg.model.seq_len, cfg.model.vocab_size, cfg.train.micro_batch,
              cfg.moe.n_experts > 0 ? fmt::format(", MoE E={} K={} router {}", cfg.moe.n_experts, cfg.moe.top_k,
                                                  cfg.moe.router).c_str() : "");
  if (cli.has("moe-overhead")) return moe_overhead(*backend, cfg, steps, warmup);

  // The model talks to a profiling wrapper, which only costs two clock reads per op.
  ProfilingBackend prof(*backend);
  StepBench bench(prof, cfg);
  std::printf("parameters: %.2fM (%.2fM active per token)\n", bench.model().num_parameters() / 1e6,
              bench.model().num_active_parameters() / 1e6);
  const BenchResult r = bench.time(steps, warmup);
  print_result("step:", r);

  double gemm_gflops = 0.0, peak = 0.0;
  if (!cli.has("no-profile")) {
    prof.reset();
    for (int i = 0; i < steps; ++i) bench.step(false);
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
  if (backend->name() == "cuda") {
    // MFU: model FLOPs (6·N_active per token + attention, GPT2::flops_per_token) per second
    // over the GPU's peak for the backend's precision (fp32 CUDA cores, or bf16/tf32 tensor cores).
    const CudaPeak gpu = cuda_peak(0, backend->precision());
    const double model_flops = r.flops_per_step / (r.median_ms / 1e3);
    const double mfu = gpu.flops > 0 ? model_flops / gpu.flops : 0.0;
    const double peak_mib = cuda_peak_memory_bytes(*backend) / 1048576.0;
    std::printf("\nMFU %.1f%% against the %s\npeak device memory held by the backend: %.1f MiB\n", 100.0 * mfu,
                gpu.detail.c_str(), peak_mib);
    std::printf("RESULT device=cuda config=%s%s ms_per_step=%.3f tokens_per_s=%.1f model_gflops=%.2f "
                "gemm_gflops=%.2f mfu=%.4f precision=%s peak_tflops=%.2f peak_mem_mib=%.1f\n",
                cli.get("CONFIG").c_str(),
                cfg.moe.n_experts > 0 ? fmt::format(" router={}", cfg.moe.router).c_str() : "", r.median_ms,
                r.tokens / (r.median_ms / 1e3), model_flops / 1e9, gemm_gflops, mfu,
                precision_name(backend->precision()), gpu.flops / 1e12, peak_mib);
    return 0;
  }
  std::printf("RESULT ms_per_step=%.3f tokens_per_s=%.1f model_gflops=%.2f gemm_gflops=%.2f sgemm_peak_gflops=%.2f\n",
              r.median_ms, r.tokens / (r.median_ms / 1e3), r.flops_per_step / (r.median_ms / 1e3) / 1e9, gemm_gflops,
              peak);
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return run_tool("competelm-bench", main_bench, argc, argv); }
