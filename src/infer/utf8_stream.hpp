#pragma once
// Streams the bytes of decoded tokens to a terminal without splitting a UTF-8 character: a
// GPT-2 token can end in the middle of a multi-byte character (the next token holds the
// rest), so an incomplete trailing sequence is held back until it completes. Bytes pass
// through unchanged: the concatenated output equals decoding all tokens at once.
#include <string>
#include <string_view>

namespace competelm {

class Utf8Stream {
 public:
  // Adds bytes; returns what can be printed now (possibly empty).
  std::string push(std::string_view bytes);
  // Whatever is still held (an incomplete sequence at the very end), for the final flush.
  std::string finish();

 private:
  std::string held_;
};

}  // namespace competelm
