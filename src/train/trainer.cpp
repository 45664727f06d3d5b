#include "train/trainer.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>

#include "backend/backend.hpp"
#include "backend/cpu/gemm_bench.hpp"
#include "backend/cuda_info.hpp"
#include "backend/cuda_probe.hpp"
#include "checkpoint/checkpoint.hpp"
#include "checkpoint/fault_injection.hpp"
#include "core/error.hpp"
#include "core/json.hpp"
#include "data/loader.hpp"
#include "dist/data_parallel.hpp"
#include "dist/dist_context.hpp"
#include "model/from_config.hpp"
#include "model/gpt2.hpp"
#include "moe/competition_schedule.hpp"
#include "moe/moe_config.hpp"
#include "tokenizer/gpt2_tokenizer.hpp"
#include "train/adamw.hpp"
#include "train/lr_schedule.hpp"
#include "train/moe_metrics.hpp"
#include "train/run_logger.hpp"
#include "train/run_state.hpp"
#include "train/sampler.hpp"
#include "train/signals.hpp"

namespace competelm {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

// Test hook for the multi-rank failure tests: COMPETELM_TEST_FAIL=RANK:STEP makes that rank
// throw at the start of that (0-based) step, as a rank whose data or disk fails would.
std::optional<int64_t> test_failure_step(int rank) {
  const char* spec = std::getenv("COMPETELM_TEST_FAIL");
  if (!spec) return std::nullopt;
  int r = -1;
  long long step = -1;
  if (std::sscanf(spec, "%d:%lld", &r, &step) != 2) fail("COMPETELM_TEST_FAIL='{}': expected RANK:STEP", spec);
  if (r != rank) return std::nullopt;
  return step;
}

// TEST-ONLY: COMPETELM_TEST_NAN_GRAD=N writes a NaN into one gradient element (the first)
// after the backward pass of optimizer step N (1-based: the step logged as "step N" in
// train.log and metrics.jsonl), on every rank, as an overflow in the backward pass would.
// Unset (production) = never.
std::optional<int64_t> test_nan_grad_step() {
  const char* spec = std::getenv("COMPETELM_TEST_NAN_GRAD");
  if (!spec || !*spec) return std::nullopt;
  char* end = nullptr;
  const long long step = std::strtoll(spec, &end, 10);
  if (end == spec || *end != '\0' || step < 1) fail("COMPETELM_TEST_NAN_GRAD='{}': expected a step >= 1", spec);
  return step;
}

// TEST-ONLY: COMPETELM_TEST_CHECKPOINT_FULL_AFTER=BYTES makes the disk "full" for checkpoint
// writes after BYTES more bytes (checkpoint/fault_injection.hpp), for
// tests/integration/disk_full.sh where no small filesystem can be mounted. Unset
// (production) = nothing is armed.
void arm_test_checkpoint_full() {
  const char* spec = std::getenv("COMPETELM_TEST_CHECKPOINT_FULL_AFTER");
  if (!spec || !*spec) return;
  char* end = nullptr;
  const long bytes = std::strtol(spec, &end, 10);
  if (end == spec || *end != '\0' || bytes < 0)
    fail("COMPETELM_TEST_CHECKPOINT_FULL_AFTER='{}': expected a byte count >= 0", spec);
  set_checkpoint_write_fault_after(bytes);
}

// TEST-ONLY: COMPETELM_TEST_STAGED_COMM=1 makes a host-memory (CPU) backend use the GPU
// backend's host-staging communicators (StagingComm, dist/staging_comm.hpp) for the collectives
// on its buffers, so that the staged data- and expert-parallel path runs in the CPU mpirun
// tests (tests/mpi/staged_comm.sh). Unset (production) = the host communicators in place.
bool test_staged_comm() {
  const char* v = std::getenv("COMPETELM_TEST_STAGED_COMM");
  if (!v || !*v || std::string(v) == "0") return false;
  if (std::string(v) != "1") fail("COMPETELM_TEST_STAGED_COMM='{}': expected 1 or 0", v);
  return true;
}

// What is non-finite in a step, for the NaN guard's messages.
std::string describe_non_finite(double loss, double grad_norm) {
  if (!std::isfinite(loss) && !std::isfinite(grad_norm))
    return fmt::format("the loss ({}) and the gradient norm ({}) are non-finite", loss, grad_norm);
  if (!std::isfinite(grad_norm)) return fmt::format("the gradient norm is non-finite ({}; loss {:.4f})", grad_norm, loss);
  return fmt::format("the loss is non-finite ({}; gradient norm {:.4f})", loss, grad_norm);
}

std::string fmt_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const long s = std::lround(seconds);
  if (s >= 3600) return fmt::format("{}h{:02}m", s / 3600, (s % 3600) / 60);
  if (s >= 60) return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}

