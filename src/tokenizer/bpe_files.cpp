#include "tokenizer/bpe_files.hpp"

#include <fstream>
#include <sstream>

#include "core/error.hpp"
#include "tokenizer/byte_symbols.hpp"
#include "tokenizer/utf8.hpp"

namespace competelm {
namespace {

// "line L, column C" (1-based) of a byte offset, for error messages.
std::string position(const std::string& text, size_t offset) {
  size_t line = 1, col = 1;
  for (size_t i = 0; i < offset && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
  }
  return fmt::format("line {}, column {} (byte offset {})", line, col, offset);
}

// Maps a token spelled in byte symbols back to its bytes; "" when a character is outside the
// mapping.
bool symbols_to_bytes(const ByteSymbols& symbols, const std::u32string& spelled, std::string& out) {
  out.clear();
  for (char32_t cp : spelled) {
    auto b = symbols.byte(cp);
    if (!b) return false;
    out.push_back(static_cast<char>(*b));
  }
  return true;
}

// A small JSON reader for exactly the shape of encoder.json: an object of string → integer.
class EncoderJsonParser {
 public:
  EncoderJsonParser(const std::string& path, const std::string& text) : path_(path), text_(text) {}

  std::vector<VocabEntry> parse() {
    ByteSymbols symbols;
    std::vector<VocabEntry> entries;
    skip_space();
    expect('{');
    skip_space();
    if (peek() == '}') fail_at(pos_, "empty object: no tokens");
    std::string bytes;
    while (true) {
      skip_space();
      const size_t key_pos = pos_;
      std::u32string key = parse_string();
      skip_space();
      expect(':');
      skip_space();
      const uint32_t id = parse_id();
      if (!symbols_to_bytes(symbols, key, bytes))
        fail_at(key_pos, "token string is not spelled in GPT-2 byte symbols");
      entries.push_back({bytes, id});
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      expect('}');
      break;
    }
    skip_space();
    if (pos_ != text_.size()) fail_at(pos_, "unexpected text after the closing '}'");
    return entries;
  }

 private:
  [[noreturn]] void fail_at(size_t offset, const std::string& what) const {
    fail("{}: malformed encoder.json at {}: {}", path_, position(text_, offset), what);
  }
  char peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }
  void skip_space() {
    while (pos_ < text_.size() &&
           (text_[pos_] == ' ' || text_[pos_] == '\n' || text_[pos_] == '\r' || text_[pos_] == '\t'))
      ++pos_;
  }
  void expect(char c) {
    if (peek() != c) fail_at(pos_, fmt::format("expected '{}'", c));
    ++pos_;
  }
  uint32_t hex4() {
    if (pos_ + 4 > text_.size()) fail_at(pos_, "truncated \\u escape");
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = text_[pos_++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= c - '0';
      else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
      else fail_at(pos_ - 1, "bad hex digit in \\u escape");
    }
    return v;
  }
  std::u32string parse_string() {
    expect('"');
    std::u32string out;
    size_t raw_start = pos_;  // start of a run of unescaped bytes, decoded as UTF-8
    auto flush_raw = [&](size_t raw_end) {
      for (char32_t cp : utf8::decode(std::string_view(text_).substr(raw_start, raw_end - raw_start)))
        out.push_back(cp);
    };
    while (true) {
      if (pos_ >= text_.size()) fail_at(raw_start, "unterminated string");
      const char c = text_[pos_];
      if (c == '"') {
        flush_raw(pos_);
        ++pos_;
        return out;
      }
      if (static_cast<unsigned char>(c) < 0x20) fail_at(pos_, "control character in string");
      if (c != '\\') {
        ++pos_;
        continue;
      }
      flush_raw(pos_);
      ++pos_;
      const char e = peek();
      ++pos_;
      switch (e) {
        case '"': out.push_back(U'"'); break;
        case '\\': out.push_back(U'\\'); break;
        case '/': out.push_back(U'/'); break;
        case 'b': out.push_back(U'\b'); break;
        case 'f': out.push_back(U'\f'); break;
        case 'n': out.push_back(U'\n'); break;
        case 'r': out.push_back(U'\r'); break;
        case 't': out.push_back(U'\t'); break;
        case 'u': {
          uint32_t u = hex4();
          if (u >= 0xD800 && u <= 0xDBFF && peek() == '\\' && pos_ + 1 < text_.size() &&
              text_[pos_ + 1] == 'u') {
            const size_t save = pos_;
            pos_ += 2;
            const uint32_t lo = hex4();
            if (lo >= 0xDC00 && lo <= 0xDFFF) u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
            else pos_ = save;
          }
          out.push_back(static_cast<char32_t>(u));
          break;
        }
        default: fail_at(pos_ - 1, "unknown escape in string");
      }
      raw_start = pos_;
    }
  }
  uint32_t parse_id() {
    const size_t start = pos_;
    uint64_t v = 0;
    while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') {
      v = v * 10 + static_cast<uint64_t>(text_[pos_] - '0');
      if (v > 0xFFFFFFFEull) fail_at(start, "token id out of range");
      ++pos_;
    }
    if (pos_ == start) fail_at(start, "expected a non-negative integer token id");
    return static_cast<uint32_t>(v);
  }

