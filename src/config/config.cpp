// Loading (file → schema-checked Config), overrides, cross-key checks and writing back.
#include "config/config.hpp"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <yaml-cpp/yaml.h>

#include "config/moe_layers.hpp"
#include "config/schema.hpp"
#include "config/suggest.hpp"
#include "core/error.hpp"

namespace competelm {

namespace schema = config_schema;

namespace {

// Where each key's value came from ("tiny.yaml:12", "--set", or absent = default), so the
// cross-key checks can point at the lines to change.
using Origins = std::map<std::string, std::string, std::less<>>;

std::string origin_of(const Origins& origins, std::string_view key) {
  const auto it = origins.find(key);
  return it == origins.end() ? "default" : it->second;
}

// 1-based "line" / "line:col" of a node; yaml-cpp's marks are 0-based (-1 when unknown).
int line_of(const YAML::Mark& m) { return m.line + 1; }
int col_of(const YAML::Mark& m) { return m.column + 1; }

std::string_view kind_name(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map: return "a map";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Null: return "an empty value";
    case YAML::NodeType::Scalar: return "a value";
    default: return "nothing";
  }
}

// A "did you mean ...?" hint for an unknown key ("optim.lrr") or section ("optimizer"),
// or "" when nothing is close.
std::string suggest_key(std::string_view typed) {
  std::vector<std::string_view> full_keys;
  for (const auto& spec : schema::keys()) full_keys.push_back(spec.key);
  const auto hint = [](std::string_view key) { return fmt::format("did you mean '{}'?", key); };

  const std::size_t dot = typed.find('.');
  if (dot == std::string_view::npos) {
    // A top-level name: a misspelt section, or a key written outside its section.
    if (auto s = closest_match(typed, schema::sections()))
      return fmt::format("did you mean section '{}'?", *s);
    for (const auto& spec : schema::keys())
      if (spec.leaf() == typed)
        return hint(spec.key) + " (keys go inside their section)";
    return "";
  }
  const std::string_view section = typed.substr(0, dot);
  const std::string_view leaf = typed.substr(dot + 1);
  const bool known_section = std::find(schema::sections().begin(), schema::sections().end(),
                                       section) != schema::sections().end();
  if (known_section) {
    std::vector<std::string_view> leaves;
    for (const auto& spec : schema::keys())
      if (spec.section() == section) leaves.push_back(spec.leaf());
    if (auto l = closest_match(leaf, leaves)) return hint(fmt::format("{}.{}", section, *l));
  }
  // The right name in the wrong section ("train.lr" for "optim.lr").
  for (const auto& spec : schema::keys())
    if (spec.leaf() == leaf) return hint(spec.key);
  if (!known_section) {
    if (auto s = closest_match(section, schema::sections())) {
      const std::string fixed = fmt::format("{}.{}", *s, leaf);
      if (schema::find(fixed)) return hint(fixed);
    }
  }
  if (auto k = closest_match(typed, full_keys)) return hint(*k);
  return "";
}

[[noreturn]] void fail_unknown_key(const std::string& where, const std::string& key) {
  fail_hint(suggest_key(key), "{}: unknown key '{}'", where, key);
}

// Reads one key's YAML node into cfg; `key_node` is only used for positions.
void read_value(const schema::KeySpec& spec, const YAML::Node& value, const YAML::Mark& key_mark,
                const std::string& name, Config& cfg) {
  // A null value has no position of its own (yaml-cpp points past it): use the key's.
  const YAML::Mark mark = value.IsNull() || value.Mark().is_null() ? key_mark : value.Mark();
  if (value.IsMap() || value.IsSequence())
    fail("{}:{}: {}: expected a single {}, got {}", name, line_of(mark), spec.key,
         schema::type_name(spec.type()), kind_name(value));
  const bool is_null = value.IsNull();
  if (auto err = schema::assign(spec, cfg, is_null ? std::string() : value.Scalar(), is_null))
    throw Error(fmt::format("{}:{}: {}: {}", name, line_of(mark), spec.key, err->message),
                err->hint);
}

// The keys of one section map.
void read_section(std::string_view section, const YAML::Node& node, const std::string& name,
                  Config& cfg, Origins& origins) {
  std::map<std::string, int> seen;  // leaf → line, to reject duplicates
  for (auto it = node.begin(); it != node.end(); ++it) {
    const YAML::Node key_node = it->first;  // copies: it-> is a temporary proxy
    const YAML::Mark km = key_node.Mark();
    if (!key_node.IsScalar())
      fail("{}:{}:{}: keys in section '{}' must be plain names, got {}", name, line_of(km),
           col_of(km), section, kind_name(key_node));
    const std::string leaf = key_node.Scalar();
    const std::string key = fmt::format("{}.{}", section, leaf);
    const auto [prev, fresh] = seen.emplace(leaf, line_of(km));
    if (!fresh)
      fail("{}:{}:{}: duplicate key '{}' (first set at line {})", name, line_of(km), col_of(km),
           key, prev->second);
    const schema::KeySpec* spec = schema::find(key);
    if (!spec) fail_unknown_key(fmt::format("{}:{}:{}", name, line_of(km), col_of(km)), key);
    const YAML::Node value = it->second;
    read_value(*spec, value, km, name, cfg);
    origins[key] = fmt::format("{}:{}", name, line_of(km));
  }
}

void read_document(const YAML::Node& root, const std::string& name, Config& cfg,
                   Origins& origins) {
  std::map<std::string, int> seen;  // section → line
  for (auto it = root.begin(); it != root.end(); ++it) {
    const YAML::Node key_node = it->first;  // copies: it-> is a temporary proxy
    const YAML::Node body = it->second;
    const YAML::Mark km = key_node.Mark();
    if (!key_node.IsScalar())
      fail("{}:{}:{}: section names must be plain names, got {}", name, line_of(km), col_of(km),
           kind_name(key_node));
    const std::string section = key_node.Scalar();
    const auto [prev, fresh] = seen.emplace(section, line_of(km));
    if (!fresh)
      fail("{}:{}:{}: duplicate section '{}' (first at line {})", name, line_of(km), col_of(km),
           section, prev->second);
    const auto& names = schema::sections();
    if (std::find(names.begin(), names.end(), section) == names.end())
      fail_hint(suggest_key(section), "{}:{}:{}: unknown section '{}' (sections: {})", name,
                line_of(km), col_of(km), section, fmt::join(names, ", "));
    if (body.IsNull()) continue;  // "optim:" alone: every key keeps its default
    if (!body.IsMap())
      fail_hint(fmt::format("write the keys indented under '{}:', one per line", section),
                "{}:{}:{}: section '{}' must be a map of keys, got {}", name, line_of(km),
                col_of(km), section, kind_name(body));
    read_section(section, body, name, cfg, origins);
  }
}

void apply_override(const std::string& text, Config& cfg, Origins& origins) {
  const std::size_t eq = text.find('=');
  std::string key = eq == std::string::npos ? text : text.substr(0, eq);
  while (!key.empty() && key.back() == ' ') key.pop_back();
  if (eq == std::string::npos || key.empty())
    fail_hint("write key=value, e.g. --set optim.lr=3e-4",
              "--set {}: malformed override, expected key=value", text);
  const schema::KeySpec* spec = schema::find(key);
  if (!spec) fail_unknown_key(fmt::format("--set {}", text), key);

  YAML::Node value;
  try {
    value = YAML::Load(text.substr(eq + 1));
  } catch (const YAML::Exception& e) {
    fail_hint("quote values with special characters: --set 'eval.prompt=\"a: b\"'",
              "--set {}: the value is not valid YAML: {}", text, e.msg);
  }
  if (value.IsMap() || value.IsSequence())
    fail_hint("quote values with special characters: --set 'eval.prompt=\"a: b\"'",
              "--set {}: expected a single {}, got {}", text, schema::type_name(spec->type()),
              kind_name(value));
  const bool is_null = value.IsNull();
  if (auto err = schema::assign(*spec, cfg, is_null ? std::string() : value.Scalar(), is_null))
    throw Error(fmt::format("--set {}: {}", text, err->message), err->hint);
  origins[key] = "--set";
}

// The moe keys only matter when there are experts; a dense model (n_experts = 0) accepts any
// of them unused, so a file can keep its MoE settings and be switched with one override.
void check_moe(const Config& cfg, const std::string& name, const Origins& origins) {
  const auto& moe = cfg.moe;
  if (moe.n_experts == 0) return;
  if (moe.top_k > moe.n_experts)
    fail_hint(fmt::format("e.g. moe.top_k: {}, or more experts", moe.n_experts),
              "{}: moe.top_k ({}, from {}) must be at most moe.n_experts ({}, from {})", name,
              moe.top_k, origin_of(origins, "moe.top_k"), moe.n_experts,
              origin_of(origins, "moe.n_experts"));
  const MoeLayersResult layers = parse_moe_layers(moe.layers, cfg.model.n_layer);
  if (!layers.ok())
    fail_hint("moe.layers: all | none | every:N | every:N:OFFSET | block indices like \"0,2,5\"",
              "{}: moe.layers ('{}', from {}): {} (model.n_layer from {})", name, moe.layers,
              origin_of(origins, "moe.layers"), layers.error,
              origin_of(origins, "model.n_layer"));
}

// Checks that involve more than one key; every message names both keys and where they were set.
void check_consistency(const Config& cfg, const std::string& name, const Origins& origins) {
  const auto& m = cfg.model;
  if (m.d_model % m.n_head != 0) {
    const int lower = m.d_model / m.n_head * m.n_head;
    fail_hint(fmt::format("e.g. model.d_model: {} or {}", lower > 0 ? lower : m.n_head,
                          lower + m.n_head),
              "{}: model.d_model ({}, from {}) must be a multiple of model.n_head ({}, from {})",
              name, m.d_model, origin_of(origins, "model.d_model"), m.n_head,
              origin_of(origins, "model.n_head"));
  }
  const auto& t = cfg.train;
  const int64_t micro_tokens = int64_t{t.micro_batch} * m.seq_len;
  if (t.batch_tokens > 0 && t.batch_tokens % micro_tokens != 0)
    fail_hint("train.batch_tokens = (micro-steps per step) × ranks × train.micro_batch × "
              "model.seq_len",
              "{}: train.batch_tokens ({}, from {}) must be a multiple of train.micro_batch × "
              "model.seq_len = {} × {} = {} tokens",
              name, t.batch_tokens, origin_of(origins, "train.batch_tokens"), t.micro_batch,
              m.seq_len, micro_tokens);
  check_moe(cfg, name, origins);
  const int P = cfg.dist.expert_parallel;
  if (P > 1 && (cfg.moe.n_experts == 0 || cfg.moe.n_experts % P != 0))
    fail_hint("dist.expert_parallel must divide moe.n_experts (and the number of ranks)",
              "{}: dist.expert_parallel ({}, from {}) does not divide moe.n_experts ({}, from {})", name, P,
              origin_of(origins, "dist.expert_parallel"), cfg.moe.n_experts,
              origin_of(origins, "moe.n_experts"));
}

// Escapes '|' so a cell does not split a Markdown table row.
std::string md_cell(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (c == '|') out += '\\';
    out += c;
  }
  return out;
}

