// Config → MoE layer mask and options (moe_config.hpp).
#include "moe/moe_config.hpp"

#include <algorithm>

#include "config/moe_layers.hpp"
#include "core/error.hpp"

namespace competelm {

std::vector<bool> moe_layer_mask(const Config& cfg) {
  const int n_layer = cfg.model.n_layer;
  if (cfg.moe.n_experts == 0) return std::vector<bool>(std::max(n_layer, 0), false);
  MoeLayersResult layers = parse_moe_layers(cfg.moe.layers, n_layer);
  if (!layers.ok()) fail("moe.layers ('{}'): {}", cfg.moe.layers, layers.error);
  return std::move(layers.mask);
}

int count_moe_layers(const Config& cfg) {
  const std::vector<bool> mask = moe_layer_mask(cfg);
  return static_cast<int>(std::count(mask.begin(), mask.end(), true));
}

int resolve_expert_hidden(int expert_hidden, int d_model, int top_k) {
  if (expert_hidden > 0) return expert_hidden;
  CLM_ASSERT(d_model > 0 && top_k > 0);
  const int64_t per_expert = (int64_t{4} * d_model + top_k - 1) / top_k;  // ceil(4·C / K)
  return static_cast<int>((per_expert + 7) / 8 * 8);
}

MoeOptions moe_options(const Config& cfg) {
  const MoeSection& m = cfg.moe;
  MoeOptions o;
  o.n_experts = m.n_experts;
  o.top_k = m.top_k;
  o.expert_hidden = resolve_expert_hidden(m.expert_hidden, cfg.model.d_model, m.top_k);
  o.shared_experts = m.shared_experts;
  o.router = parse_router(m.router);
  o.score = parse_score(m.competition_score);
  o.balance = parse_balance(m.balance);
  o.balance_coef = m.balance_coef;
  o.z_loss_coef = m.z_loss_coef;
  o.router_coef = m.router_coef;
  o.distill_theta = m.distill_theta;
  if (m.distill_target == "full")
    o.distill_topk_target = false;
  else if (m.distill_target == "topk")
    o.distill_topk_target = true;
  else
    fail("moe.distill_target: unknown value '{}'; allowed: full, topk", m.distill_target);
  o.diversity_coef = m.diversity_coef;
  o.competition_balance_coef = m.competition_balance_coef;
  return o;
}

ScheduleOptions schedule_options(const Config& cfg) {
  ScheduleOptions s;
  s.total_steps = cfg.train.steps;
  s.n_moe_layers = count_moe_layers(cfg);
  s.rate = parse_router(cfg.moe.router) == MoeRouter::CompeteSMoE ? cfg.moe.competition_rate : 0.0f;
  s.warmup = cfg.moe.competition_warmup;
  s.max_layers_per_step = cfg.moe.competition_max_layers;
  s.seed = cfg.run.seed;
  return s;
}

}  // namespace competelm
