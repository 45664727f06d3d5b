#pragma once
// competelm-eval's output: one readable table for the console and the same numbers as one
// JSON document (the schema is described in docs/eval.md).
#include <cstdint>
#include <optional>
#include <string>

#include "eval/lm_eval.hpp"
#include "eval/multiple_choice.hpp"

namespace competelm {

struct EvalReport {
  std::string checkpoint;   // directory
  int64_t step = 0;
  std::string device;
  std::string router;       // "" for a dense model
  int B = 0, T = 0;
  std::optional<LmEvalResult> lm;
  std::string mc_file;
  std::optional<McResult> mc;
};

std::string eval_table(const EvalReport& r);
std::string eval_json(const EvalReport& r);  // one line, no trailing newline

}  // namespace competelm
