#pragma once
// Text generation from the model during training, so a user sees what it writes.
// Recomputes the forward pass over the window for each new token (no KV cache; the
// sampling tool gets one later). Its own RNG: sampling never perturbs the training state.
#include <cstdint>
#include <vector>

#include "model/gpt2.hpp"

namespace competelm {

struct SampleOptions {
  int max_new_tokens = 32;
  float temperature = 1.0f;  // 0 = greedy
  uint64_t seed = 0;
};

// Continues `prompt` (token ids, at least one). Uses B=1 forward passes over the last
// model.shape().seq_len tokens (bounded by the window the model was allocated with).
std::vector<uint32_t> sample_tokens(GPT2& model, int max_T, const std::vector<uint32_t>& prompt,
                                    const SampleOptions& opts);

}  // namespace competelm
