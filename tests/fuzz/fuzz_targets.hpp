#pragma once
// The fuzz targets: one per input parser. Each takes arbitrary bytes, feeds them to the parser
// the way a file on disk would reach it, and returns 0. A competelm::Error is the expected
// answer to bad input and is swallowed; anything else (a crash, a sanitizer report, another
// exception type, a broken round-trip property, a hang or a huge allocation) is a bug.
//
// The same functions serve two drivers:
//   - libFuzzer (scripts/fuzz.sh): libfuzzer_entry.cpp turns one of them into
//     LLVMFuzzerTestOneInput, compiled by clang with -fsanitize=fuzzer,address,undefined;
//   - the replay test (replay_main.cpp, ctest fuzz.replay): runs every committed seed and
//     regression input through all of them, built by the normal compiler, no clang needed.
#include <cstddef>
#include <cstdint>
#include <string>

namespace competelm::fuzz {

int fuzz_config(const uint8_t* data, size_t size);      // YAML config text (+ --set overrides)
int fuzz_shard(const uint8_t* data, size_t size);       // token shard file
int fuzz_checkpoint(const uint8_t* data, size_t size);  // meta.json or a CLMTENS tensor file
int fuzz_tokenizer(const uint8_t* data, size_t size);   // text, token ids, encoder.json, vocab.bpe

// A scratch directory private to this process (created on first use, removed at exit).
const std::string& scratch_dir();
// Writes `bytes` to `path` (created or truncated); aborts on failure, which is the harness's
// fault, not the parser's.
void write_bytes(const std::string& path, const void* bytes, size_t size);

// Reports a broken property (not a parser error) and aborts, so that libFuzzer records the
// input and the replay test fails.
[[noreturn]] void property_failed(const char* what, const std::string& detail);

}  // namespace competelm::fuzz
