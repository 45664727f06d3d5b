#pragma once
// A small command-line parser shared by the tools: --flag, --opt VALUE / --opt=VALUE,
// repeatable options, positionals, generated --help, errors naming the bad argument.
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace competelm {

class Cli {
 public:
  Cli(std::string program, std::string usage, std::string description);

  // value_name empty → a flag without a value.
  void option(const std::string& name, const std::string& value_name, const std::string& help,
              bool repeatable = false);
  void positional(const std::string& name, const std::string& help, bool many = false,
                  bool required = true);

  // Returns false when --help was asked for (help already printed). Throws Error otherwise.
  bool parse(int argc, char** argv);

  bool has(const std::string& name) const;
  std::string get(const std::string& name, const std::string& fallback = {}) const;
  const std::vector<std::string>& all(const std::string& name) const;  // repeatable / many
  std::string help() const;

 private:
  struct Opt {
    std::string name, value_name, help;
    bool repeatable = false;
  };
  struct Pos {
    std::string name, help;
    bool many = false, required = true;
  };
  std::string program_, usage_, description_;
  std::vector<Opt> opts_;
  std::vector<Pos> pos_;
  std::map<std::string, std::vector<std::string>> values_;
};

// The tools' main(): runs fn, turns competelm::Error (and other exceptions) into a message
// "program: error: ..." (+ "hint: ...") on stderr and exit code 2.
int run_tool(const char* program, const std::function<int(int, char**)>& fn, int argc, char** argv);

}  // namespace competelm