std::string fmt_rate(double x) {
  if (x >= 1e6) return fmt::format("{:.2f}M", x / 1e6);
  if (x >= 1e3) return fmt::format("{:.1f}k", x / 1e3);
  return fmt::format("{:.0f}", x);
}

// Keeps metrics.jsonl consistent after a resume: drops records of steps after `step`
// (they belong to the interrupted continuation that is about to be redone), and a last line
// cut short by a crash. Written aside and renamed, so a crash (kill -9) during the rewrite
// leaves the old file or the new one, never a truncated one.
void truncate_metrics_after(const std::string& path, int64_t step) {
  std::ifstream in(path);
  if (!in) return;
  std::string kept, line;
  while (std::getline(in, line)) {
    const auto pos = line.find("\"step\":");
    if (pos != std::string::npos && std::strtoll(line.c_str() + pos + 7, nullptr, 10) > step) continue;
    if (in.eof()) continue;  // no newline after it: a record the crash cut short
    kept += line + "\n";
  }
  in.close();
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << kept;
    if (!out.flush()) fail("cannot write {}", tmp);
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) fail("cannot rename {} to {}: {}", tmp, path, ec.message());
}

}  // namespace

// Gradient accumulation: how many micro-steps make one optimizer step of batch_tokens.
int accumulation_steps(const Config& cfg, int world) {
  const int64_t per_micro = int64_t(world) * cfg.train.micro_batch * cfg.model.seq_len;
  if (cfg.train.batch_tokens == 0) return 1;
  if (cfg.train.batch_tokens % per_micro != 0) {
    const int64_t lo = std::max<int64_t>(1, cfg.train.batch_tokens / per_micro) * per_micro;
    fail_hint(fmt::format("use a multiple of {}, e.g. {} or {}", per_micro, lo, lo + per_micro),
              "train.batch_tokens = {} is not a multiple of world ({}) × train.micro_batch ({}) × "
              "model.seq_len ({}) = {} tokens per micro-step",
              cfg.train.batch_tokens, world, cfg.train.micro_batch, cfg.model.seq_len, per_micro);
  }
  return static_cast<int>(cfg.train.batch_tokens / per_micro);
}

