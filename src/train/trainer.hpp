#pragma once
// The training loop, written once against the Backend interface.
#include <memory>
#include <string>

#include "config/config.hpp"
#include "dist/comm.hpp"

namespace competelm {

struct TrainerOptions {
  bool resume = false;          // --resume: same as checkpoint.resume = auto
  std::string resume_from;      // --resume-from DIR: a specific checkpoint directory
  bool quiet = false;           // console shows warnings and errors only (tests)
};

// Runs the whole training job described by cfg. Returns the process exit code:
// 0 done (or stopped by SIGTERM/SIGINT after checkpointing), 3 stopped on a NaN/Inf loss or
// gradient norm (train.on_nan = stop), 4 done or stopped by a signal but its final checkpoint
// could not be written (checkpoint.on_error = continue). Errors in the setup (config, data,
// checkpoints) and a failed checkpoint write under checkpoint.on_error = stop throw
// competelm::Error.
// Micro-steps per optimizer step: train.batch_tokens / (world × micro_batch × seq_len).
// Throws Error (with the nearest valid values) when it does not divide.
int accumulation_steps(const Config& cfg, int world);

// Multi-rank (mpirun): every rank calls it with the world communicator (MpiSession::world())
// and its node-local rank; the expert-parallel split comes from cfg.dist. world null = one
// process.
int train(const Config& cfg, const TrainerOptions& opts, std::shared_ptr<Comm> world = nullptr,
          int local_rank = 0);

}  // namespace competelm
