#pragma once
// A trained model opened from a checkpoint directory, for the tools that evaluate, sample,
// inspect and export saved models. Reads only what inference needs (config + model.bin);
// the checkpoint is verified (sizes and checksums) when it is opened.
#include <cstdint>
#include <memory>
#include <string>

#include "backend/backend.hpp"
#include "checkpoint/checkpoint.hpp"
#include "config/config.hpp"
#include "model/gpt2.hpp"

namespace competelm {

struct SavedModel {
  std::string dir;                   // the checkpoint directory
  int64_t step = 0;                  // optimizer steps the checkpoint was written after
  Config config;                     // the run's resolved config (config.yaml in the checkpoint)
  std::unique_ptr<Backend> backend;  // owns the memory of `model`
  std::unique_ptr<GPT2> model;       // weights loaded, no optimizer state
};

// Resolves a path given by a user to a checkpoint directory: a checkpoint itself
// (…/checkpoints/step_00000100), or a run directory (→ its newest committed checkpoint).
// Throws Error naming the path when neither.
std::string resolve_checkpoint_dir(const std::string& path);

// Opens the checkpoint at `path` (see resolve_checkpoint_dir) and builds its model for batches
// of up to B × T tokens (T ≤ model.seq_len; T = 0 means model.seq_len) on `device`
// (cpu|cuda|auto). Every tensor is loaded by name; a missing or mis-shaped tensor is an error
// naming the file and tensor.
SavedModel load_saved_model(const std::string& path, int B, int T = 0, const std::string& device = "cpu",
                            int threads = 0);

// Copies every parameter of `model` from `tensors` (by name, shapes must match); `file` names
// the source in errors. Shared by checkpoint loading and the importers.
void load_model_tensors(GPT2& model, Backend& backend, const std::map<std::string, LoadedTensor>& tensors,
                        const std::string& file);

}  // namespace competelm
