#include "eval/lm_eval.hpp"

#include <chrono>
#include <cmath>
#include <fstream>
#include <functional>
#include <numbers>
#include <sstream>

#include "core/error.hpp"
#include "data/loader.hpp"

namespace competelm {
namespace {

using Clock = std::chrono::steady_clock;

// One forward's worth of tokens: B rows of T inputs and targets.
struct Batch {
  int B = 0, T = 0;
  std::vector<int32_t> inputs, targets;  // (B, T)
};

// Hands out batches until it returns false.
using BatchSource = std::function<bool(Batch&)>;

BatchSource shard_batches(const EvalSource& src, const LmEvalOptions& opts, SourceEval& out) {
  // The trainer's validation loader: same options, so the same windows in the same order.
  LoaderOptions lo;
  lo.pattern = src.path;
  lo.config_key = "--shards";
  lo.B = opts.B;
  lo.T = opts.T;
  lo.rank = 0;
  lo.world = 1;
  lo.seed = opts.seed;
  lo.shuffle = false;
  auto loader = std::make_shared<DataLoader>(lo);
  const uint64_t full_batches = loader->samples_per_epoch() / uint64_t(opts.B);
  uint64_t n = src.batches > 0 ? uint64_t(src.batches) : full_batches;
  if (n == 0)
    fail("{}: {} tokens hold fewer than one batch of {} windows of {}+1 tokens", src.path,
         loader->total_tokens(), opts.B, opts.T);
  out.wrapped = n > full_batches;
  auto left = std::make_shared<uint64_t>(n);
  return [loader, left, B = opts.B, T = opts.T](Batch& b) {
    if (*left == 0) return false;
    --*left;
    b.B = B;
    b.T = T;
    b.inputs.resize(size_t(B) * T);
    b.targets.resize(size_t(B) * T);
    loader->next_batch(b.inputs.data(), b.targets.data());
    return true;
  };
}

// A text file, tokenized as one document (end-of-text first, as the shards' documents), cut
// into the loader's windows (T+1 tokens, stride T); the last, shorter window is evaluated too.
BatchSource text_batches(const EvalSource& src, const LmEvalOptions& opts, const Gpt2Tokenizer* tokenizer,
                         int vocab_size) {
  if (!tokenizer) fail("{}: evaluating text needs the GPT-2 tokenizer (--tokenizer-dir)", src.path);
  std::ifstream in(src.path, std::ios::binary);
  if (!in) fail("{}: cannot open the text file", src.path);
  std::stringstream ss;
  ss << in.rdbuf();
  auto tokens = std::make_shared<std::vector<uint32_t>>(1, tokenizer->eot());
  const std::vector<uint32_t> body = tokenizer->encode(ss.str());
  tokens->insert(tokens->end(), body.begin(), body.end());
  if (tokens->size() < 2) fail("{}: the file is empty (no token to predict)", src.path);
  for (uint32_t id : *tokens)
    if (id >= uint32_t(vocab_size))
      fail("{}: token id {} is outside the model's vocabulary ({})", src.path, id, vocab_size);
  auto pos = std::make_shared<size_t>(0);  // first token of the next window
  auto left = std::make_shared<int64_t>(src.batches > 0 ? src.batches : INT64_MAX);
  return [tokens, pos, left, B = opts.B, T = opts.T](Batch& b) {
    if (*left == 0 || *pos + 1 >= tokens->size()) return false;
    --*left;
    // Rows of T (the last one shorter: then the batch is that one row at its own length).
    const size_t remaining = tokens->size() - 1 - *pos;  // predictable tokens left
    if (remaining < size_t(T)) {
      b.B = 1;
      b.T = int(remaining);
    } else {
      b.B = int(std::min<size_t>(B, remaining / T));
      b.T = T;
    }
    b.inputs.resize(size_t(b.B) * b.T);
    b.targets.resize(size_t(b.B) * b.T);
    for (int r = 0; r < b.B; ++r)
      for (int t = 0; t < b.T; ++t) {
        const size_t i = *pos + size_t(r) * b.T + t;
        b.inputs[size_t(r) * b.T + t] = int32_t((*tokens)[i]);       // (B, T)
        b.targets[size_t(r) * b.T + t] = int32_t((*tokens)[i + 1]);  // (B, T)
      }
    *pos += size_t(b.B) * b.T;
    return true;
  };
}

void finish(SourceEval& s, bool mean_of_batches, double batch_mean_sum) {
  // Shards: every batch has B×T tokens, and the trainer reports the mean of the batch means;
  // doing the same keeps the figure bit-compatible with its val_loss.
  s.loss = mean_of_batches ? batch_mean_sum / double(s.batches) : s.total_nats / double(s.tokens);
  s.perplexity = std::exp(s.loss);
  if (s.bytes && *s.bytes > 0) s.bpb = s.total_nats / std::numbers::ln2 / double(*s.bytes);
}

}  // namespace

LmEvalOptions validation_options(const Config& cfg) {
  LmEvalOptions o;
  o.sources.push_back({EvalSource::Kind::Shards, cfg.data.val, cfg.eval.val_batches});
  o.B = cfg.train.micro_batch;
  o.T = cfg.model.seq_len;
  o.seed = cfg.run.seed;
  return o;
}

std::vector<int64_t> token_byte_lengths(const Gpt2Tokenizer& tokenizer, int vocab_size) {
  std::vector<int64_t> len(vocab_size, -1);
  for (int id = 0; id < vocab_size && size_t(id) < tokenizer.vocab_size(); ++id) {
    if (uint32_t(id) == tokenizer.eot()) {
      len[id] = 0;
      continue;
    }
    try {
      len[id] = int64_t(tokenizer.decode_token(uint32_t(id)).size());
    } catch (const Error&) {
      len[id] = -1;  // a hole in the vocabulary
    }
  }
  return len;
}

LmEvalResult evaluate_lm(GPT2& model, const LmEvalOptions& opts, const Gpt2Tokenizer* tokenizer) {
  if (opts.sources.empty()) fail("nothing to evaluate: no shards and no text files given");
  const int V = model.shape().vocab_size;
  std::vector<int64_t> byte_len;
  if (tokenizer) byte_len = token_byte_lengths(*tokenizer, V);

  const int n_moe = model.num_moe_layers();
  const MoeOptions& mo = model.moe().options;
  const bool competesmoe = n_moe > 0 && mo.router == MoeRouter::CompeteSMoE;
  std::optional<RoutingAccumulator> routing;
  if (opts.routing && n_moe > 0) routing.emplace(model.moe_block_index(), mo.n_experts, mo.top_k, competesmoe);

  LmEvalResult res;
  res.total.source.path = "total";
  res.total.bytes = tokenizer ? std::optional<uint64_t>(0) : std::nullopt;
  double seconds = 0.0;
  Batch b;
  for (const EvalSource& src : opts.sources) {
    SourceEval s;
    s.source = src;
    if (tokenizer) s.bytes = 0;  // counted per source (stays unknown without a tokenizer)
    const bool shards = src.kind == EvalSource::Kind::Shards;
    BatchSource next = shards ? shard_batches(src, opts, s) : text_batches(src, opts, tokenizer, V);
    double batch_mean_sum = 0.0;
    while (next(b)) {
      const int64_t n = int64_t(b.B) * b.T;
      const auto t0 = Clock::now();
      model.forward(b.inputs.data(), b.targets.data(), b.B, b.T);
      const double lm = model.last_lm_loss();  // the LM loss alone, as the trainer validates
      seconds += std::chrono::duration<double>(Clock::now() - t0).count();
      batch_mean_sum += lm;
      s.total_nats += lm * double(n);
      s.tokens += n;
      s.batches++;
      if (s.bytes) {
        uint64_t bytes = 0;
        for (int32_t id : b.targets) {
          if (byte_len[id] < 0) {
            s.bytes.reset();  // the tokenizer does not know this id: no bpb for this source
            break;
          }
          bytes += uint64_t(byte_len[id]);
        }
        if (s.bytes) *s.bytes += bytes;
      }
      if (routing) {
        routing->add_routing(model.moe_stats(), n);
        if (competesmoe) {
          // Same tokens, every layer competing: how often the router already picks the winners.
          model.set_competition(std::vector<bool>(n_moe, true));
          model.forward(b.inputs.data(), nullptr, b.B, b.T);
          routing->add_overlap(model.moe_stats(), n);
        }
      }
    }
    finish(s, shards, batch_mean_sum);
    res.total.batches += s.batches;
    res.total.tokens += s.tokens;
    res.total.total_nats += s.total_nats;
    res.total.wrapped = res.total.wrapped || s.wrapped;
    if (res.total.bytes) {
      if (s.bytes) *res.total.bytes += *s.bytes;
      else res.total.bytes.reset();
    }
    res.sources.push_back(std::move(s));
  }
  if (res.sources.size() == 1) {
    const EvalSource keep = res.total.source;
    res.total = res.sources[0];
    res.total.source = keep;
  } else {
    finish(res.total, false, 0.0);
  }
  if (routing) res.routing = routing->result();
  res.seconds = seconds;
  res.tokens_per_s = seconds > 0 ? double(res.total.tokens) / seconds : 0.0;
  return res;
}

}  // namespace competelm
