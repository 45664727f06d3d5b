// Reliability under faults, in process: a checkpoint write that hits a full disk
// (checkpoint.on_error: stop | continue) and a NaN in a gradient (train.on_nan: stop | skip).
// The disk is "filled" with the checkpoint writer's test-only fault hook; the NaN comes from
// the trainer's test-only COMPETELM_TEST_NAN_GRAD hook.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "checkpoint/checkpoint.hpp"
#include "checkpoint/fault_injection.hpp"
#include "core/error.hpp"
#include "train/trainer.hpp"
#include "train_fixture.hpp"

using namespace competelm;
using namespace competelm::testing;
namespace fs = std::filesystem;

namespace {

// Disarms the fault hook however the test exits.
struct FaultGuard {
  explicit FaultGuard(long bytes) { set_checkpoint_write_fault_after(bytes); }
  ~FaultGuard() { set_checkpoint_write_fault_after(-1); }
};

// Sets an environment variable for the scope of a test.
struct EnvGuard {
  std::string name;
  EnvGuard(std::string n, const std::string& value) : name(std::move(n)) { ::setenv(name.c_str(), value.c_str(), 1); }
  ~EnvGuard() { ::unsetenv(name.c_str()); }
};

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

size_t count_of(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (auto p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) ++n;
  return n;
}

// Bytes of one checkpoint on disk (every file, meta.json included).
uint64_t checkpoint_bytes(const std::string& dir) {
  uint64_t n = 0;
  for (const auto& e : fs::directory_iterator(dir)) n += e.file_size();
  return n;
}

// Temporary (uncommitted) directories left in a run's checkpoints/.
int temporary_dirs(const std::string& run_dir) {
  int n = 0;
  for (const auto& e : fs::directory_iterator(run_dir + "/checkpoints"))
    n += e.path().filename().string().find(".tmp-") != std::string::npos;
  return n;
}

// Opens (so verifies every file's checksum) a checkpoint and checks every parameter and
// optimizer moment is finite.
void require_finite_checkpoint(const std::string& dir) {
  INFO(dir);
  Checkpoint ck(dir);
  for (const char* file : {"model.bin", "optim.bin"})
    for (const auto& [name, t] : ck.read_tensors(file)) {
      INFO(file << " " << name);
      const auto bad = std::count_if(t.data.begin(), t.data.end(), [](float x) { return !std::isfinite(x); });
      REQUIRE(bad == 0);
    }
}

TrainerOptions resume_opts() {
  TrainerOptions o = quiet();
  o.resume = true;
  return o;
}

// What most fault tests compare: on the same synthetic shards and options, an uninterrupted
// reference run (tmp/ref, trained by the constructor) and the run under test (run_config()).
struct ReferenceRun {
  TempDir tmp;
  std::vector<std::string> common;
  Config ref;
  std::vector<std::string> ref_ckpts;  // the reference's checkpoints, oldest first
  ReferenceRun(const char* name, std::vector<std::string> options) : tmp(name), common(std::move(options)) {
    write_pattern_shards(tmp.str(), 64, 20000, 2000);
    ref = config({"run.dir=" + tmp.str() + "/ref"});
    REQUIRE(train(ref, quiet()) == 0);
    ref_ckpts = list_checkpoints(ref.run.dir);
  }
  Config run_config() const { return config({}); }

 private:
  Config config(std::vector<std::string> extra) const {
    extra.insert(extra.end(), common.begin(), common.end());
    return tiny_config(tmp.str(), extra);
  }
};

}  // namespace

