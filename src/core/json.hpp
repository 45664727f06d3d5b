#pragma once
// Minimal JSON: a strict parser (RFC 8259) for small documents such as checkpoint
// meta.json, and a one-line writer for metrics.jsonl records. Integers are kept exact
// (int64 / uint64) because steps, byte counts and checksums must not pass through double.
#include <concepts>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace competelm {

class JsonValue {
 public:
  enum class Type { Null, Bool, Number, String, Array, Object };
  using Members = std::vector<std::pair<std::string, JsonValue>>;  // in document order

  JsonValue() = default;  // null
  static JsonValue make_bool(bool b);
  static JsonValue make_int(int64_t v);
  static JsonValue make_uint(uint64_t v);
  static JsonValue make_double(double v);
  static JsonValue make_string(std::string s);
  static JsonValue make_array(std::vector<JsonValue> items);
  static JsonValue make_object(Members members);

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::Null; }
  bool is_number() const { return type_ == Type::Number; }
  bool is_integer() const { return type_ == Type::Number && num_ != NumKind::Double; }
  bool is_string() const { return type_ == Type::String; }
  bool is_object() const { return type_ == Type::Object; }
  bool is_array() const { return type_ == Type::Array; }

  // Typed access; `what` names the value in the error (e.g. "meta.json: step").
  bool as_bool(std::string_view what = "value") const;
  double as_double(std::string_view what = "value") const;    // any number
  int64_t as_int64(std::string_view what = "value") const;    // integer literal in range
  uint64_t as_uint64(std::string_view what = "value") const;  // non-negative integer literal
  const std::string& as_string(std::string_view what = "value") const;
  const std::vector<JsonValue>& as_array(std::string_view what = "value") const;
  const Members& as_object(std::string_view what = "value") const;

  // Object members: find returns nullptr when absent; at throws an Error naming the key.
  const JsonValue* find(std::string_view key) const;
  const JsonValue& at(std::string_view key, std::string_view what = "object") const;

 private:
  enum class NumKind { Int, UInt, Double };  // UInt only for values above INT64_MAX
  Type type_ = Type::Null;
  NumKind num_ = NumKind::Int;
  bool bool_ = false;
  int64_t int_ = 0;
  uint64_t uint_ = 0;
  double double_ = 0.0;
  std::string string_;
  std::vector<JsonValue> array_;
  Members object_;
};

// Parses one complete JSON document (surrounding whitespace allowed). Duplicate object
// keys, trailing commas, comments, NaN and leading zeros are rejected. Errors name
// `source` and the byte offset: "meta.json: offset 17: expected ':' after object key".
JsonValue parse_json(std::string_view text, std::string_view source = "<json>");

// "text" with quotes; escapes ", \, and control characters (other bytes pass through).
std::string json_quote(std::string_view s);
// Shortest text that parses back to the same double; NaN and ±inf become null.
std::string json_number(double v);

// Builds a compact one-line JSON object: JsonObject().add("step", 10).add("loss", 3.2).str()
// → {"step":10,"loss":3.2}. Keys are written in insertion order and not de-duplicated.
class JsonObject {
 public:
  template <typename T>
    requires std::integral<T>
  JsonObject& add(std::string_view key, T v) {
    if constexpr (std::same_as<T, bool>) return add_raw(key, v ? "true" : "false");
    else return add_raw(key, std::to_string(v));
  }
  template <typename T>
    requires std::floating_point<T>
  JsonObject& add(std::string_view key, T v) {
    return add_raw(key, json_number(static_cast<double>(v)));
  }
  JsonObject& add(std::string_view key, std::string_view v) { return add_raw(key, json_quote(v)); }
  JsonObject& add(std::string_view key, const char* v) { return add(key, std::string_view(v)); }
  JsonObject& add(std::string_view key, const std::string& v) { return add(key, std::string_view(v)); }
  JsonObject& add(std::string_view key, const JsonObject& nested) { return add_raw(key, nested.str()); }
  JsonObject& add_null(std::string_view key) { return add_raw(key, "null"); }
  // `json` must already be a valid JSON value (not checked).
  JsonObject& add_raw(std::string_view key, std::string_view json);

  std::string str() const { return "{" + body_ + "}"; }
  // The members without braces, e.g. for CheckpointWriter::commit(extra_json_fields).
  const std::string& body() const { return body_; }
  bool empty() const { return body_.empty(); }

 private:
  std::string body_;
};

}  // namespace competelm
