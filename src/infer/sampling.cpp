#include "infer/sampling.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/error.hpp"

namespace competelm {

void check_sampling_params(const SamplingParams& p) {
  if (!std::isfinite(p.temperature)) fail("--temperature must be a finite number (got {})", p.temperature);
  if (p.top_k < 0) fail("--top-k must be >= 0 (got {}; 0 = no limit)", p.top_k);
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) fail("--top-p must be in (0, 1] (got {})", p.top_p);
}

uint32_t sample_next(const float* logits, int V, const SamplingParams& p, Rng& rng) {
  if (V < 1) fail("sample_next: empty vocabulary");
  if (p.temperature <= 0.0f) return static_cast<uint32_t>(std::max_element(logits, logits + V) - logits);
  // Candidates, most likely first (ties: lower id first), so every cut below is deterministic.
  std::vector<int> ids(V);
  std::iota(ids.begin(), ids.end(), 0);
  auto more_likely = [&](int a, int b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  const int k = (p.top_k > 0 && p.top_k < V) ? p.top_k : V;
  if (k < V) {
    std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), more_likely);
    ids.resize(k);
  } else if (p.top_p < 1.0f) {
    std::sort(ids.begin(), ids.end(), more_likely);
  }
  // softmax(logits / T) over the candidates, in double
  float maxv = -INFINITY;
  for (int id : ids) maxv = std::max(maxv, logits[id]);
  std::vector<double> prob(ids.size());
  double total = 0.0;
  for (size_t i = 0; i < ids.size(); i++) total += prob[i] = std::exp(double(logits[ids[i]] - maxv) / p.temperature);
  size_t keep = ids.size();
  if (p.top_p < 1.0f) {  // ids are sorted here: the smallest prefix reaching top_p of the mass
    double cum = 0.0;
    for (size_t i = 0; i < ids.size(); i++) {
      cum += prob[i];
      if (cum >= double(p.top_p) * total) {
        keep = i + 1;
        break;
      }
    }
  }
  double kept = 0.0;
  for (size_t i = 0; i < keep; i++) kept += prob[i];
  double r = rng.uniform_double() * kept;
  for (size_t i = 0; i < keep; i++) {
    r -= prob[i];
    if (r < 0.0) return static_cast<uint32_t>(ids[i]);
  }
  return static_cast<uint32_t>(ids[keep - 1]);  // rounding: the last kept candidate
}

}  // namespace competelm
