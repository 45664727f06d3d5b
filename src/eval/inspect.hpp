#pragma once
// What competelm-inspect shows about a checkpoint: its config, step, tokens seen, parameter
// counts, files and tensors with checksums, and the training metrics logged at that step.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.hpp"
#include "config/config.hpp"

namespace competelm {

struct TensorSummary {
  std::string name;
  std::vector<int64_t> shape;
  int64_t numel = 0;
  uint64_t checksum = 0;  // checksum64 of the tensor's fp32 data (little-endian bytes)
};

struct CheckpointInspection {
  std::string dir;
  int64_t step = 0;
  std::string time_utc;                   // meta.json; "" when absent
  std::optional<uint64_t> tokens_seen;    // meta.json
  Config config;
  std::string config_yaml;                // the resolved config as stored
  std::string router;                     // "" for a dense model
  int moe_layers = 0;
  size_t parameters = 0, active_parameters = 0;
  std::vector<CheckpointFile> files;      // from meta.json
  std::vector<TensorSummary> tensors;     // model.bin, by name
  std::string metrics_file;               // run_dir/metrics.jsonl, "" when absent
  std::string metrics_line;               // its record for `step`, "" when none
};

// Opens (and verifies) the checkpoint at `path` (a checkpoint or run directory).
CheckpointInspection inspect_checkpoint(const std::string& path);

std::string inspection_text(const CheckpointInspection& in, bool list_tensors);
std::string inspection_json(const CheckpointInspection& in, bool list_tensors);  // one line

}  // namespace competelm
