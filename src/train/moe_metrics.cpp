#include "train/moe_metrics.hpp"

#include <algorithm>
#include <iterator>

#include <fmt/format.h>

namespace competelm {

void MoeStepMetrics::reset(int n_layers) { layers_.assign(n_layers, Layer{}); }

void MoeStepMetrics::add(const std::vector<MoeLayerStats>& micro_step) {
  for (size_t m = 0; m < layers_.size() && m < micro_step.size(); ++m) {
    Layer& L = layers_[m];
    const MoeLayerStats& s = micro_step[m];
    if (L.sum.tokens_per_expert.size() < s.tokens_per_expert.size())
      L.sum.tokens_per_expert.resize(s.tokens_per_expert.size(), 0);
    for (size_t e = 0; e < s.tokens_per_expert.size(); ++e) L.sum.tokens_per_expert[e] += s.tokens_per_expert[e];
    L.sum.router_entropy += s.router_entropy;
    L.sum.balance += s.balance;
    L.sum.z_loss += s.z_loss;
    L.sum.distill += s.distill;
    L.sum.diversity += s.diversity;
    L.sum.competition_balance += s.competition_balance;
    L.sum.aux_loss += s.aux_loss;
    L.micro++;
    if (s.competed) {
      L.competed_micro++;
      L.overlap_sum += s.overlap;
    }
  }
}

void MoeStepMetrics::reduce(Comm& comm) {
  if (comm.size() == 1) return;
  for (Layer& L : layers_) {
    MoeLayerStats& s = L.sum;
    double terms[] = {s.router_entropy, s.balance, s.z_loss, s.distill, s.diversity, s.competition_balance,
                      s.aux_loss, L.overlap_sum};
    comm.allreduce_sum(terms, std::size(terms));
    s.router_entropy = terms[0], s.balance = terms[1], s.z_loss = terms[2], s.distill = terms[3];
    s.diversity = terms[4], s.competition_balance = terms[5], s.aux_loss = terms[6], L.overlap_sum = terms[7];
    int64_t counts[] = {L.micro, L.competed_micro};
    comm.allreduce_sum(counts, 2);
    L.micro = int(counts[0]), L.competed_micro = int(counts[1]);
    comm.allreduce_sum(s.tokens_per_expert.data(), s.tokens_per_expert.size());
  }
}

double MoeStepMetrics::aux_loss() const {
  double a = 0.0;
  for (const Layer& L : layers_) a += L.micro ? L.sum.aux_loss / L.micro : 0.0;
  return a;
}

std::string MoeStepMetrics::json_array(const std::vector<int>& block_index) const {
  std::string out = "[";
  for (size_t m = 0; m < layers_.size(); ++m) {
    const Layer& L = layers_[m];
    const double k = L.micro ? 1.0 / L.micro : 0.0;
    const auto& t = L.sum.tokens_per_expert;
    int64_t mn = t.empty() ? 0 : *std::min_element(t.begin(), t.end());
    int64_t mx = t.empty() ? 0 : *std::max_element(t.begin(), t.end());
    double mean = 0.0;
    int dead = 0;
    for (int64_t c : t) {
      mean += double(c);
      dead += c == 0;
    }
    mean = t.empty() ? 0.0 : mean / double(t.size());
    JsonObject o;
    o.add("layer", m < block_index.size() ? block_index[m] : int(m));
    o.add("competed", L.competed_micro > 0);
    o.add("tok_min", mn).add("tok_max", mx).add("tok_mean", mean).add("dead", dead);
    o.add("entropy", L.sum.router_entropy * k);
    if (L.competed_micro > 0) o.add("overlap", L.overlap_sum / L.competed_micro);
    o.add("balance", L.sum.balance * k).add("z_loss", L.sum.z_loss * k).add("distill", L.sum.distill * k);
    o.add("diversity", L.sum.diversity * k).add("competition_balance", L.sum.competition_balance * k);
    o.add("aux", L.sum.aux_loss * k);
    if (m) out += ',';
    out += o.str();
  }
  return out + "]";
}

std::string MoeStepMetrics::summary(const std::vector<int>& block_index) const {
  int dead = 0, experts = 0;
  double worst = 0.0, entropy = 0.0;
  std::string competed, overlap;
  for (size_t m = 0; m < layers_.size(); ++m) {
    const Layer& L = layers_[m];
    const auto& t = L.sum.tokens_per_expert;
    double mean = 0.0;
    for (int64_t c : t) {
      mean += double(c);
      dead += c == 0;
    }
    experts += int(t.size());
    mean = t.empty() ? 0.0 : mean / double(t.size());
    if (mean > 0) worst = std::max(worst, double(*std::max_element(t.begin(), t.end())) / mean);
    entropy += L.micro ? L.sum.router_entropy / L.micro : 0.0;
    if (L.competed_micro > 0) {
      const int block = m < block_index.size() ? block_index[m] : int(m);
      competed += fmt::format("{}{}", competed.empty() ? "" : ",", block);
      overlap += fmt::format("{}{:.2f}", overlap.empty() ? "" : ",", L.overlap_sum / L.competed_micro);
    }
  }
  std::string line = fmt::format("moe: aux {:.4f} | dead {}/{} | max load {:.2f}× mean | entropy {:.3f}",
                                 aux_loss(), dead, experts, worst,
                                 layers_.empty() ? 0.0 : entropy / double(layers_.size()));
  if (!competed.empty()) line += fmt::format(" | competed L{} (overlap {})", competed, overlap);
  return line;
}

}  // namespace competelm
