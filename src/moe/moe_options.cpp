// Config strings ↔ the MoE enums (moe_options.hpp).
#include "moe/moe_options.hpp"

#include "core/error.hpp"

namespace competelm {

MoeRouter parse_router(const std::string& s) {
  if (s == "softmax_topk") return MoeRouter::SoftmaxTopK;
  if (s == "competesmoe") return MoeRouter::CompeteSMoE;
  if (s == "sigmoid_topk") return MoeRouter::SigmoidTopK;
  fail("moe.router: unknown value '{}'; allowed: softmax_topk, competesmoe, sigmoid_topk", s);
}

CompetitionScore parse_score(const std::string& s) {
  if (s == "softplus_mean") return CompetitionScore::SoftplusMean;
  if (s == "l2") return CompetitionScore::L2;
  fail("moe.competition_score: unknown value '{}'; allowed: softplus_mean, l2", s);
}

BalanceLoss parse_balance(const std::string& s) {
  if (s == "entropy") return BalanceLoss::Entropy;
  if (s == "switch") return BalanceLoss::Switch;
  fail("moe.balance: unknown value '{}'; allowed: entropy, switch", s);
}

const char* router_name(MoeRouter r) {
  switch (r) {
    case MoeRouter::SoftmaxTopK: return "softmax_topk";
    case MoeRouter::CompeteSMoE: return "competesmoe";
    case MoeRouter::SigmoidTopK: return "sigmoid_topk";
  }
  return "unknown";
}

}  // namespace competelm
