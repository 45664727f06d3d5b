#include "train/sampler.hpp"

#include <algorithm>
#include <cmath>

#include "core/error.hpp"
#include "core/rng.hpp"

namespace competelm {

std::vector<uint32_t> sample_tokens(GPT2& model, int max_T, const std::vector<uint32_t>& prompt,
                                    const SampleOptions& opts) {
  if (prompt.empty()) fail("sampling needs a prompt of at least one token");
  const int V = model.shape().vocab_size, Vp = model.shape().padded_vocab();
  Rng rng(opts.seed);
  std::vector<uint32_t> seq = prompt;
  std::vector<int32_t> window;
  std::vector<double> probs(V);
  for (int n = 0; n < opts.max_new_tokens; ++n) {
    const size_t start = seq.size() > size_t(max_T) ? seq.size() - max_T : 0;
    window.assign(seq.begin() + start, seq.end());
    const int T = static_cast<int>(window.size());
    model.forward(window.data(), nullptr, 1, T);
    const std::vector<float> logits = model.logits_host();  // (1, T, Vp)
    const float* last = logits.data() + size_t(T - 1) * Vp;
    uint32_t next = 0;
    if (opts.temperature <= 0.0f) {
      next = static_cast<uint32_t>(std::max_element(last, last + V) - last);
    } else {
      const float mx = *std::max_element(last, last + V);
      double sum = 0.0;
      for (int v = 0; v < V; ++v) sum += probs[v] = std::exp(double(last[v] - mx) / opts.temperature);
      double r = rng.uniform_double() * sum;
      next = V - 1;
      for (int v = 0; v < V; ++v) {
        r -= probs[v];
        if (r <= 0.0) {
          next = v;
          break;
        }
      }
    }
    seq.push_back(next);
  }
  return std::vector<uint32_t>(seq.begin() + prompt.size(), seq.end());
}

}  // namespace competelm
