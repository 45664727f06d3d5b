#include "core/json.hpp"

#include <charconv>
#include <cmath>
#include <limits>
#include <system_error>

#include "core/error.hpp"

namespace competelm {

namespace {

const char* type_name(JsonValue::Type t) {
  switch (t) {
    case JsonValue::Type::Null: return "null";
    case JsonValue::Type::Bool: return "bool";
    case JsonValue::Type::Number: return "number";
    case JsonValue::Type::String: return "string";
    case JsonValue::Type::Array: return "array";
    case JsonValue::Type::Object: return "object";
  }
  return "?";
}

[[noreturn]] void wrong_type(std::string_view what, const char* expected, JsonValue::Type got) {
  fail("{}: expected {}, got {}", what, expected, type_name(got));
}

// Recursive-descent parser over a string_view; `pos_` is the byte offset reported in errors.
class Parser {
 public:
  Parser(std::string_view text, std::string_view source) : text_(text), source_(source) {}

  JsonValue parse_document() {
    skip_ws();
    JsonValue v = parse_value(0);
    skip_ws();
    if (pos_ != text_.size()) error("unexpected trailing characters after the JSON value");
    return v;
  }

 private:
  // Deep nesting would otherwise overflow the stack on hostile input.
  static constexpr int kMaxDepth = 256;

  std::string_view text_;
  std::string_view source_;
  size_t pos_ = 0;

  template <typename... Args>
  [[noreturn]] void error(fmt::format_string<Args...> f, Args&&... args) const {
    fail("{}: offset {}: {}", source_, pos_, fmt::format(f, std::forward<Args>(args)...));
  }

  bool at_end() const { return pos_ >= text_.size(); }
  char peek() const { return at_end() ? '\0' : text_[pos_]; }

  void skip_ws() {
    while (!at_end()) {
      char c = text_[pos_];
      if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
      ++pos_;
    }
  }

  void expect(char c, const char* context) {
    if (peek() != c) {
      if (at_end()) error("unexpected end of input, expected '{}' {}", c, context);
      error("expected '{}' {}", c, context);
    }
    ++pos_;
  }

  void expect_word(std::string_view word) {
    if (text_.substr(pos_, word.size()) != word) error("invalid literal (expected '{}')", word);
    pos_ += word.size();
  }

  JsonValue parse_value(int depth) {
    if (depth > kMaxDepth) error("nesting deeper than {} levels", kMaxDepth);
    if (at_end()) error("unexpected end of input, expected a value");
    switch (peek()) {
      case '{': return parse_object(depth);
      case '[': return parse_array(depth);
      case '"': return JsonValue::make_string(parse_string());
      case 't': expect_word("true"); return JsonValue::make_bool(true);
      case 'f': expect_word("false"); return JsonValue::make_bool(false);
      case 'n': expect_word("null"); return JsonValue();
      default:
        if (peek() == '-' || (peek() >= '0' && peek() <= '9')) return parse_number();
        error("unexpected character '{}', expected a value", peek());
    }
  }

  JsonValue parse_object(int depth) {
    ++pos_;  // '{'
    JsonValue::Members members;
    skip_ws();
    if (peek() == '}') {
      ++pos_;
      return JsonValue::make_object(std::move(members));
    }
    for (;;) {
      skip_ws();
      if (peek() != '"') error("expected a string key in object");
      size_t key_pos = pos_;
      std::string key = parse_string();
      for (const auto& m : members) {
        if (m.first == key) {
          pos_ = key_pos;
          error("duplicate key \"{}\"", key);
        }
      }
      skip_ws();
      expect(':', "after object key");
      skip_ws();
      JsonValue v = parse_value(depth + 1);
      members.emplace_back(std::move(key), std::move(v));
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      expect('}', "or ',' in object");
      return JsonValue::make_object(std::move(members));
    }
  }

  JsonValue parse_array(int depth) {
    ++pos_;  // '['
    std::vector<JsonValue> items;
    skip_ws();
    if (peek() == ']') {
      ++pos_;
      return JsonValue::make_array(std::move(items));
    }
    for (;;) {
      skip_ws();
      items.push_back(parse_value(depth + 1));
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      expect(']', "or ',' in array");
      return JsonValue::make_array(std::move(items));
    }
  }

