#pragma once
// GPT-2's pre-tokenizer: splits text into the pieces the JavaScript regex
//   /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu
// matches, hand-written (std::regex has no \p{L} and is far too slow).
#include <cstddef>
#include <span>
#include <vector>

namespace competelm {

enum class CharClass : unsigned char { kLetter, kNumber, kSpace, kOther };

CharClass classify(char32_t cp);

struct PieceSpan {
  size_t begin;  // index of the first code point
  size_t end;    // one past the last
};

// Splits code points into consecutive, non-empty pieces that cover the whole input.
std::vector<PieceSpan> pretokenize(std::span<const char32_t> cps);

}  // namespace competelm