TEST_CASE("a full disk under checkpoint.on_error=stop ends the run naming file, cause and fix; "
          "the previous checkpoint stays loadable",
          "[faults]") {
  ReferenceRun r("faults-stop", {"train.steps=8", "checkpoint.every=4", "eval.every=0", "run.threads=1"});
  const auto& ref_ckpts = r.ref_ckpts;
  REQUIRE(ref_ckpts.size() == 2);
  // Room for one checkpoint and a half: step 4 fits, step 8 runs out of space mid-file.
  const uint64_t one = checkpoint_bytes(ref_ckpts[0]);

  Config cfg = r.run_config();
  REQUIRE(cfg.checkpoint.on_error == "stop");  // the default
  {
    FaultGuard full(long(one + one / 2));
    try {
      train(cfg, quiet());
      FAIL("training went on although its checkpoint could not be written");
    } catch (const Error& e) {
      const std::string msg = e.what();
      CAPTURE(msg, e.hint());
      CHECK_THAT(msg, Catch::Contains("No space left on device"));
      CHECK_THAT(msg, Catch::Contains("step_00000008.tmp-") && Catch::Contains(".bin"));  // the file
      CHECK_THAT(msg, Catch::Contains("at step 8"));
      CHECK_THAT(msg, Catch::Contains("step_00000004"));  // where the run can resume
      CHECK_THAT(e.hint(), Catch::Contains("free space") && Catch::Contains("checkpoint.on_error: continue"));
    }
  }
  // The step-4 checkpoint is intact, verifies and is the only one; nothing half-written stays.
  const auto ckpts = list_checkpoints(cfg.run.dir);
  REQUIRE(ckpts.size() == 1);
  CHECK(fs::path(ckpts[0]).filename() == "step_00000004");
  require_finite_checkpoint(ckpts[0]);
  CHECK(checkpoint_checksum(ckpts[0], "model.bin") == checkpoint_checksum(ref_ckpts[0], "model.bin"));
  CHECK(temporary_dirs(cfg.run.dir) == 0);
  // With space again, --resume loads it and ends exactly where the uninterrupted run did.
  REQUIRE(train(cfg, resume_opts()) == 0);
  const auto done = list_checkpoints(cfg.run.dir);
  REQUIRE(done.size() == 2);
  CHECK(checkpoint_checksum(done[1], "model.bin") == checkpoint_checksum(ref_ckpts[1], "model.bin"));
  CHECK(checkpoint_checksum(done[1], "optim.bin") == checkpoint_checksum(ref_ckpts[1], "optim.bin"));
}

TEST_CASE("a full disk under checkpoint.on_error=continue warns, trains on identically and reports "
          "the failed writes",
          "[faults]") {
  ReferenceRun r("faults-continue", {"train.steps=8", "checkpoint.every=4", "eval.every=0", "run.threads=1",
                                  "checkpoint.on_error=continue"});
  const auto& ref_ckpts = r.ref_ckpts;
  REQUIRE(ref_ckpts.size() == 2);
  const uint64_t one = checkpoint_bytes(ref_ckpts[0]);

  // The disk stays full after step 4: the periodic write at step 8 fails, and the end of the
  // run does not write the same state again; the exit code says the final state is not saved.
  Config cfg = r.run_config();
  {
    FaultGuard full(long(one + one / 2));
    CHECK(train(cfg, quiet()) == 4);
  }
  const std::string log = read_text(cfg.run.dir + "/train.log");
  CHECK(count_of(log, "No space left on device") == 1);
  CHECK(count_of(log, "Training continues (checkpoint.on_error = continue)") == 1);
  CHECK_THAT(log, Catch::Contains("done: 8 steps") &&
                      Catch::Contains("1 checkpoint write(s) failed (checkpoint.on_error = continue), "
                                      "including the final one"));
  // Training itself was not disturbed: every logged loss equals the reference run's.
  CHECK(metric_values(cfg.run.dir + "/metrics.jsonl", "loss") == metric_values(r.ref.run.dir + "/metrics.jsonl", "loss"));
  const auto ckpts = list_checkpoints(cfg.run.dir);
  REQUIRE(ckpts.size() == 1);
  CHECK(fs::path(ckpts[0]).filename() == "step_00000004");
  require_finite_checkpoint(ckpts[0]);
  CHECK(temporary_dirs(cfg.run.dir) == 0);
}

