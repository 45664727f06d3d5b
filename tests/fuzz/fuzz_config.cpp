// Fuzz target: the YAML config loader (config/config.cpp, schema.cpp, moe_layers.cpp).
// Input: the YAML text, optionally followed by NUL-separated --set overrides
// ("key.sub=value"). Property: a config that loads writes back (to_yaml) as YAML that loads
// again to the same resolved config.
#include <string>
#include <vector>

#include "config/config.hpp"
#include "core/error.hpp"
#include "fuzz_targets.hpp"

namespace competelm::fuzz {

int fuzz_config(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  size_t end = input.find('\0');
  const std::string yaml = input.substr(0, end);
  std::vector<std::string> overrides;
  while (end != std::string::npos && overrides.size() < 8) {
    const size_t next = input.find('\0', end + 1);
    overrides.push_back(input.substr(end + 1, next == std::string::npos ? next : next - end - 1));
    end = next;
  }

  std::string resolved;
  try {
    resolved = to_yaml(parse_config(yaml, "fuzz.yaml", overrides));
  } catch (const Error&) {
    return 0;  // rejected with a message: the expected outcome for most inputs
  }
  // Outside the try: the resolved config failing to load is a bug, not a user error.
  Config again;
  try {
    again = parse_config(resolved, "resolved.yaml");
  } catch (const Error& e) {
    property_failed("to_yaml() of a loaded config does not load again", std::string(e.what()) + "\n" + resolved);
  }
  // The first line names the source file, which differs by construction.
  again.source = "fuzz.yaml";
  const std::string twice = to_yaml(again);
  if (twice != resolved) property_failed("to_yaml(parse(to_yaml(c))) != to_yaml(c)", resolved + "\n----\n" + twice);
  return 0;
}

}  // namespace competelm::fuzz
