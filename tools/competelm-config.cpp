// competelm-config: validate a config and print it fully resolved, or print the key reference.
//
//   competelm-config --reference                  Markdown table of every key
//   competelm-config FILE [--set key=value]...    validate, print the resolved YAML
#include <cstdio>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "config/config.hpp"
#include "core/error.hpp"

namespace {

constexpr const char* kUsage =
    "usage: competelm-config FILE [--set key=value]...\n"
    "       competelm-config --reference\n"
    "\n"
    "Validates the YAML config FILE against the schema, applies the overrides (later ones\n"
    "win) and prints the fully resolved config, every key included.\n"
    "\n"
    "options:\n"
    "  --set key=value   override one key, e.g. --set optim.lr=3e-4 (repeatable)\n"
    "  --reference       print the Markdown reference of every key and exit\n"
    "  -h, --help        print this help and exit\n";

int usage_error(const std::string& message) {
  fmt::print(stderr, "error: {}\n\n{}", message, kUsage);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  std::string file;
  std::vector<std::string> overrides;
  bool reference = false;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "-h" || a == "--help") {
      fmt::print("{}", kUsage);
      return 0;
    } else if (a == "--reference") {
      reference = true;
    } else if (a == "--set") {
      if (i + 1 == args.size()) return usage_error("--set needs a key=value argument");
      overrides.push_back(args[++i]);
    } else if (a.starts_with("--set=")) {
      overrides.push_back(a.substr(6));
    } else if (a.starts_with("-") && a != "-") {
      return usage_error(fmt::format("unknown option '{}'", a));
    } else if (file.empty()) {
      file = a;
    } else {
      return usage_error(fmt::format("more than one config file ('{}' and '{}')", file, a));
    }
  }
  if (reference) {
    if (!file.empty() || !overrides.empty())
      return usage_error("--reference takes no config file or overrides");
    fmt::print("{}", competelm::config_reference_markdown());
    return 0;
  }
  if (file.empty()) return usage_error("no config file given");

  try {
    const competelm::Config cfg = competelm::load_config(file, overrides);
    fmt::print("{}", competelm::to_yaml(cfg));
    return 0;
  } catch (const competelm::Error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    if (!e.hint().empty()) fmt::print(stderr, "hint: {}\n", e.hint());
    return 1;
  }
}
