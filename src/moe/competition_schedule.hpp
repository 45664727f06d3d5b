#pragma once
// The competition schedule (spec §5): which (MoE layer, step) pairs compete, drawn once
// from the run's seed before training, identical on every rank, saved with the run state.
#include <cstdint>
#include <string>
#include <vector>

namespace competelm {

struct ScheduleOptions {
  int total_steps = 1;
  int n_moe_layers = 0;
  float rate = 0.07f;              // probability that a (layer, step) pair after warm-up competes
  float warmup = 0.05f;            // fraction of total steps without competition
  int max_layers_per_step = 2;     // cap; overflow moves to the nearest earlier step with room, else later
  uint64_t seed = 0;
};

class CompetitionSchedule {
 public:
  CompetitionSchedule() = default;
  static CompetitionSchedule build(const ScheduleOptions& opts);

  bool competes(int64_t step, int moe_layer) const;  // step 0-based
  int layers_at(int64_t step) const;                 // how many layers compete at this step
  int64_t total() const;                              // competing pairs in the whole table
  int total_steps() const { return steps_; }
  int n_layers() const { return layers_; }

  // Text form (saved in checkpoints); parse() throws competelm::Error naming `source`.
  std::string serialize() const;
  static CompetitionSchedule parse(const std::string& text, const std::string& source);
  bool operator==(const CompetitionSchedule& o) const = default;

 private:
  int steps_ = 0, layers_ = 0;
  std::vector<uint8_t> table_;  // (steps, layers) row-major, 1 = competes
};

}  // namespace competelm