  unsigned parse_hex4() {
    if (pos_ + 4 > text_.size()) error("truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; ++i) {
      char c = text_[pos_++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= unsigned(c - '0');
      else if (c >= 'a' && c <= 'f') v |= unsigned(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= unsigned(c - 'A' + 10);
      else {
        --pos_;
        error("invalid hex digit in \\u escape");
      }
    }
    return v;
  }

  static void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += char(cp);
    } else if (cp < 0x800) {
      out += char(0xC0 | (cp >> 6));
      out += char(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += char(0xE0 | (cp >> 12));
      out += char(0x80 | ((cp >> 6) & 0x3F));
      out += char(0x80 | (cp & 0x3F));
    } else {
      out += char(0xF0 | (cp >> 18));
      out += char(0x80 | ((cp >> 12) & 0x3F));
      out += char(0x80 | ((cp >> 6) & 0x3F));
      out += char(0x80 | (cp & 0x3F));
    }
  }

  std::string parse_string() {
    ++pos_;  // opening quote
    std::string out;
    for (;;) {
      if (at_end()) error("unterminated string");
      char c = text_[pos_];
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (static_cast<unsigned char>(c) < 0x20) error("unescaped control character in string");
      if (c != '\\') {
        out += c;
        ++pos_;
        continue;
      }
      ++pos_;
      if (at_end()) error("unterminated escape in string");
      char e = text_[pos_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = parse_hex4();
          if (cp >= 0xD800 && cp <= 0xDBFF) {  // high surrogate: a low one must follow
            if (text_.substr(pos_, 2) != "\\u") error("unpaired UTF-16 surrogate in \\u escape");
            pos_ += 2;
            uint32_t lo = parse_hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) error("invalid UTF-16 low surrogate in \\u escape");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            error("unpaired UTF-16 surrogate in \\u escape");
          }
          append_utf8(out, cp);
          break;
        }
        default:
          --pos_;
          error("invalid escape '\\{}' in string", e);
      }
    }
  }

  JsonValue parse_number() {
    const size_t start = pos_;
    auto digit = [&] { return !at_end() && text_[pos_] >= '0' && text_[pos_] <= '9'; };
    bool negative = false, integral = true;
    if (peek() == '-') {
      negative = true;
      ++pos_;
    }
    if (!digit()) error("invalid number: expected a digit");
    if (text_[pos_] == '0') {
      ++pos_;
      if (digit()) error("invalid number: leading zero");
    } else {
      while (digit()) ++pos_;
    }
    if (peek() == '.') {
      integral = false;
      ++pos_;
      if (!digit()) error("invalid number: expected a digit after '.'");
      while (digit()) ++pos_;
    }
    if (peek() == 'e' || peek() == 'E') {
      integral = false;
      ++pos_;
      if (peek() == '+' || peek() == '-') ++pos_;
      if (!digit()) error("invalid number: expected a digit in exponent");
      while (digit()) ++pos_;
    }
    const char* first = text_.data() + start;
    const char* last = text_.data() + pos_;
    if (integral) {
      if (negative) {
        int64_t v = 0;
        auto r = std::from_chars(first, last, v);
        if (r.ec == std::errc() && r.ptr == last) return JsonValue::make_int(v);
      } else {
        uint64_t v = 0;
        auto r = std::from_chars(first, last, v);
        if (r.ec == std::errc() && r.ptr == last) return JsonValue::make_uint(v);
      }
      // Integers beyond 64 bits fall through to double (still a valid JSON number).
    }
    double d = 0.0;
    auto r = std::from_chars(first, last, d);
    if (r.ec == std::errc::result_out_of_range) {
      pos_ = start;
      error("number {} out of double range", std::string_view(first, size_t(last - first)));
    }
    if (r.ec != std::errc() || r.ptr != last) {
      pos_ = start;
      error("invalid number");
    }
    return JsonValue::make_double(d);
  }
};

}  // namespace

JsonValue JsonValue::make_bool(bool b) {
  JsonValue v;
  v.type_ = Type::Bool;
  v.bool_ = b;
  return v;
}

