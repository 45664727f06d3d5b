#include "infer/utf8_stream.hpp"

namespace competelm {
namespace {
// Length of the sequence a lead byte starts (1 for ASCII and for bytes that cannot lead).
size_t sequence_length(unsigned char b) {
  if (b >= 0xF0 && b <= 0xF7) return 4;
  if (b >= 0xE0) return b <= 0xEF ? 3 : 1;
  if (b >= 0xC0) return 2;
  return 1;
}
bool is_continuation(unsigned char b) { return (b & 0xC0) == 0x80; }
}  // namespace

std::string Utf8Stream::push(std::string_view bytes) {
  held_.append(bytes);
  // Find the last lead byte among the final (at most 4) bytes; hold from it if incomplete.
  size_t cut = held_.size();
  for (size_t back = 1; back <= 4 && back <= held_.size(); back++) {
    const size_t i = held_.size() - back;
    const auto b = static_cast<unsigned char>(held_[i]);
    if (is_continuation(b)) continue;
    if (sequence_length(b) > back) cut = i;
    break;
  }
  std::string out = held_.substr(0, cut);
  held_.erase(0, cut);
  return out;
}

std::string Utf8Stream::finish() {
  std::string out;
  out.swap(held_);
  return out;
}

}  // namespace competelm
