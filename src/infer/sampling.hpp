#pragma once
// Choosing the next token from one row of logits: greedy, or a draw at a temperature from
// the top-k / top-p (nucleus) restricted distribution. Deterministic for a given Rng state.
#include <cstdint>

#include "core/rng.hpp"

namespace competelm {

struct SamplingParams {
  float temperature = 1.0f;  // ≤ 0: greedy (argmax, lowest id on ties)
  int top_k = 0;             // keep the k most likely tokens (0 = all)
  float top_p = 1.0f;        // keep the smallest most-likely set with probability ≥ p (1 = all)
};

// Throws Error naming the option when a value is out of range.
void check_sampling_params(const SamplingParams& p);

// logits: the first V entries of a row (the padding columns of a padded vocabulary are
// never chosen). Consumes one uniform draw from rng unless greedy.
uint32_t sample_next(const float* logits, int V, const SamplingParams& p, Rng& rng);

}  // namespace competelm
