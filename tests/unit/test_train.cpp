// The training loop end to end on a tiny model and synthetic shards: the loss falls, a
// resumed run continues bit-for-bit, NaNs never reach a checkpoint, bad batch sizes are
// refused.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>

#include "checkpoint/checkpoint.hpp"
#include "core/error.hpp"
#include "train/trainer.hpp"
#include "train_fixture.hpp"

using namespace competelm;
using namespace competelm::testing;
namespace fs = std::filesystem;

TEST_CASE("training on a learnable pattern lowers the loss", "[train]") {
  TempDir tmp("train-loss");
  write_pattern_shards(tmp.str(), 64, 40000, 4000);
  Config cfg = tiny_config(tmp.str(), {"train.steps=30", "checkpoint.every=0", "eval.every=10"});
  REQUIRE(train(cfg, quiet()) == 0);
  const auto losses = metric_values(cfg.run.dir + "/metrics.jsonl", "loss");
  REQUIRE(losses.size() == 30);
  const double first = std::stod(losses.front()), last = std::stod(losses.back());
  CAPTURE(first, last);
  CHECK(first > 3.5);          // ≈ ln(64) = 4.16 at initialisation
  CHECK(last < first - 1.0);   // the pattern is learnable
  CHECK(metric_values(cfg.run.dir + "/metrics.jsonl", "val_loss").size() == 3);
  CHECK(fs::exists(cfg.run.dir + "/config.yaml"));
  CHECK(fs::exists(cfg.run.dir + "/train.log"));
  REQUIRE(list_checkpoints(cfg.run.dir).size() == 1);  // checkpoint.at_end
}

TEST_CASE("a resumed run continues bit-for-bit", "[train][resume]") {
  TempDir tmp("train-resume");
  write_pattern_shards(tmp.str(), 64, 20000, 2000);
  // Uninterrupted: 8 steps, checkpoints at 4 and 8.
  Config full = tiny_config(tmp.str(), {"run.dir=" + tmp.str() + "/full"});
  REQUIRE(train(full, quiet()) == 0);
  const auto ckpts = list_checkpoints(full.run.dir);
  REQUIRE(ckpts.size() == 2);
  // Interrupted: a fresh run dir that holds only the step-4 checkpoint, resumed to the end.
  Config resumed = tiny_config(tmp.str(), {"run.dir=" + tmp.str() + "/resumed"});
  REQUIRE(train_resumed_from(ckpts[0], resumed) == 0);

  const auto a = metric_values(full.run.dir + "/metrics.jsonl", "loss");
  const auto b = metric_values(resumed.run.dir + "/metrics.jsonl", "loss");
  REQUIRE(a.size() == 8);
  REQUIRE(b.size() == 4);  // steps 5..8 only
  for (int i = 0; i < 4; ++i) CHECK(a[4 + i] == b[i]);  // printed with round-trip precision
  const auto bc = list_checkpoints(resumed.run.dir);
  REQUIRE(bc.size() == 2);
  CHECK(checkpoint_checksum(ckpts[1], "model.bin") == checkpoint_checksum(bc[1], "model.bin"));
  CHECK(checkpoint_checksum(ckpts[1], "optim.bin") == checkpoint_checksum(bc[1], "optim.bin"));
}

TEST_CASE("resume refuses a checkpoint of another model shape", "[train][resume]") {
  TempDir tmp("train-shape");
  write_pattern_shards(tmp.str(), 64, 20000, 2000);
  Config cfg = tiny_config(tmp.str(), {"train.steps=4"});
  REQUIRE(train(cfg, quiet()) == 0);
  Config other = tiny_config(tmp.str(), {"train.steps=8", "model.d_model=48"});
  TrainerOptions o = quiet();
  o.resume = true;
  REQUIRE_THROWS_WITH(train(other, o), Catch::Contains("model.d_model") && Catch::Contains("48"));
}

TEST_CASE("resume refuses a corrupted newest checkpoint unless fallback is on", "[train][resume]") {
  TempDir tmp("train-corrupt");
  write_pattern_shards(tmp.str(), 64, 20000, 2000);
  Config cfg = tiny_config(tmp.str());
  REQUIRE(train(cfg, quiet()) == 0);
  const auto ckpts = list_checkpoints(cfg.run.dir);
  REQUIRE(ckpts.size() == 2);
  {  // flip one byte in the newest checkpoint's parameters
    std::fstream f(ckpts[1] + "/model.bin", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-7, std::ios::end);
    char c = 0;
    f.read(&c, 1);
    c ^= 0x5a;
    f.seekp(-7, std::ios::end);
    f.write(&c, 1);
  }
  TrainerOptions o = quiet();
  o.resume = true;
  REQUIRE_THROWS_WITH(train(cfg, o), Catch::Contains("model.bin"));
  Config fb = tiny_config(tmp.str(), {"checkpoint.fallback=true", "train.steps=10"});
  REQUIRE(train(fb, o) == 0);  // resumed from step 4, ran to 10
  CHECK(fs::path(list_checkpoints(cfg.run.dir).back()).filename() == "step_00000010");
}

TEST_CASE("a non-finite loss stops the run before any bad checkpoint", "[train][nan]") {
  TempDir tmp("train-nan");
  write_pattern_shards(tmp.str(), 64, 20000, 2000);
  // A learning rate this large with no clipping overflows within a few steps.
  Config cfg = tiny_config(tmp.str(), {"optim.lr=1e6", "optim.grad_clip=0", "optim.warmup_steps=0",
                                       "train.steps=50", "checkpoint.every=1", "eval.every=0"});
  REQUIRE(train(cfg, quiet()) == 3);
  for (const auto& dir : list_checkpoints(cfg.run.dir)) {
    Checkpoint ck(dir);
    for (const auto& [name, t] : ck.read_tensors("model.bin"))
      for (float x : t.data) REQUIRE(std::isfinite(x));
  }
  Config skip = tiny_config(tmp.str(), {"run.dir=" + tmp.str() + "/skip", "optim.lr=1e6", "optim.grad_clip=0",
                                        "optim.warmup_steps=0", "train.steps=12", "train.on_nan=skip",
                                        "checkpoint.every=0", "eval.every=0"});
  CHECK(train(skip, quiet()) == 0);
}

