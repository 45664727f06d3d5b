#pragma once
// The training loop, written once against the Backend interface.
#include <memory>
#include <string>

#include "config/config.hpp"
#include "train/dist.hpp"

namespace competelm {

struct TrainerOptions {
  bool resume = false;          // --resume: same as checkpoint.resume = auto
  std::string resume_from;      // --resume-from DIR: a specific checkpoint directory
  bool quiet = false;           // console shows warnings and errors only (tests)
};

// Runs the whole training job described by cfg. Returns the process exit code:
// 0 done (or stopped by SIGTERM/SIGINT after checkpointing), 3 stopped on a NaN/Inf.
// Errors in the setup (config, data, checkpoints) throw competelm::Error.
int train(const Config& cfg, const TrainerOptions& opts, const DistInfo& dist = {});

}  // namespace competelm
