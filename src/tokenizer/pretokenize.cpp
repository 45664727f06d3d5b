#include "tokenizer/pretokenize.hpp"

#include <array>

#include "tokenizer/unicode_tables.hpp"

namespace competelm {
namespace {

// ASCII classes, computed once from the same predicates as the tables (cheap and exact).
constexpr std::array<CharClass, 128> make_ascii_classes() {
  std::array<CharClass, 128> t{};
  for (int c = 0; c < 128; ++c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
      t[c] = CharClass::kLetter;
    else if (c >= '0' && c <= '9')
      t[c] = CharClass::kNumber;
    else if (c == ' ' || (c >= '\t' && c <= '\r'))
      t[c] = CharClass::kSpace;
    else
      t[c] = CharClass::kOther;
  }
  return t;
}
constexpr auto kAsciiClasses = make_ascii_classes();

// Length (2 or 3) of a contraction 's 't 're 've 'm 'll 'd starting at i, or 0.
size_t contraction_length(std::span<const char32_t> cps, size_t i) {
  if (cps[i] != U'\'' || i + 1 >= cps.size()) return 0;
  const char32_t a = cps[i + 1];
  if (a == U's' || a == U't' || a == U'm' || a == U'd') return 2;
  if (i + 2 >= cps.size()) return 0;
  const char32_t b = cps[i + 2];
  if ((a == U'r' && b == U'e') || (a == U'v' && b == U'e') || (a == U'l' && b == U'l')) return 3;
  return 0;
}

}  // namespace

CharClass classify(char32_t cp) {
  if (cp < 128) return kAsciiClasses[cp];
  if (unicode::in_ranges(unicode::letter_ranges(), cp)) return CharClass::kLetter;
  if (unicode::in_ranges(unicode::number_ranges(), cp)) return CharClass::kNumber;
  if (unicode::in_ranges(unicode::space_ranges(), cp)) return CharClass::kSpace;
  return CharClass::kOther;
}

std::vector<PieceSpan> pretokenize(std::span<const char32_t> cps) {
  const size_t n = cps.size();
  std::vector<CharClass> cls(n);
  for (size_t i = 0; i < n; ++i) cls[i] = classify(cps[i]);
  auto run_end = [&](size_t i, CharClass c) {
    while (i < n && cls[i] == c) ++i;
    return i;
  };

  std::vector<PieceSpan> pieces;
  pieces.reserve(n / 4 + 1);
  size_t pos = 0;
  while (pos < n) {
    size_t end = pos;
    if (const size_t len = contraction_length(cps, pos); len > 0) {
      end = pos + len;
    } else if (cps[pos] == U' ' && pos + 1 < n && cls[pos + 1] != CharClass::kSpace) {
      // " ?\p{L}+", " ?\p{N}+", " ?[^\s\p{L}\p{N}]+" with the optional space taken.
      end = run_end(pos + 1, cls[pos + 1]);
    } else if (cls[pos] != CharClass::kSpace) {
      end = run_end(pos, cls[pos]);  // the same three alternatives without the space
    } else {
      // "\s+(?!\S)" backtracks to leave the last whitespace for the next piece (so " word"
      // keeps its space) unless the run reaches the end; "\s+" catches a lone whitespace.
      const size_t ws_end = run_end(pos, CharClass::kSpace);
      end = (ws_end == n || ws_end - pos == 1) ? ws_end : ws_end - 1;
    }
    pieces.push_back({pos, end});
    pos = end;
  }
  return pieces;
}

}  // namespace competelm
