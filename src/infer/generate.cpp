#include "infer/generate.hpp"

#include <chrono>
#include <memory>

#include "core/error.hpp"
#include "core/rng.hpp"
#include "infer/kv_decoder.hpp"

namespace competelm {

int context_start(int length, int window, int current_start) {
  if (length - current_start <= window) return current_start;
  return length - (window - window / 2);
}

GenerateResult generate(Backend& backend, GPT2& model, const std::vector<uint32_t>& prompt,
                        const GenerateOptions& opts, const std::function<bool(uint32_t)>& on_token) {
  if (prompt.empty()) fail("generation needs a prompt of at least one token");
  check_sampling_params(opts.sampling);
  using clock = std::chrono::steady_clock;
  const int W = model.shape().seq_len, V = model.shape().vocab_size, Vp = model.shape().padded_vocab();
  for (size_t i = 0; i < prompt.size(); i++)
    if (prompt[i] >= uint32_t(V))
      fail_hint("the prompt must be tokenized with the tokenizer the model was trained with",
                "prompt token {} (id {}) is outside the model's vocabulary of {} tokens", i, prompt[i], V);
  GenerateResult res;
  Rng rng(opts.seed);
  std::vector<int32_t> seq(prompt.begin(), prompt.end());
  int start = seq.size() > size_t(W) ? int(seq.size()) - W : 0;
  std::unique_ptr<KvDecoder> kv;
  if (opts.kv_cache) kv = std::make_unique<KvDecoder>(backend, model);

  // Logits of the next token given seq[start:], appending `fresh` new tokens (KV path).
  std::vector<float> row(Vp);
  auto next_logits = [&](int fresh, bool restart) {
    const int len = int(seq.size()) - start;
    if (kv) {
      if (restart) kv->reset();
      const int n = restart ? len : fresh;
      const std::vector<float>& lg = kv->append(seq.data() + seq.size() - n, n);
      std::copy(lg.end() - Vp, lg.end(), row.begin());
    } else {
      model.forward(seq.data() + start, nullptr, 1, len);
      const std::vector<float> lg = model.logits_host();  // (1, len, Vp)
      std::copy(lg.end() - Vp, lg.end(), row.begin());
    }
  };

  auto t0 = clock::now();
  next_logits(0, /*restart=*/true);
  res.prefill_seconds = std::chrono::duration<double>(clock::now() - t0).count();
  t0 = clock::now();
  for (int i = 0; i < opts.max_new_tokens; i++) {
    const uint32_t tok = sample_next(row.data(), V, opts.sampling, rng);
    if (opts.stop_token >= 0 && tok == uint32_t(opts.stop_token)) {
      res.stopped_at_stop_token = true;
      break;
    }
    res.tokens.push_back(tok);
    if (on_token && !on_token(tok)) break;
    if (i + 1 == opts.max_new_tokens) break;  // no logits needed after the last token
    seq.push_back(int32_t(tok));
    const int new_start = context_start(int(seq.size()), W, start);
    const bool slide = new_start != start;
    start = new_start;
    res.slides += slide;
    next_logits(1, slide);
  }
  res.decode_seconds = std::chrono::duration<double>(clock::now() - t0).count();
  return res;
}

}  // namespace competelm
