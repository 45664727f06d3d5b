#include "core/cli.hpp"

#include <cstdio>
#include <exception>

#include "core/error.hpp"

namespace competelm {

Cli::Cli(std::string program, std::string usage, std::string description)
    : program_(std::move(program)), usage_(std::move(usage)), description_(std::move(description)) {
  option("help", "", "show this help and exit");
}

void Cli::option(const std::string& name, const std::string& value_name, const std::string& help,
                 bool repeatable) {
  opts_.push_back({name, value_name, help, repeatable});
}

void Cli::positional(const std::string& name, const std::string& help, bool many, bool required) {
  pos_.push_back({name, help, many, required});
}

bool Cli::parse(int argc, char** argv) {
  size_t next_pos = 0;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.size() > 2 && arg.starts_with("--")) {
      std::string name = arg.substr(2), value;
      bool has_value = false;
      if (auto eq = name.find('='); eq != std::string::npos) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
        has_value = true;
      }
      const Opt* opt = nullptr;
      for (const Opt& o : opts_)
        if (o.name == name) opt = &o;
      if (!opt) fail_hint(fmt::format("run '{} --help' for the options", program_), "unknown option '--{}'", name);
      if (name == "help") {
        std::fputs(help().c_str(), stdout);
        return false;
      }
      if (opt->value_name.empty()) {
        if (has_value) fail("option '--{}' takes no value", name);
        values_[name].push_back("1");
        continue;
      }
      if (!has_value) {
        if (i + 1 >= argc) fail("option '--{}' needs a value ({})", name, opt->value_name);
        value = argv[++i];
      }
      if (!opt->repeatable && values_.count(name)) fail("option '--{}' given twice", name);
      values_[name].push_back(value);
    } else {
      if (next_pos >= pos_.size())
        fail_hint(fmt::format("run '{} --help' for the usage", program_), "unexpected argument '{}'", arg);
      values_[pos_[next_pos].name].push_back(arg);
      if (!pos_[next_pos].many) ++next_pos;
    }
  }
  for (const Pos& p : pos_)
    if (p.required && !values_.count(p.name))
      fail_hint(fmt::format("usage: {} {}", program_, usage_), "missing argument {}", p.name);
  return true;
}

bool Cli::has(const std::string& name) const { return values_.count(name) > 0; }

std::string Cli::get(const std::string& name, const std::string& fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second.back();
}

const std::vector<std::string>& Cli::all(const std::string& name) const {
  static const std::vector<std::string> empty;
  auto it = values_.find(name);
  return it == values_.end() ? empty : it->second;
}

std::string Cli::help() const {
  std::string out = fmt::format("usage: {} {}\n\n{}\n", program_, usage_, description_);
  if (!pos_.empty()) {
    out += "\narguments:\n";
    for (const Pos& p : pos_) out += fmt::format("  {:<26} {}\n", p.name, p.help);
  }
  out += "\noptions:\n";
  for (const Opt& o : opts_) {
    const std::string lhs = "--" + o.name + (o.value_name.empty() ? "" : " " + o.value_name);
    out += fmt::format("  {:<26} {}{}\n", lhs, o.help, o.repeatable ? " (repeatable)" : "");
  }
  return out;
}

int run_tool(const char* program, const std::function<int(int, char**)>& fn, int argc, char** argv) {
  try {
    return fn(argc, argv);
  } catch (const Error& e) {
    std::fprintf(stderr, "%s: error: %s\n", program, e.what());
    if (!e.hint().empty()) std::fprintf(stderr, "%s: hint: %s\n", program, e.hint().c_str());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: error: %s\n", program, e.what());
    return 2;
  }
}

}  // namespace competelm