TEST_CASE("under checkpoint.on_error=continue the next checkpoint retries once space is back", "[faults]") {
  ReferenceRun r("faults-retry", {"train.steps=16", "checkpoint.every=2", "checkpoint.keep=2",
                                  "eval.every=0", "run.threads=1", "checkpoint.on_error=continue"});
  const auto& ref_ckpts = r.ref_ckpts;
  REQUIRE(!ref_ckpts.empty());
  const uint64_t one = checkpoint_bytes(ref_ckpts.back());

  // The disk fills during the step-4 checkpoint; a watcher "frees space" (disarms the fault)
  // as soon as the failure is in train.log, and a later checkpoint succeeds.
  Config cfg = r.run_config();
  FaultGuard full(long(one + one / 2));
  std::atomic<bool> done{false};
  std::thread watcher([&] {
    while (!done.load()) {
      if (read_text(cfg.run.dir + "/train.log").find("No space left on device") != std::string::npos) {
        set_checkpoint_write_fault_after(-1);
        return;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
  int rc = -1;
  try {
    rc = train(cfg, quiet());
  } catch (...) {
    done = true;
    watcher.join();
    throw;
  }
  done = true;
  watcher.join();
  CHECK(rc == 0);
  const std::string log = read_text(cfg.run.dir + "/train.log");
  const size_t failures = count_of(log, "Training continues (checkpoint.on_error = continue)");
  CAPTURE(log);
  CHECK(failures >= 1);
  CHECK(failures < 6);  // the retries succeeded before the end of the run
  CHECK_THAT(log, Catch::Contains(fmt::format("{} checkpoint write(s) failed", failures)));
  const auto ckpts = list_checkpoints(cfg.run.dir);
  REQUIRE(ckpts.size() == 2);
  CHECK(fs::path(ckpts.back()).filename() == "step_00000016");
  require_finite_checkpoint(ckpts.back());
  CHECK(checkpoint_checksum(ckpts.back(), "model.bin") == checkpoint_checksum(ref_ckpts.back(), "model.bin"));
  CHECK(checkpoint_checksum(ckpts.back(), "optim.bin") == checkpoint_checksum(ref_ckpts.back(), "optim.bin"));
}

TEST_CASE("a NaN gradient under train.on_nan=stop ends the run before the update and before any "
          "later checkpoint",
          "[faults]") {
  TempDir tmp("faults-nan-stop");
  write_pattern_shards(tmp.str(), 64, 20000, 2000);
  // The loss of step 5 stays finite: only the gradient norm tells.
  Config cfg = tiny_config(tmp.str(), {"train.steps=8", "checkpoint.every=1", "checkpoint.keep=10", "eval.every=0", "run.threads=1"});
  {
    EnvGuard nan("COMPETELM_TEST_NAN_GRAD", "5");
    CHECK(train(cfg, quiet()) == 3);
  }
  const std::string log = read_text(cfg.run.dir + "/train.log");
  CHECK_THAT(log, Catch::Contains("step 5: the gradient norm is non-finite") &&
                      Catch::Contains("train.on_nan = stop") && Catch::Contains("last good checkpoint is step 4"));
  CHECK(metric_values(cfg.run.dir + "/metrics.jsonl", "loss").size() == 4);
  const auto ckpts = list_checkpoints(cfg.run.dir);
  REQUIRE(ckpts.size() == 4);  // steps 1..4; nothing after the NaN
  CHECK(fs::path(ckpts.back()).filename() == "step_00000004");
  for (const auto& dir : ckpts) require_finite_checkpoint(dir);
}

TEST_CASE("a NaN gradient under train.on_nan=skip skips that update only and records it", "[faults]") {
  ReferenceRun r("faults-nan-skip", {"train.steps=8", "checkpoint.every=1", "checkpoint.keep=10",
                                  "eval.every=0", "run.threads=1", "train.on_nan=skip"});
  Config cfg = r.run_config();
  {
    EnvGuard nan("COMPETELM_TEST_NAN_GRAD", "5");
    REQUIRE(train(cfg, quiet()) == 0);
  }
  const std::string metrics = cfg.run.dir + "/metrics.jsonl";
  const auto steps = metric_values(metrics, "step");
  REQUIRE(steps.size() == 8);  // the skipped step is logged too
  const auto skipped = metric_values(metrics, "skipped");
  REQUIRE(skipped.size() == 1);
  {  // it is step 5's record
    std::ifstream in(metrics);
    std::string line;
    while (std::getline(in, line))
      if (line.find("\"skipped\":true") != std::string::npos) CHECK(line.rfind("{\"step\":5,", 0) == 0);
  }
  CHECK(count_of(read_text(cfg.run.dir + "/train.log"), "update skipped (train.on_nan = skip)") == 1);
  CHECK_THAT(read_text(cfg.run.dir + "/train.log"), Catch::Contains("1 step(s) skipped"));
  // Steps 1-4 are the reference run's; step 5's update did not happen: parameters, moments and
  // the AdamW step count at step 5 equal those at step 4.
  const auto a = metric_values(r.ref.run.dir + "/metrics.jsonl", "loss");
  const auto b = metric_values(metrics, "loss");
  for (int i = 0; i < 5; ++i) CHECK(a[i] == b[i]);  // step 5's forward ran on the same weights
  const auto ckpts = list_checkpoints(cfg.run.dir);
  REQUIRE(ckpts.size() == 8);
  for (const auto& dir : ckpts) require_finite_checkpoint(dir);
  CHECK(checkpoint_checksum(ckpts[3], "model.bin") == checkpoint_checksum(ckpts[4], "model.bin"));
  CHECK(checkpoint_checksum(ckpts[3], "optim.bin") == checkpoint_checksum(ckpts[4], "optim.bin"));
  CHECK_THAT(Checkpoint(ckpts[3]).read_text("state.txt"), Catch::Contains("adam_t 4\n"));
  CHECK_THAT(Checkpoint(ckpts[4]).read_text("state.txt"), Catch::Contains("adam_t 4\n"));
  CHECK_THAT(Checkpoint(ckpts[7]).read_text("state.txt"), Catch::Contains("adam_t 7\n"));
  // Training went on from there: the later updates changed the weights, and the run differs
  // from the reference from step 6 on.
  CHECK(checkpoint_checksum(ckpts[4], "model.bin") != checkpoint_checksum(ckpts[5], "model.bin"));
  CHECK(a[5] != b[5]);
}
