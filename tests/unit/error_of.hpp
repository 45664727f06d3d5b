#pragma once
// The message of the competelm::Error a callable throws, or "" when it throws none.
#include <string>

#include "core/error.hpp"

namespace competelm::testing {

template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace competelm::testing
