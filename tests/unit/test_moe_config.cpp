// The moe config keys as the model sees them: the layer mask, the resolved options, the
// moe.layers syntax and the schedule options.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "config/config.hpp"
#include "config/moe_layers.hpp"
#include "core/error.hpp"
#include "moe/moe_config.hpp"
#include "moe/moe_options.hpp"

using namespace competelm;

namespace {

Config moe_config(const std::vector<std::string>& overrides) {
  return parse_config("model:\n  n_layer: 6\n  d_model: 96\n  n_head: 4\n", "moe.yaml", overrides);
}

std::vector<bool> mask_of(const std::string& spec, int n_layer) {
  const MoeLayersResult r = parse_moe_layers(spec, n_layer);
  INFO(spec << " → " << r.error);
  REQUIRE(r.ok());
  REQUIRE(r.mask.size() == static_cast<size_t>(n_layer));
  return r.mask;
}

std::string layers_error(const std::string& spec, int n_layer) {
  const MoeLayersResult r = parse_moe_layers(spec, n_layer);
  CHECK_FALSE(r.ok());
  return r.error;
}

}  // namespace

TEST_CASE("moe_config: the moe.layers syntax", "[moe_config]") {
  using V = std::vector<bool>;
  CHECK(mask_of("all", 3) == V{true, true, true});
  CHECK(mask_of("none", 3) == V{false, false, false});
  CHECK(mask_of("every:2", 5) == V{true, false, true, false, true});
  CHECK(mask_of("every:2:1", 5) == V{false, true, false, true, false});
  CHECK(mask_of("every:3:2", 6) == V{false, false, true, false, false, true});
  CHECK(mask_of("every:1", 2) == V{true, true});
  CHECK(mask_of("every:9", 3) == V{true, false, false});
  CHECK(mask_of("0,2,5", 6) == V{true, false, true, false, false, true});
  CHECK(mask_of(" 5, 0 ,2 ", 6) == V{true, false, true, false, false, true});
  CHECK(mask_of("3", 4) == V{false, false, false, true});

  CHECK_THAT(layers_error("0,2,6", 6), Catch::Contains("'0,2,6'") && Catch::Contains("block 6") &&
                                            Catch::Contains("model.n_layer is 6"));
  CHECK_THAT(layers_error("0,2,2", 6), Catch::Contains("block 2 is listed twice"));
  CHECK_THAT(layers_error("0,,2", 6), Catch::Contains("item 2 is empty"));
  CHECK_THAT(layers_error("0,2,", 6), Catch::Contains("item 3 is empty"));
  CHECK_THAT(layers_error("0,x", 6), Catch::Contains("'x' is not a block index"));
  CHECK_THAT(layers_error("-1", 6), Catch::Contains("'-1' is not a block index"));
  CHECK_THAT(layers_error("1.5", 6), Catch::Contains("'1.5'"));
  CHECK_THAT(layers_error("al", 6), Catch::Contains("'al' is not a block index"));
  CHECK_THAT(layers_error("every:0", 6), Catch::Contains("the step '0' must be an integer ≥ 1"));
  CHECK_THAT(layers_error("every:", 6), Catch::Contains("the step ''"));
  CHECK_THAT(layers_error("every:two", 6), Catch::Contains("'two'"));
  CHECK_THAT(layers_error("every:2:6", 6), Catch::Contains("offset 6 selects no block"));
  CHECK_THAT(layers_error("every:2:-1", 6), Catch::Contains("offset '-1'"));
  CHECK_THAT(layers_error("every:2:1:1", 6), Catch::Contains("offset '1:1'"));
  CHECK_THAT(layers_error("", 6), Catch::Contains("empty"));
}

TEST_CASE("moe_config: the layer mask follows n_experts and moe.layers", "[moe_config]") {
  // Dense: all false whatever moe.layers says.
  const Config dense = moe_config({"moe.layers=0,1"});
  CHECK(moe_layer_mask(dense) == std::vector<bool>(6, false));
  CHECK(count_moe_layers(dense) == 0);
  // MoE on every second block from 1.
  const Config c = moe_config({"moe.n_experts=4", "moe.layers=every:2:1"});
  CHECK(moe_layer_mask(c) == std::vector<bool>{false, true, false, true, false, true});
  CHECK(count_moe_layers(c) == 3);
  CHECK(count_moe_layers(moe_config({"moe.n_experts=4"})) == 6);  // default: all
  CHECK(count_moe_layers(moe_config({"moe.n_experts=4", "moe.layers=none"})) == 0);
  // A Config built by hand (not validated) with a bad layers string throws, naming the key.
  Config bad = c;
  bad.moe.layers = "0,9";
  try {
    moe_layer_mask(bad);
    FAIL("expected an Error");
  } catch (const Error& e) {
    CHECK_THAT(e.what(), Catch::Contains("moe.layers") && Catch::Contains("block 9"));
  }
}

