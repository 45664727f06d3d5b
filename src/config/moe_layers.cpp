// Parsing the moe.layers syntax (see moe_layers.hpp).
#include "config/moe_layers.hpp"

#include <charconv>
#include <cstdint>
#include <string_view>

#include <fmt/format.h>

namespace competelm {

namespace {

constexpr int kMaxMoeLayerBlocks = 1 << 20;  // far beyond any real model's depth

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// A whole string of decimal digits as a non-negative int; nothing otherwise ("+1", "-2",
// "1.5", "" and values beyond int are all refused).
std::optional<int> parse_index(std::string_view s) {
  if (s.empty() || s.front() < '0' || s.front() > '9') return std::nullopt;
  int value = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return value;
}

MoeLayersResult error(std::string message) { return MoeLayersResult{{}, std::move(message)}; }

MoeLayersResult parse_every(std::string_view spec, int n_layer) {
  // spec = "every:N" or "every:N:OFFSET"
  std::string_view rest = spec.substr(6);
  const std::size_t colon = rest.find(':');
  const std::string_view n_text = colon == std::string_view::npos ? rest : rest.substr(0, colon);
  const auto n = parse_index(n_text);
  if (!n || *n < 1)
    return error(fmt::format("in '{}': the step '{}' must be an integer ≥ 1", spec, n_text));
  int offset = 0;
  if (colon != std::string_view::npos) {
    const std::string_view off_text = rest.substr(colon + 1);
    const auto off = parse_index(off_text);
    if (!off)
      return error(fmt::format("in '{}': the offset '{}' must be an integer ≥ 0", spec, off_text));
    if (*off >= n_layer)
      return error(fmt::format("in '{}': the offset {} selects no block: model.n_layer is {} "
                               "(blocks 0..{})",
                               spec, *off, n_layer, n_layer - 1));
    offset = *off;
  }
  MoeLayersResult out;
  out.mask.assign(n_layer, false);
  // 64-bit index: offset + N may exceed INT_MAX ("every:2147483647:5", found by fuzzing).
  for (int64_t l = offset; l < n_layer; l += *n) out.mask[size_t(l)] = true;
  return out;
}

MoeLayersResult parse_list(std::string_view spec, int n_layer) {
  MoeLayersResult out;
  out.mask.assign(n_layer, false);
  std::size_t start = 0;
  int position = 1;
  while (true) {
    const std::size_t comma = spec.find(',', start);
    const std::string_view raw =
        spec.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    const std::string_view item = trim(raw);
    if (item.empty())
      return error(fmt::format("in '{}': item {} is empty (expected all, none, every:N[:OFFSET] "
                               "or block indices like \"0,2,5\")",
                               spec, position));
    const auto index = parse_index(item);
    if (!index)
      return error(fmt::format("in '{}': '{}' is not a block index (expected all, none, "
                               "every:N[:OFFSET] or block indices like \"0,2,5\")",
                               spec, item));
    if (*index >= n_layer)
      return error(fmt::format("in '{}': block {} does not exist: model.n_layer is {} (blocks 0..{})",
                               spec, *index, n_layer, n_layer - 1));
    if (out.mask[*index]) return error(fmt::format("in '{}': block {} is listed twice", spec, *index));
    out.mask[*index] = true;
    if (comma == std::string_view::npos) break;
    start = comma + 1;
    ++position;
  }
  return out;
}

}  // namespace

MoeLayersResult parse_moe_layers(const std::string& spec_text, int n_layer) {
  if (n_layer < 1) return error(fmt::format("model.n_layer must be ≥ 1, got {}", n_layer));
  // The mask holds one entry per block: a corrupt n_layer (found by fuzzing: 2000000000)
  // would otherwise stall config validation for minutes.
  if (n_layer > kMaxMoeLayerBlocks)
    return error(fmt::format("model.n_layer {} is beyond the {} blocks competelm supports", n_layer,
                             kMaxMoeLayerBlocks));
  const std::string_view spec = trim(spec_text);
  if (spec == "all") return MoeLayersResult{std::vector<bool>(n_layer, true), {}};
  if (spec == "none") return MoeLayersResult{std::vector<bool>(n_layer, false), {}};
  if (spec.starts_with("every:")) return parse_every(spec, n_layer);
  if (spec.empty())
    return error("it is empty (expected all, none, every:N[:OFFSET] or block indices like \"0,2,5\")");
  return parse_list(spec, n_layer);
}

}  // namespace competelm
