#pragma once
// Saving and restoring everything a run needs to continue bit-for-bit: parameters,
// optimizer moments and step, the data loader position, the loss statistics, the config.
#include <cstdint>
#include <optional>
#include <string>

#include "backend/backend.hpp"
#include "config/config.hpp"
#include "data/loader.hpp"
#include "dist/data_parallel.hpp"
#include "checkpoint/checkpoint.hpp"
#include "model/gpt2.hpp"
#include "moe/competition_schedule.hpp"
#include "train/adamw.hpp"

namespace competelm {

struct TrainState {
  int64_t step = 0;              // optimizer steps completed
  uint64_t tokens_seen = 0;      // global tokens consumed by training
  LoaderState train_loader;      // position of the next training batch
  double loss_ema = 0.0;         // running mean of the loss (spike detection)
  int64_t loss_ema_count = 0;
  double last_loss = 0.0;
  double last_val_loss = -1.0;   // < 0: none yet
};

// Writes run_dir/checkpoints/step_<step>/ atomically; returns its path. The competition
// schedule (CompeteSMoE runs) is saved with it so that a resumed run uses the same table.
// Tensors are stored by global identity (canonical name, global shape, element range), so any
// rank count and expert-parallel size can resume. Multi-rank (dist with W > 1, dp given):
// collective — every rank writes its ZeRO-1 owned slices of parameters and moments into its
// own files, rank 0 writes the rest and meta.json last (the commit). A failure on any rank is
// thrown on every rank (the failing rank's message) and leaves no new checkpoint.
std::string save_run_checkpoint(const std::string& run_dir, const Config& cfg, GPT2& model,
                                AdamW& opt, const TrainState& state, Backend& backend,
                                const CompetitionSchedule* schedule = nullptr, DataParallel* dp = nullptr,
                                const DistContext* dist = nullptr);

// Restores model, optimizer and state (this rank's experts and moment shards) from an opened
// and verified checkpoint (Checkpoint(dir), or open_verified_checkpoint's split verification),
// single-file or sharded by any rank count. Reads only what this rank holds: the file
// directories, the replicated tensors and this rank's experts from "model", the moments of its
// owned ranges from "optim" (Checkpoint::read_index / read_ranges: every element must be stored
// exactly once). The model shape in the checkpoint must match cfg's: a mismatch is refused
// naming the key that differs. ck.bytes_read() tells the I/O it cost.
// schedule (if not null) is replaced by the checkpoint's; a checkpoint without one is refused.
TrainState load_run_checkpoint(const Checkpoint& ck, const Config& cfg, GPT2& model, AdamW& opt,
                               Backend& backend, CompetitionSchedule* schedule = nullptr);

// The checkpoint to resume from: the newest complete one. If it fails verification the run
// is refused, unless `fallback` lets it use the next older one (with a warning).
// Returns nullopt when the run has no checkpoint. One process: verifies every file.
std::optional<Checkpoint> find_resume_checkpoint(const std::string& run_dir, bool fallback);
// The same, collective over `world`: rank 0 lists the candidates and broadcasts them; for each,
// newest first, every rank verifies its share of the files (Checkpoint::verification_share)
// and the verdict is agreed (a failure carries the lowest failing rank's message, on every
// rank). Each checkpoint's bytes are read once over all ranks, not once per rank.
std::optional<Checkpoint> find_resume_checkpoint(const std::string& run_dir, bool fallback, Comm& world);
// Collective: opens `dir` (an explicit --resume-from) with the same split verification;
// throws on every rank if any rank's share fails.
Checkpoint open_verified_checkpoint(const std::string& dir, Comm& world);

}  // namespace competelm
