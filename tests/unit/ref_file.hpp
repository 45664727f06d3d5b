#pragma once
// Reader of the PyTorch reference files (format: tests/reference/reffile.py): magic
// "CLMREF01", uint32 record count, then per record a name, a dtype (0 = float64, else int32),
// the dims and the data. Shared by the dense and MoE reference tests.
#include <cstdint>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "core/error.hpp"

// GCC 13 flags `const Record& r = get(ref, "name")` as a dangling reference because the
// name is a temporary string; the reference points into `ref`, which outlives it.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 13
#pragma GCC diagnostic ignored "-Wdangling-reference"
#endif

namespace competelm::testing {

// One record of the reference file: float64 or int32 data with its shape.
struct Record {
  std::vector<int64_t> dims;
  std::vector<double> f64;
  std::vector<int32_t> i32;
  size_t numel() const { return f64.empty() ? i32.size() : f64.size(); }
};
using RefFile = std::map<std::string, Record>;

inline RefFile read_ref_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(fmt::format("cannot open reference file {}", path));
  auto read = [&](void* dst, size_t bytes) {
    in.read(static_cast<char*>(dst), static_cast<std::streamsize>(bytes));
    if (!in) throw Error(fmt::format("{}: truncated reference file", path));
  };
  char magic[8];
  read(magic, 8);
  if (std::string(magic, 8) != "CLMREF01") throw Error(fmt::format("{}: bad magic", path));
  uint32_t count = 0;
  read(&count, 4);
  RefFile out;
  for (uint32_t r = 0; r < count; ++r) {
    uint32_t name_len = 0, dtype = 0, ndim = 0;
    read(&name_len, 4);
    std::string name(name_len, '\0');
    read(name.data(), name_len);
    read(&dtype, 4);
    read(&ndim, 4);
    Record rec;
    rec.dims.resize(ndim);
    if (ndim) read(rec.dims.data(), 8 * ndim);
    size_t n = 1;
    for (int64_t d : rec.dims) n *= static_cast<size_t>(d);
    if (dtype == 0) {
      rec.f64.resize(n);
      read(rec.f64.data(), 8 * n);
    } else {
      rec.i32.resize(n);
      read(rec.i32.data(), 4 * n);
    }
    out.emplace(std::move(name), std::move(rec));
  }
  return out;
}

inline const Record& get(const RefFile& ref, const std::string& name) {
  auto it = ref.find(name);
  if (it == ref.end()) throw Error(fmt::format("reference file has no record '{}'", name));
  return it->second;
}

}  // namespace competelm::testing
