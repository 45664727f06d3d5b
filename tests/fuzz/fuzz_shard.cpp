// Fuzz target: the token shard reader (data/shard.cpp). Input: the bytes of a shard file.
// Property: a shard that validates reads back exactly the tokens stored after its header
// (uint16 widened to uint32), whole and in windows, and refuses reads past its end.
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "data/shard.hpp"
#include "fuzz_targets.hpp"

namespace competelm::fuzz {

namespace {

// Token i as the file stores it, decoded independently of shard.cpp.
uint32_t stored_token(const uint8_t* data, size_t token_bytes, uint64_t i) {
  const uint8_t* p = data + kShardHeaderBytes + i * token_bytes;
  uint32_t v = 0;
  for (size_t b = 0; b < token_bytes; ++b) v |= uint32_t(p[b]) << (8 * b);
  return v;
}

void check_window(const ShardReader& reader, const uint8_t* data, uint64_t first, uint64_t count) {
  std::vector<uint32_t> got(count + 1, 0xDEADBEEF);  // one sentinel past the window
  reader.read(first, count, got.data());
  for (uint64_t i = 0; i < count; ++i)
    if (got[i] != stored_token(data, reader.info().token_bytes(), first + i))
      property_failed("shard token differs from the file's bytes",
                      "token " + std::to_string(first + i) + ": read " + std::to_string(got[i]));
  if (got[count] != 0xDEADBEEF) property_failed("shard read wrote past the requested window", "");
}

}  // namespace

int fuzz_shard(const uint8_t* data, size_t size) {
  const std::string path = scratch_dir() + "/shard.bin";
  write_bytes(path, data, size);
  ShardInfo info;
  try {
    info = read_shard_header(path);
  } catch (const Error&) {
    return 0;
  }
  // Validation promised: the file holds exactly the header plus num_tokens tokens.
  if (kShardHeaderBytes + info.num_tokens * info.token_bytes() != size)
    property_failed("read_shard_header accepted a file whose size does not match its header",
                    std::to_string(info.num_tokens) + " tokens, " + std::to_string(size) + " bytes");
  // Opening verifies the body checksum when the header carries one: a mismatch must be refused
  // with an Error (a header whose checksum matches, or an llm.c header without one, must open).
  std::optional<ShardReader> opened;
  try {
    opened.emplace(info);
  } catch (const Error&) {
    if (!info.has_checksum) property_failed("ShardReader refused a shard without a body checksum", info.path);
    return 0;
  }
  const ShardReader& reader = *opened;
  const uint64_t n = info.num_tokens;
  check_window(reader, data, 0, n);
  if (n > 0) {
    check_window(reader, data, n / 2, n - n / 2);
    check_window(reader, data, n - 1, 1);
  }
  check_window(reader, data, n, 0);
  // Reads past the end must be refused with an Error, never served from beyond the file.
  uint32_t scratch[2];
  for (auto [first, count] : {std::pair<uint64_t, uint64_t>{n, 1}, {0, n + 1}, {n + 1, 0},
                              {UINT64_MAX, 2}, {1, UINT64_MAX}}) {
    bool refused = false;
    try {
      reader.read(first, count, scratch);
    } catch (const Error&) {
      refused = true;
    }
    if (!refused)
      property_failed("out-of-range shard read was not refused",
                      "first " + std::to_string(first) + " count " + std::to_string(count));
  }
  return 0;
}

}  // namespace competelm::fuzz
