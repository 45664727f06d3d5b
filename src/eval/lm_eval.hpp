#pragma once
// Language-model evaluation of a saved model: mean next-token cross-entropy (the LM loss
// alone, no MoE aux losses), perplexity and bits per byte over token shards or raw text
// files, plus the MoE layers' routing statistics over the same tokens.
//
// Shards are read by the trainer's own DataLoader with the trainer's validation options
// (rank 0 of 1, no shuffle, B × T windows from the start of the first shard), and the loss is
// averaged per micro-batch exactly as the trainer's validation does, so evaluating a
// checkpoint on data.val with B = train.micro_batch, T = model.seq_len and eval.val_batches
// batches reproduces the val_loss the trainer logged at that step.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "eval/routing_eval.hpp"
#include "model/gpt2.hpp"
#include "tokenizer/gpt2_tokenizer.hpp"

namespace competelm {

// Where evaluation tokens come from.
struct EvalSource {
  enum class Kind { Shards, Text };
  Kind kind = Kind::Shards;
  std::string path;  // shard glob or text file
  // Micro-batches: > 0 = at most this many (shards wrap around like the trainer's validation
  // loader when they hold fewer), 0 = one pass over the data (shards: full micro-batches only).
  int batches = 0;
};

struct LmEvalOptions {
  std::vector<EvalSource> sources;
  int B = 4;            // sequences per forward (≤ the model's allocated B)
  int T = 64;           // tokens per sequence (≤ the model's allocated T)
  uint64_t seed = 0;    // the loader's seed (unused without shuffling; kept for identity)
  bool routing = true;  // collect MoE routing statistics (and the competition overlap)
};

// One source's figures. loss = total_nats / tokens.
struct SourceEval {
  EvalSource source;
  int64_t batches = 0;
  int64_t tokens = 0;        // predicted (target) tokens
  double total_nats = 0.0;   // Σ per-token cross-entropy
  double loss = 0.0;         // mean nats per token (for shards: the mean of per-batch means)
  double perplexity = 0.0;   // exp(loss)
  std::optional<uint64_t> bytes;  // UTF-8 bytes of the target tokens (no tokenizer: unknown)
  std::optional<double> bpb;      // total_nats / ln 2 / bytes
  bool wrapped = false;      // asked for more batches than the data holds: windows repeat
};

struct LmEvalResult {
  std::vector<SourceEval> sources;
  SourceEval total;          // every source together (token-weighted)
  std::vector<RoutingLayerEval> routing;  // one per MoE layer (empty for a dense model)
  double seconds = 0.0;      // wall time of the LM forwards (the overlap forwards excluded)
  double tokens_per_s = 0.0;
};

// The trainer's validation for `cfg`: data.val, B = train.micro_batch, T = model.seq_len,
// eval.val_batches micro-batches.
LmEvalOptions validation_options(const Config& cfg);

// Number of UTF-8 bytes each token id decodes to (end-of-text counts 0: it separates
// documents and is no text). Ids the tokenizer does not know stay unknown (−1).
std::vector<int64_t> token_byte_lengths(const Gpt2Tokenizer& tokenizer, int vocab_size);

// Evaluates `model` (allocated for at least B × T) on every source. `tokenizer` may be null
// for shards (bytes and bpb are then unknown); text sources need it. Throws Error naming the
// source on unreadable data or data too short for one window.
LmEvalResult evaluate_lm(GPT2& model, const LmEvalOptions& opts, const Gpt2Tokenizer* tokenizer);

}  // namespace competelm
