#pragma once
// Sharded-checkpoint fixtures shared by the checkpoint tests: a two-tensor model of arbitrary
// float bit patterns, slices of it by global identity, a checkpoint written by several
// writers, and resealing meta.json after a test has edited a file on purpose.
#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.hpp"
#include "core/fs_util.hpp"

namespace competelm::testing {

// Any bit pattern, NaNs included: a checkpoint must give them back exactly.
inline std::vector<float> random_bit_floats(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) {
    const auto bits = uint32_t(rng());
    std::memcpy(&x, &bits, sizeof(x));
  }
  return v;
}

// Two tensors: w (rows, cols) and b (7).
struct ShardModel {
  int64_t rows, cols;
  std::vector<float> w, b;
  ShardModel(int64_t r, int64_t c, uint64_t seed)
      : rows(r), cols(c), w(random_bit_floats(size_t(r * c), seed)), b(random_bit_floats(7, seed + 1)) {}
  // Elements [begin, end) of "w" or "b" by global identity.
  NamedTensor slice(const std::string& name, int64_t begin, int64_t end) const {
    const bool is_w = name == "w";
    return {name, is_w ? std::vector<int64_t>{rows, cols} : std::vector<int64_t>{7},
            (is_w ? w : b).data() + begin, begin, end};
  }
};

// One committed checkpoint written by parts.size() writers (writer 0 owns the directory, the
// others are helpers), writer r holding parts[r] as model.shard-r-of-N.bin, plus config.yaml
// and state.txt.
inline std::string save_sharded(const std::string& run_dir, int64_t step,
                                const std::vector<std::vector<NamedTensor>>& parts) {
  const int n = int(parts.size());
  CheckpointWriter owner(run_dir, step);
  owner.write_tensors(shard_file_name("model", 0, n), parts[0]);
  for (int r = 1; r < n; ++r) {
    CheckpointWriter helper(owner.temporary_dir(), step, true);
    helper.write_tensors(shard_file_name("model", r, n), parts[size_t(r)]);
    owner.add_files(helper.written());
  }
  owner.write_text("config.yaml", "model: gpt2\n");
  owner.write_text("state.txt", "step " + std::to_string(step) + "\n");
  return owner.commit("\"ranks\": " + std::to_string(n));
}

// Rewrites meta.json's entry for file_name (bytes, checksum) and its seal to match the disk:
// a file edited on purpose then passes the listing checks and fails only where it should.
inline void reseal(const std::string& dir, const std::string& file_name) {
  std::string meta = read_file(dir + "/meta.json");
  const std::string data = read_file(dir + "/" + file_name);
  const std::string key = "\"" + file_name + "\": {\"bytes\": ";
  const size_t at = meta.find(key);
  REQUIRE(at != std::string::npos);
  const size_t bytes_pos = at + key.size();
  meta.replace(bytes_pos, meta.find(',', bytes_pos) - bytes_pos, std::to_string(data.size()));
  const std::string ck = "\"checksum\": \"";
  meta.replace(meta.find(ck, bytes_pos) + ck.size(), 16, fmt::format("{:016x}", checksum64(data.data(), data.size())));
  const std::string seal = "\"meta_checksum\": \"";
  const size_t seal_pos = meta.rfind(seal) + seal.size();
  meta.replace(seal_pos, 16, std::string(16, '0'));
  meta.replace(seal_pos, 16, fmt::format("{:016x}", checksum64(meta.data(), meta.size())));
  std::ofstream(dir + "/meta.json", std::ios::binary | std::ios::trunc) << meta;
}

}  // namespace competelm::testing
