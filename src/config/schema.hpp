#pragma once
// The config schema: one entry per key, the single source of truth for loading, validation,
// the resolved-YAML writer and the Markdown reference. Internal to src/config (and tests).
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "config/config.hpp"

namespace competelm::config_schema {

// A pointer to the field a key is stored in; its alternative gives the key's C++ type.
using FieldRef = std::variant<int*, int64_t*, uint64_t*, float*, bool*, std::string*>;

enum class ValueType { Int, Int64, UInt64, Float, Bool, String, Enum };

struct KeySpec {
  std::string_view key;                     // full key, "optim.lr"
  FieldRef (*field)(Config&);               // where the value lives in a Config
  std::string_view description;             // one line, for the reference and to_yaml()
  std::vector<std::string_view> allowed{};  // enum values (non-empty makes a string an enum)
  std::optional<double> min{};              // numeric lower bound
  std::optional<double> max{};              // numeric upper bound
  bool min_open = false;                    // min itself is not allowed (> instead of ≥)
  bool max_open = false;                    // max itself is not allowed (< instead of ≤)
  bool non_empty = false;                   // strings: "" is not allowed

  ValueType type() const;
  std::string_view section() const;         // "optim"
  std::string_view leaf() const;            // "lr"
  FieldRef ref(const Config& cfg) const;    // const access (the pointee must not be written)
};

// Every key, grouped by section in section order.
const std::vector<KeySpec>& keys();

// Section names in schema order.
const std::vector<std::string_view>& sections();

// The entry for a full key, or nullptr.
const KeySpec* find(std::string_view key);

// "int", "float", "enum", ... as shown in the reference.
std::string_view type_name(ValueType type);

// The key's value in `cfg` as YAML scalar text that parses back to the same value.
std::string format_value(const KeySpec& spec, const Config& cfg);

// Human-readable allowed range / values: "≥ 1", "[0, 1)", "cosine, linear", "" if any.
std::string allowed_text(const KeySpec& spec);

// What went wrong with one value, without location: the caller prefixes file:line or --set.
struct ValueError {
  std::string message;  // "expected a number, got 'fast'"
  std::string hint;     // "did you mean 'cosine'?" or empty
};

// Parses YAML scalar text into the key's field and range-checks it; nothing on success.
// `is_null` marks a YAML null (an empty value), which no key accepts.
std::optional<ValueError> assign(const KeySpec& spec, Config& cfg, const std::string& text,
                                 bool is_null);

}  // namespace competelm::config_schema
