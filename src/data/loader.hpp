#pragma once
// The data loader: a glob of shards → (inputs, targets) micro-batches of B×T tokens.
//
// Samples are non-overlapping windows of T+1 tokens (stride T) inside a shard. Each epoch
// shuffles the shard order and the sample order inside each shard with the seed and the
// epoch number (or keeps file order when shuffle is off, as for validation).
//
// Multi-rank slicing: the global stream of samples is cut into global micro-batches of
// world×B samples; rank r takes samples [r·B, (r+1)·B) of each. The set of samples in an
// optimizer step therefore does not depend on how the global batch is split into ranks.
//
// A background thread prefetches the next micro-batch so reading is off the critical path.
// The position (epoch, shard, sample) is saved in checkpoints and restored exactly.
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "data/shard.hpp"

namespace competelm {

struct LoaderOptions {
  std::string pattern;        // shard glob
  std::string config_key;     // for error messages, e.g. "data.train"
  int B = 1;                  // sequences per rank per micro-batch
  int T = 64;                 // tokens per sequence
  int rank = 0;
  int world = 1;
  uint64_t seed = 0;
  bool shuffle = true;
  bool prefetch = true;
  int vocab_size = 0;         // > 0: a token id >= vocab_size is refused, naming the shard and position
};

// Exact position in the sample stream; everything needed to resume bit-for-bit.
struct LoaderState {
  uint64_t epoch = 0;
  uint64_t shard_pos = 0;    // index into this epoch's shard order
  uint64_t sample_pos = 0;   // index into that shard's sample order
};

class DataLoader {
 public:
  explicit DataLoader(const LoaderOptions& opts);  // validates every shard header
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // Fills this rank's slice of the next global micro-batch. inputs/targets: B×T each.
  void next_batch(int32_t* inputs, int32_t* targets);

  LoaderState state() const;        // position of the next batch next_batch() returns
  void restore(const LoaderState& s);
  void reset() { restore(LoaderState{}); }

  uint64_t total_tokens() const;    // Σ tokens over all shards
  uint64_t samples_per_epoch() const;
  const std::vector<ShardInfo>& shards() const { return shards_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::vector<ShardInfo> shards_;
};

}  // namespace competelm
