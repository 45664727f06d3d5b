#include "config/suggest.hpp"

#include <algorithm>

namespace competelm {

std::size_t edit_distance(std::string_view a, std::string_view b) {
  // d[i][j] = distance between a[0..i) and b[0..j); three rows suffice for the swap case.
  const std::size_t n = a.size(), m = b.size();
  std::vector<std::size_t> prev2(m + 1), prev(m + 1), cur(m + 1);
  for (std::size_t j = 0; j <= m; ++j) prev[j] = j;
  for (std::size_t i = 1; i <= n; ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= m; ++j) {
      const std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        cur[j] = std::min(cur[j], prev2[j - 2] + 1);
    }
    std::swap(prev2, prev);
    std::swap(prev, cur);
  }
  return prev[m];
}

bool close_enough(std::string_view typed, std::string_view candidate) {
  if (typed.empty() || candidate.empty()) return false;
  const std::size_t shorter = std::min(typed.size(), candidate.size());
  // A prefix of at least 3 characters ("optimizer" for "optim", "warmup" for "warmup_steps").
  if (shorter >= 3 && (typed.starts_with(candidate) || candidate.starts_with(typed))) return true;
  // Otherwise allow about one edit per three characters, at least one.
  const std::size_t budget = std::max<std::size_t>(1, candidate.size() / 3);
  return edit_distance(typed, candidate) <= budget;
}

std::optional<std::string> closest_match(std::string_view typed,
                                         const std::vector<std::string_view>& candidates) {
  std::optional<std::string> best;
  std::size_t best_distance = 0;
  for (std::string_view c : candidates) {
    if (!close_enough(typed, c)) continue;
    const std::size_t d = edit_distance(typed, c);
    if (!best || d < best_distance) {
      best = std::string(c);
      best_distance = d;
    }
  }
  return best;
}

}  // namespace competelm