int train(const Config& cfg, const TrainerOptions& opts, std::shared_ptr<Comm> world, int local_rank) {
  // ---- ranks -----------------------------------------------------------------------------------
  std::unique_ptr<Backend> backend;  // made below; declared first so that it outlives ctx's device comms
  DistContext ctx = make_dist_context(world ? world : make_self_comm(), local_rank, cfg.dist.expert_parallel);
  const DistInfo& dist = ctx.info;
  Comm& comm = *ctx.world;

  // ---- run directory, logging ----------------------------------------------------------------
  if (dist.is_main()) fs::create_directories(cfg.run.dir);
  comm.barrier();  // the directory exists before any rank opens files in it
  auto log = make_run_logger(cfg.run.dir, cfg.log.level, opts.quiet, dist.rank);
  if (dist.is_main()) {
    std::ofstream(cfg.run.dir + "/config.yaml") << to_yaml(cfg);
  }
  const int B = cfg.train.micro_batch, T = cfg.model.seq_len;
  const int accum = accumulation_steps(cfg, dist.world);
  const int64_t tokens_per_step = int64_t(accum) * dist.world * B * T;

  // ---- backend, model, optimizer -----------------------------------------------------------------
  // Each rank on a GPU node takes GPU local_rank % devices.
  backend = make_backend(cfg.run.device, cfg.run.threads, dist.local_rank);
  apply_precision(*backend, cfg.run.precision);
  // The collectives on the backend's buffers (gradients, parameters, expert rows) get
  // communicators for its memory: the host ones on the CPU, host-staged MPI or NCCL on a GPU.
  const std::string gpu_comm = attach_device_comms(ctx, *backend, cfg.dist.gpu_comm, test_staged_comm());
  if (dist.world > 1 || cfg.dist.gpu_comm != "auto") log->info("dist.gpu_comm {} → {}", cfg.dist.gpu_comm, gpu_comm);
  if (cfg.run.device == "auto") {
    const CudaProbe cuda = probe_cuda();
    log->info("run.device auto → {} ({})", backend->name(),
              !cuda.built ? std::string("cuda: not built")
                          : cuda.devices > 0 ? fmt::format("{} GPU(s): {}", cuda.devices, cuda.detail)
                                             : std::string("no GPU visible"));
  }
  ModelMoe moe = model_moe(cfg);
  moe.ep = ExpertParallel{ctx.ep.get(), ctx.ep_rank, ctx.ep_size, ctx.dep.get()};
  GPT2 model(*backend, model_shape(cfg), model_init(cfg), B, T, moe);
  const int n_moe = model.num_moe_layers();
  // CompeteSMoE: the (layer, step) pairs that compete, drawn once from the seed (spec §5).
  const bool competesmoe = n_moe > 0 && moe.options.router == MoeRouter::CompeteSMoE;
  CompetitionSchedule competition;
  if (competesmoe) competition = CompetitionSchedule::build(schedule_options(cfg));
  model.init_weights(cfg.run.seed);
  backend->set_param_buffer(model.param_buffer(), model.params().total_elements());  // bf16 copy (CUDA)
  // Data parallel over every rank, optimizer state sharded (ZeRO-1): this rank updates owned().
  // Gradient buckets of dist.bucket_mb, each reduced as soon as the backward has finished it.
  const auto bucket_elements = size_t(double(cfg.dist.bucket_mb) * 1e6 / sizeof(float));
  DataParallel dp(ctx, model.expert_region_begin(), model.params().total_elements(), backend.get(),
                  model.grad_ready_order(), bucket_elements);
  AdamW opt(*backend, model.params(),
            AdamWOptions{cfg.optim.beta1, cfg.optim.beta2, cfg.optim.eps, cfg.optim.weight_decay}, dp.owned());
  LrSchedule lr_schedule{cfg.optim.schedule, cfg.optim.lr,         cfg.optim.min_lr_frac,
                      cfg.optim.warmup_steps, cfg.train.steps, cfg.optim.wsd_decay_frac};

  // ---- data -------------------------------------------------------------------------------------
  LoaderOptions lo;
  lo.pattern = cfg.data.train;
  lo.config_key = "data.train";
  lo.B = B;
  lo.T = T;
  lo.rank = dist.rank;
  lo.world = dist.world;
  lo.seed = cfg.run.seed;
  lo.shuffle = cfg.data.shuffle;
  lo.vocab_size = cfg.model.vocab_size;  // a token id ≥ vocab is refused naming its shard
  DataLoader train_loader(lo);
  std::optional<DataLoader> val_loader;
  if (cfg.eval.every > 0) {
    LoaderOptions vo = lo;
    vo.pattern = cfg.data.val;
    vo.config_key = "data.val";
    vo.shuffle = false;
    val_loader.emplace(vo);
  }
  // Sampling runs a forward, which under expert parallelism is collective: every rank samples
  // (same seed, same tokens), rank 0 prints.
  const bool samples_here = dist.is_main() || ctx.ep_size > 1;
  std::optional<Gpt2Tokenizer> tokenizer;
  if (cfg.eval.sample_every > 0 && samples_here) {
    const std::string dir = cfg.eval.tokenizer_dir;
    try {
      tokenizer.emplace(Gpt2Tokenizer::load(dir + "/encoder.json", dir + "/vocab.bpe"));
    } catch (const Error& e) {
      log->warn("sampling disabled: {} (eval.tokenizer_dir = {})", e.what(), dir);
    }
  }
  // Under expert parallelism sampling is collective: every rank samples or none does (a
  // tokenizer that failed to load on one rank would otherwise leave the others waiting).
  if (cfg.eval.sample_every > 0 && ctx.ep_size > 1 && comm.allreduce_max(tokenizer ? 0 : 1) != 0) {
    if (tokenizer) log->warn("sampling disabled: the tokenizer did not load on every rank");
    tokenizer.reset();
  }

  // ---- resume -------------------------------------------------------------------------------------
  TrainState state;
  std::optional<Checkpoint> resume_from;
  // Collective: rank 0 lists the checkpoints, every rank verifies a share of the chosen one's
  // files (each byte read once over all ranks) and then reads only what it holds.
  if (!opts.resume_from.empty())
    resume_from.emplace(open_verified_checkpoint(opts.resume_from, comm));
  else if (opts.resume || cfg.checkpoint.resume == "auto")
    resume_from = find_resume_checkpoint(cfg.run.dir, cfg.checkpoint.fallback, comm);
  if (resume_from) {
    state = load_run_checkpoint(*resume_from, cfg, model, opt, *backend, competesmoe ? &competition : nullptr);
    // The resume's I/O per rank (verification share + this rank's slices), for the log.
    std::vector<int64_t> read(size_t(dist.world), 0);
    read[size_t(dist.rank)] = int64_t(resume_from->bytes_read());
    comm.allreduce_sum(read.data(), read.size());
    std::string per_rank;
    for (int64_t b : read) per_rank += fmt::format("{}{}", per_rank.empty() ? "" : ", ", b);
    train_loader.restore(state.train_loader);
    if (dist.is_main()) truncate_metrics_after(cfg.run.dir + "/metrics.jsonl", state.step);
    log->info("resumed from {} at step {} (bytes read per rank: {})", resume_from->dir(), state.step,
              per_rank);
  } else if (opts.resume || cfg.checkpoint.resume == "auto") {
    // Records of an earlier attempt that died before its first checkpoint are redone.
    if (dist.is_main()) truncate_metrics_after(cfg.run.dir + "/metrics.jsonl", 0);
    log->info("no checkpoint in {}/checkpoints: starting from scratch", cfg.run.dir);
  }
  // The bf16 parameter copy of the weights step state.step starts from: as the uninterrupted run.
  backend->refresh_param_copy(cfg.run.seed, uint64_t(state.step));

  // ---- announce --------------------------------------------------------------------------------------
  const double flops_per_step = model.flops_per_token(T) * double(tokens_per_step);
  double peak_flops = 0.0;  // per process; MFU = achieved / peak
  if (backend->name() == "cpu") {
    // No datasheet peak for an arbitrary CPU: use what a large sgemm reaches here.
    peak_flops = cpu::measure_sgemm_gflops(1024, 1024, 1024, 3) * 1e9;
  } else if (backend->name() == "cuda") {
    const CudaPeak peak = cuda_peak(dist.local_rank, backend->precision());  // the GPU make_backend picked
    peak_flops = peak.flops;
    log->info("MFU against the {}", peak.detail);
  }
  log->info("competelm: {} backend ({}), {} rank(s), model {} layers × {} d_model × {} heads, {:.2f}M parameters",
            backend->name(), precision_name(backend->precision()), dist.world, cfg.model.n_layer,
            cfg.model.d_model, cfg.model.n_head, model.num_parameters() / 1e6);
  log->info("batch: {} tokens/step = {} rank(s) × {} micro-steps × {} seqs × {} tokens; {} steps; "
            "train data {} tokens in {} shard(s)",
            tokens_per_step, dist.world, accum, B, T, cfg.train.steps, train_loader.total_tokens(),
            train_loader.shards().size());
  if (n_moe > 0)
    log->info("moe: {} of {} blocks, {} experts (H={}) top-{} + {} shared, router {}, {:.2f}M active parameters "
              "per token{}",
              n_moe, cfg.model.n_layer, moe.options.n_experts, moe.options.expert_hidden, moe.options.top_k,
              moe.options.shared_experts, cfg.moe.router, model.num_active_parameters() / 1e6,
              competesmoe ? fmt::format("; competition on {} (layer, step) pairs", competition.total()) : "");
  log->info("run dir: {} (train.log, metrics.jsonl, checkpoints/)", cfg.run.dir);

  install_stop_signal_handlers();
  std::ofstream metrics;
  if (dist.is_main()) metrics.open(cfg.run.dir + "/metrics.jsonl", std::ios::app);

  std::vector<int32_t> inputs(size_t(B) * T), targets(size_t(B) * T);
  MoeStepMetrics moe_metrics(n_moe);
  const float inv_accum = 1.0f / float(accum);
  double ms_sum = 0.0;  // for the ETA: mean step time since the start of this process
  int ms_count = 0;
  int64_t last_saved = resume_from ? state.step : -1;
  int failed_checkpoints = 0;  // writes that failed under checkpoint.on_error = continue
  int64_t last_failed = -1;    // step of the last failed write: the same state is not retried
  int64_t skipped_steps = 0;   // updates skipped under train.on_nan = skip

  // Returns whether the checkpoint was written. A failed write (disk full, I/O error) leaves
  // the previous checkpoints untouched (CheckpointWriter's commit protocol); then
  // checkpoint.on_error = stop throws, continue warns and lets the next checkpoint retry.
  // Every rank gets the same outcome (save_run_checkpoint rethrows rank 0's error on all).
  auto save = [&](const char* why) -> bool {
    // The loader state is the global data position: every rank's is the same.
    state.train_loader = train_loader.state();
    std::string dir;
    try {
      dir = save_run_checkpoint(cfg.run.dir, cfg, model, opt, state, *backend,
                                competesmoe ? &competition : nullptr, &dp, &ctx);
    } catch (const Error& e) {
      const std::vector<std::string> kept = list_checkpoints(cfg.run.dir);
      const std::string previous = kept.empty() ? std::string("there is no earlier checkpoint")
                                                : fmt::format("the newest checkpoint is still {}", kept.back());
      if (cfg.checkpoint.on_error == "continue") {
        ++failed_checkpoints;
        last_failed = state.step;
        log->warn("checkpoint ({}) at step {} failed: {}; {}. Training continues (checkpoint.on_error = "
                  "continue); the next checkpoint retries",
                  why, state.step, e.what(), previous);
        return false;
      }
      fail_hint("free space on the run directory's filesystem (or move run.dir) and resume with --resume, "
                "or set checkpoint.on_error: continue to keep training when a checkpoint cannot be written",
                "checkpoint ({}) at step {} could not be written: {}; {}. Stopping (checkpoint.on_error = stop)",
                why, state.step, e.what(), previous);
    }
    if (dist.is_main()) prune_checkpoints(cfg.run.dir, cfg.checkpoint.keep);
    last_saved = state.step;
    log->info("checkpoint ({}): {}", why, dir);
    return true;
  };

  auto validate = [&]() -> double {
    val_loader->reset();
    double sum = 0.0;
    for (int i = 0; i < cfg.eval.val_batches; ++i) {
      val_loader->next_batch(inputs.data(), targets.data());
      model.forward(inputs.data(), targets.data(), B, T);
      sum += model.last_lm_loss();  // validation reports the language-model loss alone
    }
    return dp.sum_over_ranks(sum) / (double(cfg.eval.val_batches) * dist.world);
  };

  // Bytes each rank sends per step: data parallel (gradients, parameters, scalars) and expert
  // parallel (token rows). With one rank every communicator is the same local one.
  auto dp_bytes = [&] { return ctx.dp_bytes_sent(); };
  auto ep_bytes = [&] { return ctx.ep_bytes_sent(); };
  const std::optional<int64_t> fail_at = test_failure_step(dist.rank);
  const std::optional<int64_t> nan_grad_at = test_nan_grad_step();
  arm_test_checkpoint_full();

  const int64_t start_step = state.step;
  while (state.step < cfg.train.steps) {
    const auto t0 = Clock::now();
    const int64_t step = state.step;  // 0-based index of this optimizer step
    const uint64_t dp0 = dp_bytes(), ep0 = ep_bytes();
    if (fail_at && step == *fail_at)
      fail("injected failure at step {} on rank {} (COMPETELM_TEST_FAIL)", step, dist.rank);
    const float lr = lr_schedule.at(static_cast<int>(step));

    // ---- forward + backward over the micro-steps ---------------------------------------------
    model.zero_grad();
    std::vector<bool> compete(n_moe, false);
    for (int m = 0; competesmoe && m < n_moe; ++m) compete[m] = competition.competes(step, m);
    moe_metrics.reset(n_moe);
    double loss_sum = 0.0, lm_sum = 0.0;
    for (int micro = 0; micro < accum; ++micro) {
      train_loader.next_batch(inputs.data(), targets.data());
      if (n_moe > 0) model.set_competition(compete);
      loss_sum += model.forward(inputs.data(), targets.data(), B, T);
      lm_sum += model.last_lm_loss();
      if (n_moe > 0) moe_metrics.add(model.moe_stats());
      const bool last = micro + 1 == accum;
      if (last && nan_grad_at && step + 1 == *nan_grad_at) {  // wte's gradient only accumulates from here
        const float nan = std::numeric_limits<float>::quiet_NaN();
        backend->upload(model.grad_buffer(), &nan, sizeof nan);
      }
      // The last backward finishes the step's gradients: their reduction starts layer by layer.
      if (last) dp.begin_backward(model.grad_buffer());
      model.backward(inv_accum, last ? &dp : nullptr);  // grads of the mean loss over the whole step
    }
    // Gradients of the global mean loss on this rank's shards; norms and losses over all ranks
    // (so that every rank takes the same NaN / clipping decisions).
    dp.reduce_gradients(model.grad_buffer());
    if (step == start_step && dist.world > 1)
      log->info("data parallel: {} gradient buckets (dist.bucket_mb {}), {} of them reduced during the backward",
                dp.bucket_count(), cfg.dist.bucket_mb, dp.overlapped_buckets());
    double sums[] = {loss_sum, lm_sum, opt.owned_sum_squares(model.grad_buffer())};
    comm.allreduce_sum(sums, 3);
    const double loss = sums[0] / (double(accum) * dist.world);  // LM loss + MoE aux losses: what is optimised
    const double lm_loss = sums[1] / (double(accum) * dist.world);
    const double grad_norm = std::sqrt(sums[2]);
    if (n_moe > 0) moe_metrics.reduce(comm);

    // ---- NaN / Inf guard: never let a bad step reach the weights or a checkpoint ------------------
    // Loss and gradient norm are global (all-reduced), so every rank decides the same.
    const bool skipped = !std::isfinite(loss) || !std::isfinite(grad_norm);
    if (skipped) {
      if (cfg.train.on_nan != "skip") {
        log->error("step {}: {}: stopping (train.on_nan = stop) before the update; no checkpoint is written "
                   "after it. The last good checkpoint is {}",
                   step + 1, describe_non_finite(loss, grad_norm),
                   last_saved >= 0 ? fmt::format("step {}", last_saved) : std::string("none"));
        return 3;
      }
      ++skipped_steps;
      log->warn("step {}: {}: update skipped (train.on_nan = skip); parameters and optimizer state unchanged",
                step + 1, describe_non_finite(loss, grad_norm));
    }

    // ---- update -------------------------------------------------------------------------------------
    if (!skipped) {
      const float clip = cfg.optim.grad_clip;
      const float grad_scale = (clip > 0.0f && grad_norm > clip) ? float(clip / grad_norm) : 1.0f;
      opt.step(model.param_buffer(), model.grad_buffer(), lr, grad_scale);
      dp.gather(model.param_buffer());  // every rank gets the shards the others updated
    }
    // Also after a skipped step: the copy for step N is then always drawn with N, as on resume.
    backend->refresh_param_copy(cfg.run.seed, uint64_t(step + 1));
    backend->synchronize();
    const uint64_t step_dp_bytes = dp_bytes() - dp0, step_ep_bytes = ep_bytes() - ep0;
    const double step_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();

    state.step++;
    state.tokens_seen += tokens_per_step;
    if (!skipped) {  // a skipped step's loss (maybe NaN) stays out of the statistics
      state.last_loss = loss;
      // Loss-spike detection against a running mean (after a short burn-in).
      if (cfg.train.spike_factor > 0 && state.loss_ema_count >= 20 &&
          loss > cfg.train.spike_factor * state.loss_ema)
        log->warn("step {}: loss spike {:.4f} (running mean {:.4f}, train.spike_factor {})", state.step, loss,
                  state.loss_ema, cfg.train.spike_factor);
      state.loss_ema = state.loss_ema_count == 0 ? loss : 0.95 * state.loss_ema + 0.05 * loss;
      state.loss_ema_count++;
    }

    // ---- validation and samples ----------------------------------------------------------------------
    const bool last = state.step == cfg.train.steps;
    std::optional<double> val_loss;
    if (val_loader && (state.step % cfg.eval.every == 0 || last)) {
      val_loss = validate();
      state.last_val_loss = *val_loss;
    }

    // ---- log ---------------------------------------------------------------------------------------
    ms_sum += step_ms;
    ms_count++;
    const double tok_s = tokens_per_step / (step_ms / 1e3);
    const double mfu = peak_flops > 0 ? flops_per_step / dist.world / (step_ms / 1e3) / peak_flops : 0.0;
    if (state.step % cfg.log.every == 0 || last || val_loss || skipped) {
      const double eta = (ms_sum / ms_count) * double(cfg.train.steps - state.step) / 1e3;
      log->info("step {:>6}/{} | loss {:.4f}{} | lr {:.2e} | norm {:.3f} | {:.1f} ms | {} tok/s | MFU {:.1f}% | ETA {}",
                state.step, cfg.train.steps, loss,
                val_loss ? fmt::format(" | val {:.4f}", *val_loss) : std::string(), lr, grad_norm, step_ms,
                fmt_rate(tok_s), 100.0 * mfu, fmt_duration(eta));
      if (n_moe > 0) log->info("           {}", moe_metrics.summary(model.moe_block_index()));
      if (metrics.is_open()) {
        JsonObject rec;
        rec.add("step", state.step);
        rec.add("loss", loss);
        rec.add("lr", double(lr));
        rec.add("grad_norm", grad_norm);
        rec.add("step_ms", step_ms);
        rec.add("tokens_per_s", tok_s);
        rec.add("mfu", mfu);
        rec.add("tokens_seen", static_cast<int64_t>(state.tokens_seen));
        if (val_loss) rec.add("val_loss", *val_loss);
        if (skipped) rec.add("skipped", true);  // non-finite loss or gradient, no update (train.on_nan)
        if (dist.world > 1) {
          rec.add("comm_bytes_dp", static_cast<int64_t>(step_dp_bytes));
          rec.add("comm_bytes_ep", static_cast<int64_t>(step_ep_bytes));
        }
        if (n_moe > 0) {
          rec.add("lm_loss", lm_loss);
          rec.add("aux_loss", moe_metrics.aux_loss());
          rec.add_raw("moe", moe_metrics.json_array(model.moe_block_index()));
        }
        metrics << rec.str() << '\n';
        metrics.flush();
      }
    }
    if (tokenizer && (state.step % cfg.eval.sample_every == 0 || last)) {
      SampleOptions so;
      so.max_new_tokens = cfg.eval.sample_tokens;
      so.temperature = cfg.eval.temperature;
      so.seed = cfg.run.seed ^ uint64_t(state.step);
      std::vector<uint32_t> prompt = tokenizer->encode(cfg.eval.prompt);
      if (prompt.empty()) prompt.push_back(tokenizer->eot());
      const auto out = sample_tokens(model, T, prompt, so);
      if (dist.is_main()) log->info("sample @ step {}: {}{}", state.step, cfg.eval.prompt, tokenizer->decode(out));
    }

    // ---- checkpoints and signals ----------------------------------------------------------------------
    if (cfg.checkpoint.every > 0 && state.step % cfg.checkpoint.every == 0) save("periodic");
    // A signal may reach some ranks only (or at different steps): they agree before acting.
    if (comm.allreduce_max(stop_requested() ? 1 : 0)) {
      log->warn("stop signal received: checkpointing at step {} and exiting", state.step);
      const bool saved = last_saved == state.step || (last_failed != state.step && save("signal"));
      if (failed_checkpoints > 0)
        log->warn("stopped at step {}: {} checkpoint write(s) failed", state.step, failed_checkpoints);
      return saved ? 0 : 4;
    }
  }
  const bool saved = !cfg.checkpoint.at_end || last_saved == state.step ||
                     (last_failed != state.step && save("end of run"));
  const std::string summary =
      fmt::format("done: {} steps, final loss {:.4f}{}{}{}", state.step, state.last_loss,
                  state.last_val_loss >= 0 ? fmt::format(", val loss {:.4f}", state.last_val_loss) : std::string(),
                  skipped_steps > 0 ? fmt::format(", {} step(s) skipped on non-finite values", skipped_steps)
                                    : std::string(),
                  failed_checkpoints > 0
                      ? fmt::format(", {} checkpoint write(s) failed (checkpoint.on_error = continue){}",
                                    failed_checkpoints, saved ? "" : ", including the final one")
                      : std::string());
  // Failures and skips are worth seeing even with --quiet.
  if (failed_checkpoints > 0 || skipped_steps > 0) log->warn("{}", summary);
  else log->info("{}", summary);
  return saved ? 0 : 4;
}

}  // namespace competelm
