#include "tokenizer/utf8.hpp"

namespace competelm::utf8 {
namespace {

// Decodes the code point starting at bytes[i]; advances i past the bytes it consumed. An
// invalid sequence consumes only its maximal valid prefix (at least one byte) and yields U+FFFD.
char32_t next_code_point(std::string_view bytes, size_t& i) {
  const auto b = static_cast<uint8_t>(bytes[i]);
  if (b < 0x80) {
    ++i;
    return b;
  }
  int need = 0;
  char32_t cp = 0;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the next continuation byte
  if (b >= 0xC2 && b <= 0xDF) {
    need = 1;
    cp = b & 0x1F;
  } else if (b >= 0xE0 && b <= 0xEF) {
    need = 2;
    cp = b & 0x0F;
    if (b == 0xE0) lo = 0xA0;  // overlong
    if (b == 0xED) hi = 0x9F;  // surrogates
  } else if (b >= 0xF0 && b <= 0xF4) {
    need = 3;
    cp = b & 0x07;
    if (b == 0xF0) lo = 0x90;  // overlong
    if (b == 0xF4) hi = 0x8F;  // above U+10FFFF
  } else {
    ++i;
    return kReplacement;
  }
  size_t j = i + 1;
  for (int k = 0; k < need; ++k, ++j) {
    if (j >= bytes.size()) {
      i = j;
      return kReplacement;
    }
    const auto c = static_cast<uint8_t>(bytes[j]);
    if (c < lo || c > hi) {
      i = j;  // the offending byte starts the next code point
      return kReplacement;
    }
    cp = (cp << 6) | (c & 0x3F);
    lo = 0x80;
    hi = 0xBF;
  }
  i = j;
  return cp;
}

}  // namespace

std::vector<char32_t> decode(std::string_view bytes) {
  std::vector<char32_t> cps;
  cps.reserve(bytes.size());
  for (size_t i = 0; i < bytes.size();) cps.push_back(next_code_point(bytes, i));
  return cps;
}

void append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

}  // namespace competelm::utf8
