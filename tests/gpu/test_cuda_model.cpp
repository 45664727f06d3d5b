// The whole model and the training loop on the CUDA backend against the CPU oracle:
//  (a) GPT-2 (dense) and MoE models (every router, CompeteSMoE with competition on) from the
//      same weights: loss, logits and EVERY parameter gradient;
//  (b) 10 training steps (competelm::train) with run.device = cuda vs cpu: per-step losses;
//  (c) determinism: two CUDA runs give bit-identical losses, and a resumed CUDA run continues
//      bit-for-bit (checkpoint checksums equal).
//
// Tolerances: the two backends add in different orders (warp reductions, cuBLASLt tiles,
// flash attention), so fp32 results differ by rounding, amplified through the layers.
//  - loss: relative 1e-5; logits: |Δ| ≤ 1e-4 + 1e-4·|x|.
//  - gradients, per tensor: |Δ| ≤ 1e-3·max|g_cpu| + 1e-3·|g_cpu| (a wrong kernel is off by
//    O(1) of the tensor's scale; rounding stays ~1e-5 of it).
//  - training losses: relative 5e-4 per step for the dense model, 5e-3 for CompeteSMoE (a
//    near-tie in routing may flip one token's experts after a few updates).
#include <catch2/catch.hpp>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "../unit/train_fixture.hpp"
#include "checkpoint/checkpoint.hpp"
#include "gpu_compare.hpp"
#include "model/gpt2.hpp"
#include "train/trainer.hpp"

using namespace competelm;
using namespace competelm::gpu_testing;
using competelm::testing::checkpoint_checksum;
using competelm::testing::quiet;
using competelm::testing::metric_values;
using competelm::testing::TempDir;
using competelm::testing::train_resumed_from;
using competelm::testing::tiny_config;
using competelm::testing::write_pattern_shards;
namespace fs = std::filesystem;