  const std::string& path_;
  const std::string& text_;
  size_t pos_ = 0;
};

}  // namespace

std::string read_file_bytes(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open {} '{}'", what, path);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) fail("error reading {} '{}'", what, path);
  return std::move(ss).str();
}

std::vector<VocabEntry> read_encoder_json(const std::string& path) {
  const std::string text = read_file_bytes(path, "encoder.json");
  return EncoderJsonParser(path, text).parse();
}

std::vector<std::pair<std::string, std::string>> read_bpe_merges(const std::string& path) {
  const std::string text = read_file_bytes(path, "vocab.bpe");
  ByteSymbols symbols;
  std::vector<std::pair<std::string, std::string>> merges;
  size_t line_start = 0;
  for (size_t line_no = 1; line_start < text.size(); ++line_no) {
    size_t line_end = text.find('\n', line_start);
    if (line_end == std::string::npos) line_end = text.size();
    const std::string_view line = std::string_view(text).substr(line_start, line_end - line_start);
    line_start = line_end + 1;
    if (line_no == 1) {
      // The reference encoder always skips the first line: insist it is the header.
      if (!line.starts_with("#version"))
        fail("{}:1: expected a '#version' header line, found '{}'", path, line.substr(0, 40));
      continue;
    }
    // Fields separated by ASCII whitespace (no byte symbol is whitespace).
    std::vector<std::string_view> fields;
    for (size_t i = 0; i < line.size();) {
      while (i < line.size() && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r')) ++i;
      const size_t s = i;
      while (i < line.size() && !(line[i] == ' ' || line[i] == '\t' || line[i] == '\r')) ++i;
      if (i > s) fields.push_back(line.substr(s, i - s));
    }
    if (fields.empty()) continue;
    if (fields.size() != 2)
      fail("{}:{}: expected a merge 'left right' (2 fields), found {} fields", path, line_no,
           fields.size());
    std::pair<std::string, std::string> merge;
    const auto decoded_a = utf8::decode(fields[0]);
    const auto decoded_b = utf8::decode(fields[1]);
    if (!symbols_to_bytes(symbols, std::u32string(decoded_a.begin(), decoded_a.end()), merge.first) ||
        !symbols_to_bytes(symbols, std::u32string(decoded_b.begin(), decoded_b.end()), merge.second))
      fail("{}:{}: merge is not spelled in GPT-2 byte symbols", path, line_no);
    merges.push_back(std::move(merge));
  }
  if (merges.empty()) fail("{}: no merges found", path);
  return merges;
}

}  // namespace competelm
