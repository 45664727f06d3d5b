#pragma once
// Text generation from a prompt with the KV cache (KvDecoder) or by recomputing the whole
// context for every token (GPT2::forward), the two producing the same tokens.
//
// Context window: when the context would exceed model.seq_len, it SLIDES by half a window:
// the oldest tokens are dropped so that the newest ceil(seq_len / 2) remain, and those are
// re-encoded in one pass (positions restart at 0: GPT-2's learned position embeddings have no
// rows past seq_len, so a cache cannot simply shift). Both modes use the same contexts, so a
// slide changes neither's tokens relative to the other. A prompt longer than the window keeps
// its last seq_len tokens.
#include <cstdint>
#include <functional>
#include <vector>

#include "backend/backend.hpp"
#include "infer/sampling.hpp"
#include "model/gpt2.hpp"

namespace competelm {

struct GenerateOptions {
  int max_new_tokens = 64;
  SamplingParams sampling;
  uint64_t seed = 0;
  bool kv_cache = true;       // false: full recomputation of the context per token
  int stop_token = 50256;     // <|endoftext|>; < 0 = never stop early
};

struct GenerateResult {
  std::vector<uint32_t> tokens;  // the new tokens (without the stop token)
  bool stopped_at_stop_token = false;
  int slides = 0;                // times the context window slid
  double prefill_seconds = 0.0;  // the prompt's pass
  double decode_seconds = 0.0;   // everything after it
};

// The first token of the context kept when `length` tokens exist and the context must fit in
// `window` positions: 0 while it fits, else length − ceil(window/2) (the slide rule above).
int context_start(int length, int window, int current_start);

// `model` must be allocated for B = 1 and T = model.seq_len when kv_cache is false.
// on_token (optional) sees each new token as it is produced; returning false stops.
GenerateResult generate(Backend& backend, GPT2& model, const std::vector<uint32_t>& prompt,
                        const GenerateOptions& opts, const std::function<bool(uint32_t)>& on_token = {});

}  // namespace competelm