TEST_CASE("moe_config: options map the strings and resolve expert_hidden", "[moe_config]") {
  const MoeOptions d = moe_options(moe_config({"moe.n_experts=8"}));
  CHECK(d.n_experts == 8);
  CHECK(d.top_k == 2);
  CHECK(d.expert_hidden == 192);  // 4 × 96 / 2
  CHECK(d.router == MoeRouter::CompeteSMoE);
  CHECK(d.score == CompetitionScore::SoftplusMean);
  CHECK(d.balance == BalanceLoss::Entropy);
  CHECK_FALSE(d.distill_topk_target);
  CHECK(d.balance_coef == 0.01f);
  CHECK(d.router_coef == 0.001f);
  CHECK(d.distill_theta == 0.2f);
  CHECK(d.diversity_coef == 0.005f);
  CHECK(d.competition_balance_coef == 0.005f);
  CHECK(d.z_loss_coef == 0.0f);
  CHECK(d.shared_experts == 0);

  const MoeOptions o = moe_options(moe_config(
      {"moe.n_experts=6", "moe.top_k=3", "moe.router=softmax_topk", "moe.competition_score=l2",
       "moe.balance=switch", "moe.distill_target=topk", "moe.balance_coef=0.02",
       "moe.z_loss_coef=0.001", "moe.router_coef=0.01", "moe.distill_theta=0",
       "moe.diversity_coef=0.1", "moe.competition_balance_coef=0", "moe.shared_experts=1"}));
  CHECK(o.n_experts == 6);
  CHECK(o.top_k == 3);
  CHECK(o.expert_hidden == 128);  // 4 × 96 / 3
  CHECK(o.router == MoeRouter::SoftmaxTopK);
  CHECK(o.score == CompetitionScore::L2);
  CHECK(o.balance == BalanceLoss::Switch);
  CHECK(o.distill_topk_target);
  CHECK(o.balance_coef == 0.02f);
  CHECK(o.z_loss_coef == 0.001f);
  CHECK(o.router_coef == 0.01f);
  CHECK(o.distill_theta == 0.0f);
  CHECK(o.diversity_coef == 0.1f);
  CHECK(o.competition_balance_coef == 0.0f);
  CHECK(o.shared_experts == 1);
  CHECK(moe_options(moe_config({"moe.n_experts=4", "moe.router=sigmoid_topk"})).router ==
        MoeRouter::SigmoidTopK);
  CHECK(moe_options(moe_config({"moe.n_experts=4", "moe.expert_hidden=100"})).expert_hidden == 100);

  // expert_hidden = ceil(4·C / K) rounded up to a multiple of 8.
  CHECK(resolve_expert_hidden(0, 768, 2) == 1536);
  CHECK(resolve_expert_hidden(0, 128, 2) == 256);
  CHECK(resolve_expert_hidden(0, 64, 3) == 88);   // 85.3 → 86 → 88
  CHECK(resolve_expert_hidden(0, 10, 1) == 40);
  CHECK(resolve_expert_hidden(0, 10, 3) == 16);   // 13.3 → 14 → 16
  CHECK(resolve_expert_hidden(0, 4, 8) == 8);     // never below 8
  CHECK(resolve_expert_hidden(77, 768, 2) == 77);
}

TEST_CASE("moe_config: router, score and balance names parse and print", "[moe_config]") {
  for (MoeRouter r : {MoeRouter::SoftmaxTopK, MoeRouter::CompeteSMoE, MoeRouter::SigmoidTopK})
    CHECK(parse_router(router_name(r)) == r);
  CHECK(std::string(router_name(MoeRouter::CompeteSMoE)) == "competesmoe");
  CHECK(parse_score("l2") == CompetitionScore::L2);
  CHECK(parse_balance("switch") == BalanceLoss::Switch);
  CHECK_THROWS_WITH(parse_router("topk"), Catch::Contains("moe.router") && Catch::Contains("'topk'"));
  CHECK_THROWS_WITH(parse_score("l1"), Catch::Contains("moe.competition_score"));
  CHECK_THROWS_WITH(parse_balance(""), Catch::Contains("moe.balance"));
}

TEST_CASE("moe_config: schedule options come from train, moe and run", "[moe_config]") {
  const Config c = moe_config({"moe.n_experts=4", "moe.layers=0,3", "train.steps=500",
                               "moe.competition_rate=0.2", "moe.competition_warmup=0.1",
                               "moe.competition_max_layers=1", "run.seed=77"});
  const ScheduleOptions s = schedule_options(c);
  CHECK(s.total_steps == 500);
  CHECK(s.n_moe_layers == 2);
  CHECK(s.rate == 0.2f);
  CHECK(s.warmup == 0.1f);
  CHECK(s.max_layers_per_step == 1);
  CHECK(s.seed == 77);
  const auto table = CompetitionSchedule::build(s);
  CHECK(table.n_layers() == 2);
  CHECK(table.total() > 30);  // 450 × 2 × 0.2 = 180 expected
  // The SMoE baseline never competes; a dense model has no MoE layer to compete.
  Config smoe = c;
  smoe.moe.router = "softmax_topk";
  CHECK(schedule_options(smoe).rate == 0.0f);
  CHECK(CompetitionSchedule::build(schedule_options(smoe)).total() == 0);
  Config dense = c;
  dense.moe.n_experts = 0;
  CHECK(schedule_options(dense).n_moe_layers == 0);
}

TEST_CASE("moe_config: configs/tiny-moe.yaml competes a few times in its 20 steps",
          "[moe_config]") {
  const Config c = load_config(std::string(COMPETELM_SOURCE_DIR) + "/configs/tiny-moe.yaml");
  const auto s = CompetitionSchedule::build(schedule_options(c));
  INFO(s.serialize());
  CHECK(s.total_steps() == 20);
  CHECK(s.n_layers() == 2);
  CHECK(s.layers_at(0) == 0);
  CHECK(s.layers_at(1) == 0);
  CHECK(s.total() >= 3);
  CHECK(s.total() <= 20);
}