std::string one_line(std::string_view text) {
  std::string out(text);
  for (char& c : out)
    if (c == '\n' || c == '\r') c = ' ';
  return out;
}

}  // namespace

Config parse_config(const std::string& yaml_text, const std::string& name,
                    const std::vector<std::string>& overrides) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    fail("{}:{}:{}: invalid YAML: {}", name, line_of(e.mark), col_of(e.mark), e.msg);
  }
  if (root.IsNull())
    fail_hint("start from configs/tiny.yaml, or write 'run: {}' to take every default",
              "{}: the config file is empty", name);
  if (!root.IsMap())
    fail_hint("a config is a map of sections: run:, model:, data:, optim:, train:, ...",
              "{}:{}: the config must be a map of sections, got {}", name,
              line_of(root.Mark()), kind_name(root));

  Config cfg;
  cfg.source = name;
  Origins origins;
  read_document(root, name, cfg, origins);
  for (const std::string& o : overrides) apply_override(o, cfg, origins);
  check_consistency(cfg, name, origins);
  return cfg;
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    fail_hint("paths are relative to the current directory; see configs/ for examples",
              "{}: config file not found", path);
  if (std::filesystem::is_directory(path, ec))
    fail("{}: is a directory, expected a YAML config file", path);
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open the config file", path);
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) fail("{}: cannot read the config file", path);
  return parse_config(text.str(), path, overrides);
}