TEST_CASE("batch_tokens must be a multiple of the micro-step tokens", "[train][config]") {
  TempDir tmp("train-batch");
  write_pattern_shards(tmp.str(), 64, 20000, 2000);
  // The config loader already refuses what no world size can divide...
  REQUIRE_THROWS_WITH(tiny_config(tmp.str(), {"train.batch_tokens=100"}), Catch::Contains("train.batch_tokens"));
  // ...and the trainer what this world size cannot (here 2 ranks × 4 × 16 = 128 per micro-step).
  Config cfg = tiny_config(tmp.str(), {"train.batch_tokens=192"});
  REQUIRE(accumulation_steps(cfg, 1) == 3);
  REQUIRE_THROWS_WITH(accumulation_steps(cfg, 2), Catch::Contains("train.batch_tokens") && Catch::Contains("128"));
}

TEST_CASE("gradient accumulation equals one big micro-batch", "[train]") {
  // Same global batch (8 sequences) as 1 micro-step of 8 and as 2 micro-steps of 4:
  // identical losses up to float summation order.
  TempDir tmp("train-accum");
  write_pattern_shards(tmp.str(), 64, 20000, 2000);
  Config one = tiny_config(tmp.str(), {"run.dir=" + tmp.str() + "/one", "train.micro_batch=8",
                                       "train.batch_tokens=128", "checkpoint.every=0", "eval.every=0"});
  Config two = tiny_config(tmp.str(), {"run.dir=" + tmp.str() + "/two", "train.micro_batch=4",
                                       "train.batch_tokens=128", "checkpoint.every=0", "eval.every=0"});
  REQUIRE(train(one, quiet()) == 0);
  REQUIRE(train(two, quiet()) == 0);
  const auto a = metric_values(one.run.dir + "/metrics.jsonl", "loss");
  const auto b = metric_values(two.run.dir + "/metrics.jsonl", "loss");
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) CHECK(std::stod(a[i]) == Approx(std::stod(b[i])).epsilon(1e-4));
}

TEST_CASE("a CompeteSMoE run competes on its schedule, logs per-layer metrics and resumes bit-for-bit",
          "[train][moe][resume]") {
  TempDir tmp("train-moe");
  write_pattern_shards(tmp.str(), 64, 20000, 2000);
  const std::vector<std::string> moe = {"moe.n_experts=4", "moe.top_k=2", "moe.router=competesmoe",
                                        "moe.competition_rate=0.5", "moe.competition_warmup=0.1",
                                        "moe.competition_max_layers=2"};
  auto with = [&](std::vector<std::string> o) {
    o.insert(o.end(), moe.begin(), moe.end());
    return o;
  };
  Config full = tiny_config(tmp.str(), with({"run.dir=" + tmp.str() + "/full"}));
  REQUIRE(train(full, quiet()) == 0);
  const std::string metrics = full.run.dir + "/metrics.jsonl";
  const auto competed = metric_values(metrics, "competed");
  REQUIRE(competed.size() == 8 * 2);  // 8 steps × 2 MoE layers
  int n_competed = 0;
  for (const auto& c : competed) n_competed += c == "true";
  CHECK(n_competed > 0);   // the schedule fired
  CHECK(n_competed < 16);  // but not everywhere (rate 0.5, warm-up)
  CHECK(metric_values(metrics, "overlap").size() == size_t(n_competed));
  CHECK(metric_values(metrics, "aux_loss").size() == 8);
  CHECK(metric_values(metrics, "distill").size() == 16);

  const auto ckpts = list_checkpoints(full.run.dir);
  REQUIRE(ckpts.size() == 2);
  CHECK(fs::exists(ckpts[0] + "/competition_schedule.txt"));
  Config resumed = tiny_config(tmp.str(), with({"run.dir=" + tmp.str() + "/resumed"}));
  REQUIRE(train_resumed_from(ckpts[0], resumed) == 0);
  const auto a = metric_values(metrics, "loss");
  const auto b = metric_values(resumed.run.dir + "/metrics.jsonl", "loss");
  REQUIRE(b.size() == 4);
  for (int i = 0; i < 4; ++i) CHECK(a[4 + i] == b[i]);
  CHECK(checkpoint_checksum(ckpts[1], "model.bin") == checkpoint_checksum(list_checkpoints(resumed.run.dir)[1], "model.bin"));
}

TEST_CASE("every router trains a MoE model and lowers the loss", "[train][moe]") {
  for (const char* router : {"softmax_topk", "sigmoid_topk", "competesmoe"}) {
    INFO(router);
    TempDir tmp(std::string("train-router-") + router);
    write_pattern_shards(tmp.str(), 64, 40000, 4000);
    Config cfg = tiny_config(tmp.str(), {"train.steps=30", "checkpoint.every=0", "eval.every=0",
                                         "moe.n_experts=4", "moe.top_k=2", std::string("moe.router=") + router,
                                         "moe.competition_rate=0.3"});
    REQUIRE(train(cfg, quiet()) == 0);
    const auto losses = metric_values(cfg.run.dir + "/metrics.jsonl", "lm_loss");
    REQUIRE(losses.size() == 30);
    CHECK(std::stod(losses.back()) < std::stod(losses.front()) - 1.0);
  }
}
