#pragma once
// Per-MoE-layer metrics of one optimizer step (spec §6), accumulated over its micro-steps:
// tokens per expert (min / max / mean), experts that got no token, router entropy, the
// router–competition top-K overlap on competition steps, every loss term, whether the layer
// competed. Costs O(layers × experts) per micro-step: nothing next to a step.
#include <string>
#include <vector>

#include "core/json.hpp"
#include "dist/comm.hpp"
#include "moe/moe_layer.hpp"

namespace competelm {

class MoeStepMetrics {
 public:
  explicit MoeStepMetrics(int n_layers = 0) { reset(n_layers); }
  void reset(int n_layers);
  void add(const std::vector<MoeLayerStats>& micro_step);  // after each training forward
  // Multi-rank: sums every rank's counts and terms (collective), so the means cover all ranks.
  void reduce(Comm& comm);
  bool empty() const { return layers_.empty(); }

  double aux_loss() const;  // Σ over layers of the mean aux loss per micro-step
  // {"layer": block, "competed": .., "tok_min": .., "tok_max": .., "tok_mean": .., "dead": ..,
  //  "entropy": .., "overlap": .. (competition only), "balance": .., "z_loss": .., "distill": ..,
  //  "diversity": .., "competition_balance": .., "aux": ..} per MoE layer.
  std::string json_array(const std::vector<int>& block_index) const;
  // One console line: aux loss, dead experts, worst load imbalance, entropy, competing layers.
  std::string summary(const std::vector<int>& block_index) const;

 private:
  struct Layer {
    MoeLayerStats sum;  // terms summed over micro-steps; tokens summed
    int micro = 0, competed_micro = 0;
    double overlap_sum = 0.0;
  };
  std::vector<Layer> layers_;
};

}  // namespace competelm
