// Replays the committed fuzz inputs (tests/fuzz/seeds/<target>/*, regressions/<target>/*)
// through every fuzz target, built by the normal compiler: ctest's fuzz.replay runs it in
// every test run, so a parser bug once found by fuzzing stays fixed without clang.
//
//   competelm-fuzz-replay <tests/fuzz dir>               every target, every committed input
//   competelm-fuzz-replay <tests/fuzz dir> TARGET FILE…  one target, the given files (e.g. a
//                                                        crash-* file from scripts/fuzz.sh)
#include <algorithm>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fuzz_targets.hpp"

namespace fs = std::filesystem;
using competelm::fuzz::fuzz_checkpoint;
using competelm::fuzz::fuzz_config;
using competelm::fuzz::fuzz_shard;
using competelm::fuzz::fuzz_tokenizer;

namespace {

struct Target {
  const char* name;
  int (*run)(const uint8_t*, size_t);
};

constexpr Target kTargets[] = {{"config", fuzz_config},
                               {"shard", fuzz_shard},
                               {"checkpoint", fuzz_checkpoint},
                               {"tokenizer", fuzz_tokenizer}};

std::vector<fs::path> files_under(const fs::path& dir) {
  std::vector<fs::path> files;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_regular_file()) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  return files;
}

// Runs one input; a property violation or sanitizer report aborts the process (after the
// file name has been printed), any other escaping exception is counted as a failure.
bool replay(const Target& t, const fs::path& file) {
  std::fprintf(stderr, "%s: %s\n", t.name, file.c_str());
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "  cannot read %s\n", file.c_str());
    return false;
  }
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  try {
    t.run(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "  FAILED: uncaught exception: %s\n", e.what());
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s <tests/fuzz dir> [TARGET FILE...]\n", argv[0]);
    return 2;
  }
  const fs::path root = argv[1];
  int failures = 0;
  if (argc >= 4) {
    const std::string name = argv[2];
    const auto* t = std::find_if(std::begin(kTargets), std::end(kTargets), [&](const Target& x) { return name == x.name; });
    if (t == std::end(kTargets)) {
      std::fprintf(stderr, "unknown target '%s' (config, shard, checkpoint, tokenizer)\n", name.c_str());
      return 2;
    }
    for (int i = 3; i < argc; ++i) failures += !replay(*t, argv[i]);
    return failures ? 1 : 0;
  }
  for (const Target& t : kTargets) {
    const auto seeds = files_under(root / "seeds" / t.name);
    const auto regressions = files_under(root / "regressions" / t.name);
    // An empty seed directory means a wrong path or lost files: fail rather than pass vacuously.
    if (seeds.empty()) {
      std::fprintf(stderr, "%s: no seed inputs under %s\n", t.name, (root / "seeds" / t.name).c_str());
      ++failures;
    }
    for (const auto& f : seeds) failures += !replay(t, f);
    for (const auto& f : regressions) failures += !replay(t, f);
    std::printf("%-10s %zu seeds, %zu regressions replayed\n", t.name, seeds.size(), regressions.size());
  }
  std::printf("%s\n", failures ? "FAILED" : "all fuzz inputs pass");
  return failures ? 1 : 0;
}
