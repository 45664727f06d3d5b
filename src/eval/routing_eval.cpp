#include "eval/routing_eval.hpp"

#include <cmath>

#include "core/error.hpp"

namespace competelm {

double RoutingLayerEval::fraction(int e) const {
  const double routed = double(tokens) * top_k;
  return routed > 0 ? double(tokens_per_expert[e]) / routed : 0.0;
}

RoutingAccumulator::RoutingAccumulator(const std::vector<int>& block_index, int n_experts, int top_k,
                                       bool has_competition)
    : layers_(block_index.size()),
      entropy_sum_(block_index.size(), 0.0),
      overlap_sum_(block_index.size(), 0.0),
      overlap_tokens_(block_index.size(), 0),
      has_competition_(has_competition) {
  for (size_t m = 0; m < layers_.size(); ++m) {
    layers_[m].block = block_index[m];
    layers_[m].top_k = top_k;
    layers_[m].tokens_per_expert.assign(n_experts, 0);
    layers_[m].max_entropy = std::log(double(n_experts));
  }
}

void RoutingAccumulator::add_routing(const std::vector<MoeLayerStats>& stats, int64_t tokens) {
  CLM_ASSERT(stats.size() == layers_.size());
  for (size_t m = 0; m < layers_.size(); ++m) {
    RoutingLayerEval& L = layers_[m];
    CLM_ASSERT(stats[m].tokens_per_expert.size() == L.tokens_per_expert.size());
    for (size_t e = 0; e < L.tokens_per_expert.size(); ++e) L.tokens_per_expert[e] += stats[m].tokens_per_expert[e];
    L.tokens += tokens;
    entropy_sum_[m] += stats[m].router_entropy * double(tokens);  // a per-token mean → token-weighted
  }
}

void RoutingAccumulator::add_overlap(const std::vector<MoeLayerStats>& stats, int64_t tokens) {
  CLM_ASSERT(stats.size() == layers_.size());
  for (size_t m = 0; m < layers_.size(); ++m) {
    if (stats[m].overlap < 0) continue;  // the layer did not compete
    overlap_sum_[m] += stats[m].overlap * double(tokens);
    overlap_tokens_[m] += tokens;
  }
}

std::vector<RoutingLayerEval> RoutingAccumulator::result() const {
  std::vector<RoutingLayerEval> out = layers_;
  for (size_t m = 0; m < out.size(); ++m) {
    RoutingLayerEval& L = out[m];
    L.entropy = L.tokens > 0 ? entropy_sum_[m] / double(L.tokens) : 0.0;
    L.dead = 0;
    for (int64_t c : L.tokens_per_expert) L.dead += c == 0;
    if (has_competition_ && overlap_tokens_[m] > 0) L.overlap = overlap_sum_[m] / double(overlap_tokens_[m]);
  }
  return out;
}

}  // namespace competelm
