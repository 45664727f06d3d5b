#pragma once
// GPT-2's reversible byte ↔ "printable unicode character" mapping (bytes_to_unicode in
// OpenAI's encoder.py): encoder.json and vocab.bpe spell every token with these characters.
// Printable Latin-1 bytes map to themselves; the other 68 bytes map to U+0100..U+0143.
#include <array>
#include <cstdint>
#include <optional>

namespace competelm {

class ByteSymbols {
 public:
  ByteSymbols() {
    std::array<bool, 256> printable{};
    for (int b = '!'; b <= '~'; ++b) printable[b] = true;
    for (int b = 0xA1; b <= 0xAC; ++b) printable[b] = true;
    for (int b = 0xAE; b <= 0xFF; ++b) printable[b] = true;
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) to_symbol_[b] = printable[b] ? static_cast<char32_t>(b) : next++;
  }
  char32_t symbol(uint8_t byte) const { return to_symbol_[byte]; }
  // The byte a symbol stands for, or nullopt for a character outside the mapping.
  std::optional<uint8_t> byte(char32_t symbol) const {
    if (symbol < 256) {
      if (to_symbol_[symbol] == symbol) return static_cast<uint8_t>(symbol);
      return std::nullopt;
    }
    for (int b = 0; b < 256; ++b)
      if (to_symbol_[b] == symbol) return static_cast<uint8_t>(b);
    return std::nullopt;
  }

 private:
  std::array<char32_t, 256> to_symbol_{};
};

}  // namespace competelm
