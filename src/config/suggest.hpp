#pragma once
// "Did you mean ...?" for misspelt keys and enum values.
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace competelm {

// Edit distance counting insertions, deletions, substitutions and swaps of two adjacent
// characters (optimal-string-alignment Damerau–Levenshtein).
std::size_t edit_distance(std::string_view a, std::string_view b);

// Whether `typed` is close enough to `candidate` to suggest it: a small edit distance
// relative to the length, or one being a prefix of the other ("warmup" / "warmup_steps").
bool close_enough(std::string_view typed, std::string_view candidate);

// The closest candidate that is close enough, or nothing. Ties go to the earlier one.
std::optional<std::string> closest_match(std::string_view typed,
                                         const std::vector<std::string_view>& candidates);

}  // namespace competelm
