#pragma once
// UTF-8 decoding with the WHATWG replacement rules (what node's TextDecoder and
// fs.readFileSync(..., 'utf8') do): each maximal invalid subpart becomes one U+FFFD. Matching
// these rules makes invalid input tokenize exactly as in the reference JavaScript encoder.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace competelm::utf8 {

constexpr char32_t kReplacement = 0xFFFD;

// Decodes bytes into code points (never surrogates; invalid subparts become U+FFFD).
std::vector<char32_t> decode(std::string_view bytes);

// Appends the UTF-8 encoding of one code point.
void append(std::string& out, char32_t cp);

}  // namespace competelm::utf8
