#pragma once
// What a Mixture-of-Experts FFN layer computes (see ../shared/spec/competesmoe.md).
#include <string>

namespace competelm {

enum class MoeRouter { SoftmaxTopK, CompeteSMoE, SigmoidTopK };
enum class CompetitionScore { SoftplusMean, L2 };  // spec §2
enum class BalanceLoss { Entropy, Switch };        // spec §4

struct MoeOptions {
  int n_experts = 8;            // E
  int top_k = 2;                // K: every token reaches exactly K experts (dropless)
  int expert_hidden = 0;        // H of each expert (resolved: > 0)
  int shared_experts = 0;       // always-on experts (same H), added to the routed output
  MoeRouter router = MoeRouter::CompeteSMoE;
  CompetitionScore score = CompetitionScore::SoftplusMean;
  BalanceLoss balance = BalanceLoss::Entropy;
  float balance_coef = 0.01f;               // router balance, non-competition steps
  float z_loss_coef = 0.0f;                 // router z-loss mean(logsumexp(g)^2)
  float router_coef = 0.001f;               // distillation L_R weight (competition steps)
  float distill_theta = 0.2f;               // 'hybrid' extra MSE on the K winners
  bool distill_topk_target = false;         // 2024 form: target = softmax over winners only
  float diversity_coef = 0.005f;            // pairwise cosine of the winners' outputs
  float competition_balance_coef = 0.005f;  // entropy balance on p_C (not detached)
};

// Parses the config strings; throws competelm::Error naming the key on a bad value.
MoeRouter parse_router(const std::string& s);
CompetitionScore parse_score(const std::string& s);
BalanceLoss parse_balance(const std::string& s);
const char* router_name(MoeRouter r);

}  // namespace competelm