std::string to_yaml(const Config& cfg) {
  std::string out =
      "# competelm resolved config: every key with its value, defaults included.\n"
      "# Key reference: competelm-config --reference\n";
  if (!cfg.source.empty()) out += fmt::format("# Loaded from: {}\n", one_line(cfg.source));

  for (std::string_view section : schema::sections()) {
    std::vector<std::pair<std::string, std::string_view>> lines;  // "  key: value", comment
    for (const auto& spec : schema::keys())
      if (spec.section() == section)
        lines.emplace_back(fmt::format("  {}: {}", spec.leaf(), schema::format_value(spec, cfg)),
                           spec.description);
    if (lines.empty()) {
      out += fmt::format("\n{}: {{}}\n", section);
      continue;
    }
    std::size_t width = 0;
    for (const auto& [text, comment] : lines) width = std::max(width, text.size());
    out += fmt::format("\n{}:\n", section);
    for (const auto& [text, comment] : lines)
      out += fmt::format("{:<{}}  # {}\n", text, width, comment);
  }
  return out;
}

std::string config_reference_markdown() {
  const Config defaults;
  std::string out =
      "# Configuration reference\n\n"
      "Generated by `competelm-config --reference` from the schema in `src/config/schema.cpp`.\n"
      "Every key is optional (the default applies); unknown keys, wrong types and values out of\n"
      "range are errors. Override any key on the command line with `--set section.key=value`;\n"
      "`competelm-config FILE` prints the fully resolved config.\n";
  for (std::string_view section : schema::sections()) {
    out += fmt::format("\n## `{}`\n\n", section);
    if (section == "moe")
      out +=
          "Mixture-of-Experts FFN layers (CompeteSMoE). With `moe.n_experts: 0` (the default)\n"
          "the model is dense and the other `moe` keys are unused; `moe:` may then be empty or\n"
          "left out. The `competition_*`, `router_coef`, `distill_*`, `diversity_coef` and\n"
          "`competition_balance_coef` keys only act with `moe.router: competesmoe`.\n\n";
    out += "| key | type | default | allowed | description |\n";
    out += "|---|---|---|---|---|\n";
    for (const auto& spec : schema::keys()) {
      if (spec.section() != section) continue;
      out += fmt::format("| `{}` | {} | `{}` | {} | {} |\n", spec.key,
                         schema::type_name(spec.type()),
                         md_cell(schema::format_value(spec, defaults)),
                         md_cell(schema::allowed_text(spec)), md_cell(spec.description));
    }
  }
  return out;
}

}  // namespace competelm
