#pragma once
// Errors that reach the user. Every message names the file, key or offset at fault and,
// where one exists, a hint on how to fix it. Tools catch competelm::Error at main() and
// exit non-zero with the message; nothing else is thrown across module boundaries.
#include <stdexcept>
#include <string>
#include <utility>

#include <fmt/format.h>

namespace competelm {

class Error : public std::runtime_error {
 public:
  explicit Error(std::string message, std::string hint = {})
      : std::runtime_error(std::move(message)), hint_(std::move(hint)) {}
  const std::string& hint() const { return hint_; }

 private:
  std::string hint_;
};

// fail("bad magic {} in {}", m, path): throw an Error with a formatted message.
template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

// Same, with a hint line that tells the user what to do.
template <typename... Args>
[[noreturn]] void fail_hint(const std::string& hint, fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...), hint);
}

}  // namespace competelm

// Internal invariant (a bug if it fires, not a user error).
#define CLM_ASSERT(cond)                                                                  \
  do {                                                                                    \
    if (!(cond))                                                                          \
      throw ::competelm::Error(::fmt::format("internal error: {} failed at {}:{}", #cond, \
                                             __FILE__, __LINE__));                        \
  } while (0)
