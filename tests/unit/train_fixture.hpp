#pragma once
// Helpers for tests that run the trainer: a temporary directory with synthetic token
// shards (a learnable pattern, so the loss falls) and a tiny config pointing at them.
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "config/config.hpp"
#include "train/trainer.hpp"
#include "core/rng.hpp"
#include "data/shard.hpp"

namespace competelm::testing {

struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& tag) {
    path = std::filesystem::temp_directory_path() /
           ("competelm-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter()++));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string str() const { return path.string(); }
  static int& counter() {
    static int n = 0;
    return n;
  }
};

// Writes train/val shards of a noisy counting pattern over `vocab` ids.
inline void write_pattern_shards(const std::string& dir, int vocab, size_t train_tokens, size_t val_tokens) {
  Rng rng(42);
  auto make = [&](size_t n) {
    std::vector<uint32_t> t(n);
    uint32_t x = 0;
    for (auto& v : t) {
      x = (rng.uniform() < 0.1f) ? uint32_t(rng.below(vocab)) : (x * 3 + 1) % uint32_t(vocab);
      v = x;
    }
    return t;
  };
  write_shard(dir + "/syn_train_000000.bin", make(train_tokens / 2));
  write_shard(dir + "/syn_train_000001.bin", make(train_tokens - train_tokens / 2));
  write_shard(dir + "/syn_val_000000.bin", make(val_tokens));
}

// A tiny dense GPT on the synthetic shards in `dir`, run dir `dir`/run.
inline Config tiny_config(const std::string& dir, const std::vector<std::string>& overrides = {}) {
  const std::string yaml = R"(
run: {dir: )" + dir + R"(/run, seed: 7, device: cpu, threads: 2}
model: {n_layer: 2, d_model: 32, n_head: 4, seq_len: 16, vocab_size: 64}
data: {train: ")" + dir + R"(/syn_train_*.bin", val: ")" + dir + R"(/syn_val_*.bin"}
optim: {lr: 0.003, warmup_steps: 2, schedule: cosine}
train: {steps: 8, micro_batch: 4, batch_tokens: 128}
checkpoint: {every: 4, keep: 5}
eval: {every: 4, val_batches: 2, sample_every: 0}
log: {every: 1, level: warn}
)";
  return parse_config(yaml, "tiny-test.yaml", overrides);
}

// Every "key": value of a metrics.jsonl (all occurrences, line by line), as raw strings
// (bit-exact compare).
inline std::vector<std::string> metric_values(const std::string& file, const std::string& key) {
  std::vector<std::string> out;
  std::ifstream in(file);
  std::string line;
  const std::string pat = "\"" + key + "\":";
  while (std::getline(in, line)) {
    for (auto p = line.find(pat); p != std::string::npos; p = line.find(pat, p)) {
      p += pat.size();
      while (p < line.size() && line[p] == ' ') ++p;
      const auto e = line.find_first_of(",}", p);
      out.push_back(line.substr(p, e - p));
    }
  }
  return out;
}

// Trainer options for tests: warnings and errors only on the console.
inline TrainerOptions quiet() {
  TrainerOptions o;
  o.quiet = true;
  return o;
}

// An interrupted run: cfg's run dir is given only `checkpoint` (copied into its checkpoints/)
// and trained with --resume to cfg.train.steps. Returns the trainer's exit code.
inline int train_resumed_from(const std::string& checkpoint, const Config& cfg) {
  namespace fs = std::filesystem;
  fs::create_directories(cfg.run.dir + "/checkpoints");
  fs::copy(checkpoint, cfg.run.dir + "/checkpoints/" + fs::path(checkpoint).filename().string(),
           fs::copy_options::recursive);
  TrainerOptions o = quiet();
  o.resume = true;
  return train(cfg, o);
}

// A file's checksum as listed in a checkpoint's meta.json: equal checksums ⇒ equal bytes
// (bit-identical state).
inline std::string checkpoint_checksum(const std::string& dir, const std::string& file) {
  std::ifstream in(dir + "/meta.json");
  std::string text((std::istreambuf_iterator<char>(in)), {});
  const auto pos = text.find("\"" + file + "\"");
  REQUIRE(pos != std::string::npos);
  const auto c = text.find("\"checksum\"", pos);
  REQUIRE(c != std::string::npos);
  return text.substr(c, 40);
}

}  // namespace competelm::testing