namespace {

ModelShape tiny_shape() {
  ModelShape s;
  s.n_layer = 2;
  s.d_model = 64;
  s.n_head = 4;
  s.seq_len = 24;     // T: no multiple of a 16/32/64 tile
  s.vocab_size = 200; // Vp = 256: 56 padding columns
  return s;
}

ModelMoe tiny_moe(MoeRouter router, BalanceLoss balance = BalanceLoss::Entropy) {
  ModelMoe m;
  m.layers = {true, true};
  MoeOptions& o = m.options;
  o.n_experts = 4;
  o.top_k = 2;
  o.expert_hidden = 48;
  o.router = router;
  o.balance = balance;
  // Coefficients large enough that a wrong auxiliary gradient shows next to the LM term.
  o.balance_coef = 0.1f;
  o.z_loss_coef = 0.01f;
  o.router_coef = 0.1f;
  o.diversity_coef = 0.05f;
  o.competition_balance_coef = 0.05f;
  return m;
}

std::vector<float> download_all(Backend& be, const float* p, size_t n) {
  std::vector<float> h(n);
  be.download(h.data(), p, n * sizeof(float));
  return h;
}

// One forward + backward of the same model on both backends; compares loss, logits, the MoE
// routing and every parameter gradient.
void compare_model(const ModelMoe& moe, bool compete) {
  Pair p;
  const ModelShape shape = tiny_shape();
  const int B = 3, T = shape.seq_len;
  GPT2 cpu(*p.cpu, shape, ModelInit{}, B, T, moe);
  GPT2 gpu(*p.cuda, shape, ModelInit{}, B, T, moe);
  cpu.init_weights(1234);
  gpu.init_weights(1234);
  REQUIRE(cpu.params().total_elements() == gpu.params().total_elements());
  REQUIRE(download_all(*p.cpu, cpu.param_buffer(), cpu.params().total_elements()) ==
          download_all(*p.cuda, gpu.param_buffer(), gpu.params().total_elements()));

  Rng rng(99);
  std::vector<int32_t> tokens(size_t(B) * T), targets(size_t(B) * T);
  for (auto& t : tokens) t = int32_t(rng.below(uint64_t(shape.vocab_size)));
  for (auto& t : targets) t = int32_t(rng.below(uint64_t(shape.vocab_size)));
  if (cpu.num_moe_layers() > 0) {
    cpu.set_competition(std::vector<bool>(cpu.num_moe_layers(), compete));
    gpu.set_competition(std::vector<bool>(gpu.num_moe_layers(), compete));
  }
  const float loss_cpu = cpu.forward(tokens.data(), targets.data(), B, T);
  const float loss_gpu = gpu.forward(tokens.data(), targets.data(), B, T);
  CHECK(gpu.last_lm_loss() == Approx(cpu.last_lm_loss()).epsilon(1e-5));
  CHECK(gpu.last_aux_loss() == Approx(cpu.last_aux_loss()).epsilon(1e-4).margin(1e-6));
  CHECK(loss_gpu == Approx(loss_cpu).epsilon(1e-5));
  // The routing must agree before gradients can (a flipped near-tie would show up here).
  for (size_t l = 0; l < cpu.moe_stats().size(); ++l) {
    CAPTURE(l);
    CHECK(gpu.moe_stats()[l].competed == cpu.moe_stats()[l].competed);
    REQUIRE(gpu.moe_stats()[l].tokens_per_expert == cpu.moe_stats()[l].tokens_per_expert);
  }
  require_close(cpu.logits_host(), gpu.logits_host(), 1e-4, 1e-4, "logits");
  require_close(cpu.losses_host(), gpu.losses_host(), 1e-4, 1e-5, "per-position losses");

  cpu.zero_grad();
  gpu.zero_grad();
  cpu.backward(1.0f);
  gpu.backward(1.0f);
  const std::vector<float> gc = download_all(*p.cpu, cpu.grad_buffer(), cpu.params().total_elements());
  const std::vector<float> gg = download_all(*p.cuda, gpu.grad_buffer(), gpu.params().total_elements());
  for (const TensorSpec& s : cpu.params().specs()) {
    const std::vector<float> a(gc.begin() + long(s.offset), gc.begin() + long(s.offset + s.numel));
    const std::vector<float> b(gg.begin() + long(s.offset), gg.begin() + long(s.offset + s.numel));
    float scale = 0.0f;
    for (float x : a) scale = std::max(scale, std::abs(x));
    require_close(a, b, 1e-3, 1e-3 * scale + 1e-9, "gradient of " + s.name);
  }
}


const std::vector<std::string> kCompeteMoe = {"moe.n_experts=4", "moe.top_k=2", "moe.router=competesmoe",
                                              "moe.competition_rate=0.5", "moe.competition_warmup=0.1",
                                              "moe.competition_max_layers=2"};

std::vector<std::string> with(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

}  // namespace

// ---- (a) the whole model ----------------------------------------------------------------------

TEST_CASE("cuda GPT-2 (dense): loss, logits and every gradient match the CPU", "[cuda][model]") {
  compare_model(ModelMoe{}, false);
}

TEST_CASE("cuda MoE GPT-2 with softmax_topk: every gradient matches the CPU", "[cuda][model][moe]") {
  compare_model(tiny_moe(MoeRouter::SoftmaxTopK), false);
  compare_model(tiny_moe(MoeRouter::SoftmaxTopK, BalanceLoss::Switch), false);
}

TEST_CASE("cuda MoE GPT-2 with sigmoid_topk: every gradient matches the CPU", "[cuda][model][moe]") {
  compare_model(tiny_moe(MoeRouter::SigmoidTopK), false);
}

TEST_CASE("cuda MoE GPT-2 with competesmoe: every gradient matches the CPU, competing or not",
          "[cuda][model][moe]") {
  compare_model(tiny_moe(MoeRouter::CompeteSMoE), false);
  compare_model(tiny_moe(MoeRouter::CompeteSMoE), true);
}

// ---- (b) training: cuda vs cpu --------------------------------------------------------------------

namespace {
// precision: the CUDA run's run.precision (fp32 tracks the CPU closely; bf16 within its rounding).
void compare_training(const std::vector<std::string>& extra, double rtol, const std::string& precision = "fp32") {
  TempDir tmp("cuda-train");
  write_pattern_shards(tmp.str(), 64, 20000, 2000);
  const std::vector<std::string> common =
      with({"train.steps=10", "checkpoint.every=0", "eval.every=5", "run.precision=" + precision}, extra);
  Config cpu = tiny_config(tmp.str(), with({"run.dir=" + tmp.str() + "/cpu", "run.device=cpu"}, common));
  cpu.run.precision = "fp32";
  Config gpu = tiny_config(tmp.str(), with({"run.dir=" + tmp.str() + "/cuda", "run.device=cuda"}, common));
  REQUIRE(train(cpu, quiet()) == 0);
  REQUIRE(train(gpu, quiet()) == 0);
  for (const char* key : {"loss", "val_loss", "grad_norm"}) {
    const auto a = metric_values(cpu.run.dir + "/metrics.jsonl", key);
    const auto b = metric_values(gpu.run.dir + "/metrics.jsonl", key);
    CAPTURE(key);
    REQUIRE(a.size() == b.size());
    REQUIRE(!a.empty());
    for (size_t i = 0; i < a.size(); ++i) {
      CAPTURE(i, a[i], b[i]);
      // grad norms are more sensitive than losses (they are not averaged over tokens)
      CHECK(std::stod(b[i]) == Approx(std::stod(a[i])).epsilon(std::string(key) == "grad_norm" ? 10 * rtol : rtol));
    }
  }
}
}  // namespace

TEST_CASE("cuda training: 10 steps of the dense model follow the CPU's losses", "[cuda][train]") {
  compare_training({}, 5e-4);
}

TEST_CASE("cuda training: 10 steps of a CompeteSMoE model follow the CPU's losses", "[cuda][train][moe]") {
  compare_training(kCompeteMoe, 5e-3);
}

TEST_CASE("cuda training in bf16: 10 steps of a CompeteSMoE model stay near the CPU's fp32 losses",
          "[cuda][train][moe][bf16]") {
  // bf16 operands (~0.3% relative each) move the losses by well under 1% over 10 steps; a
  // wrong GEMM layout or conversion would not train at all.
  compare_training(kCompeteMoe, 1e-2, "bf16");
}

// ---- (c) determinism and resume -----------------------------------------------------------------------

namespace {
void check_deterministic_and_resume(const std::vector<std::string>& extra) {
  TempDir tmp("cuda-resume");
  write_pattern_shards(tmp.str(), 64, 20000, 2000);
  auto config = [&](const std::string& name) {
    return tiny_config(tmp.str(), with({"run.dir=" + tmp.str() + "/" + name, "run.device=cuda"}, extra));
  };
  // Two uninterrupted runs: 8 steps, checkpoints at 4 and 8.
  Config full = config("full"), again = config("again");
  REQUIRE(train(full, quiet()) == 0);
  REQUIRE(train(again, quiet()) == 0);
  const auto a = metric_values(full.run.dir + "/metrics.jsonl", "loss");
  REQUIRE(a.size() == 8);
  CHECK(a == metric_values(again.run.dir + "/metrics.jsonl", "loss"));  // printed with round-trip precision
  CHECK(metric_values(full.run.dir + "/metrics.jsonl", "grad_norm") ==
        metric_values(again.run.dir + "/metrics.jsonl", "grad_norm"));
  const auto ckpts = list_checkpoints(full.run.dir);
  REQUIRE(ckpts.size() == 2);
  CHECK(checkpoint_checksum(ckpts[1], "model.bin") ==
        checkpoint_checksum(list_checkpoints(again.run.dir)[1], "model.bin"));

  // Interrupted: a fresh run dir holding only the step-4 checkpoint, resumed to the end.
  Config resumed = config("resumed");
  REQUIRE(train_resumed_from(ckpts[0], resumed) == 0);
  const auto b = metric_values(resumed.run.dir + "/metrics.jsonl", "loss");
  REQUIRE(b.size() == 4);  // steps 5..8
  for (int i = 0; i < 4; ++i) CHECK(a[4 + i] == b[i]);
  const auto bc = list_checkpoints(resumed.run.dir);
  REQUIRE(bc.size() == 2);
  CHECK(checkpoint_checksum(ckpts[1], "model.bin") == checkpoint_checksum(bc[1], "model.bin"));
  CHECK(checkpoint_checksum(ckpts[1], "optim.bin") == checkpoint_checksum(bc[1], "optim.bin"));
}
}  // namespace

TEST_CASE("cuda training is deterministic and a resumed run continues bit-for-bit (dense)",
          "[cuda][train][resume]") {
  check_deterministic_and_resume({"run.precision=fp32"});
}

TEST_CASE("cuda training is deterministic and a resumed run continues bit-for-bit (CompeteSMoE)",
          "[cuda][train][resume][moe]") {
  check_deterministic_and_resume(with({"run.precision=fp32"}, kCompeteMoe));
}

TEST_CASE("cuda training in bf16 is deterministic and a resumed run continues bit-for-bit (CompeteSMoE)",
          "[cuda][train][resume][moe][bf16]") {
  check_deterministic_and_resume(with({"run.precision=bf16"}, kCompeteMoe));
}