JsonValue JsonValue::make_int(int64_t x) {
  JsonValue v;
  v.type_ = Type::Number;
  v.num_ = NumKind::Int;
  v.int_ = x;
  v.double_ = static_cast<double>(x);
  return v;
}

JsonValue JsonValue::make_uint(uint64_t x) {
  if (x <= uint64_t(std::numeric_limits<int64_t>::max())) return make_int(int64_t(x));
  JsonValue v;
  v.type_ = Type::Number;
  v.num_ = NumKind::UInt;
  v.uint_ = x;
  v.double_ = static_cast<double>(x);
  return v;
}

JsonValue JsonValue::make_double(double x) {
  JsonValue v;
  v.type_ = Type::Number;
  v.num_ = NumKind::Double;
  v.double_ = x;
  return v;
}

JsonValue JsonValue::make_string(std::string s) {
  JsonValue v;
  v.type_ = Type::String;
  v.string_ = std::move(s);
  return v;
}

JsonValue JsonValue::make_array(std::vector<JsonValue> items) {
  JsonValue v;
  v.type_ = Type::Array;
  v.array_ = std::move(items);
  return v;
}

JsonValue JsonValue::make_object(Members members) {
  JsonValue v;
  v.type_ = Type::Object;
  v.object_ = std::move(members);
  return v;
}

bool JsonValue::as_bool(std::string_view what) const {
  if (type_ != Type::Bool) wrong_type(what, "a bool", type_);
  return bool_;
}

double JsonValue::as_double(std::string_view what) const {
  if (type_ != Type::Number) wrong_type(what, "a number", type_);
  return double_;
}

int64_t JsonValue::as_int64(std::string_view what) const {
  if (type_ != Type::Number) wrong_type(what, "an integer", type_);
  if (num_ == NumKind::Double) fail("{}: expected an integer, got {}", what, json_number(double_));
  if (num_ == NumKind::UInt) fail("{}: integer {} does not fit in int64", what, uint_);
  return int_;
}

uint64_t JsonValue::as_uint64(std::string_view what) const {
  if (type_ != Type::Number) wrong_type(what, "a non-negative integer", type_);
  if (num_ == NumKind::Double) fail("{}: expected an integer, got {}", what, json_number(double_));
  if (num_ == NumKind::UInt) return uint_;
  if (int_ < 0) fail("{}: expected a non-negative integer, got {}", what, int_);
  return uint64_t(int_);
}

const std::string& JsonValue::as_string(std::string_view what) const {
  if (type_ != Type::String) wrong_type(what, "a string", type_);
  return string_;
}

const std::vector<JsonValue>& JsonValue::as_array(std::string_view what) const {
  if (type_ != Type::Array) wrong_type(what, "an array", type_);
  return array_;
}

const JsonValue::Members& JsonValue::as_object(std::string_view what) const {
  if (type_ != Type::Object) wrong_type(what, "an object", type_);
  return object_;
}

const JsonValue* JsonValue::find(std::string_view key) const {
  if (type_ != Type::Object) return nullptr;
  for (const auto& m : object_)
    if (m.first == key) return &m.second;
  return nullptr;
}

const JsonValue& JsonValue::at(std::string_view key, std::string_view what) const {
  as_object(what);
  const JsonValue* v = find(key);
  if (!v) fail("{}: missing key \"{}\"", what, key);
  return *v;
}

JsonValue parse_json(std::string_view text, std::string_view source) {
  return Parser(text, source).parse_document();
}

std::string json_quote(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  out += '"';
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) out += fmt::format("\\u{:04x}", unsigned(c));
        else out += c;
    }
  }
  out += '"';
  return out;
}

std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof(buf), v);  // shortest round-trip form
  CLM_ASSERT(r.ec == std::errc());
  return std::string(buf, r.ptr);
}

JsonObject& JsonObject::add_raw(std::string_view key, std::string_view json) {
  if (!body_.empty()) body_ += ',';
  body_ += json_quote(key);
  body_ += ':';
  body_ += json;
  return *this;
}

}  // namespace competelm
