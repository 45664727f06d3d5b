#pragma once
// Routing statistics of a MoE model's layers aggregated over many evaluation forwards:
// tokens per expert, dead experts, mean router entropy and — for the competesmoe router —
// how often the router's top-K agrees with the competition's (a second forward with every
// layer competing; MoeLayerStats::overlap).
#include <cstdint>
#include <optional>
#include <vector>

#include "moe/moe_layer.hpp"

namespace competelm {

struct RoutingLayerEval {
  int block = 0;                              // the transformer block this MoE layer is in
  int top_k = 0;
  int64_t tokens = 0;                         // N: tokens routed through the layer
  std::vector<int64_t> tokens_per_expert;     // (E); sums to N · top_k
  int dead = 0;                               // experts that received no token at all
  double entropy = 0.0;                       // mean router entropy per token, nats
  double max_entropy = 0.0;                   // ln E, for scale
  std::optional<double> overlap;              // mean |router top-K ∩ competition top-K| / K
  double fraction(int e) const;               // tokens_per_expert[e] / (N · top_k)
};

// Accumulates per-forward MoeLayerStats into RoutingLayerEval (token-weighted means).
class RoutingAccumulator {
 public:
  RoutingAccumulator(const std::vector<int>& block_index, int n_experts, int top_k, bool has_competition);
  // After a normal (router) forward over `tokens` tokens.
  void add_routing(const std::vector<MoeLayerStats>& stats, int64_t tokens);
  // After a forward with every layer competing, over `tokens` tokens.
  void add_overlap(const std::vector<MoeLayerStats>& stats, int64_t tokens);
  std::vector<RoutingLayerEval> result() const;

 private:
  std::vector<RoutingLayerEval> layers_;
  std::vector<double> entropy_sum_, overlap_sum_;
  std::vector<int64_t> overlap_tokens_;
  bool has_competition_;
};

}  // namespace competelm
