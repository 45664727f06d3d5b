#pragma once
// Token shards in llm.c's format: a 256×int32 header, then the tokens.
//   header[0] = 20240520 (magic)
//   header[1] = version: 1 → uint16 tokens (llm.c's format, GPT-2 vocab), 2 → uint32 tokens
//               (competelm's extension for vocabularies above 65535)
//   header[2] = number of tokens in the file
// Documents are separated by the end-of-text token (50256 for GPT-2). Shards written by
// llm.c's data scripts load unchanged.
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace competelm {

constexpr int32_t kShardMagic = 20240520;
constexpr int32_t kShardVersionU16 = 1;
constexpr int32_t kShardVersionU32 = 2;
constexpr size_t kShardHeaderInts = 256;
constexpr size_t kShardHeaderBytes = kShardHeaderInts * sizeof(int32_t);

struct ShardInfo {
  std::string path;
  int32_t version = 0;
  uint64_t num_tokens = 0;
  size_t token_bytes() const { return version == kShardVersionU16 ? 2 : 4; }
};

// Reads and validates the header: magic, version, and that the file size equals
// header + num_tokens × token size. Throws competelm::Error naming the file and the field.
ShardInfo read_shard_header(const std::string& path);

// Reads tokens [first, first+count) of a validated shard into out (as uint32).
void read_shard_tokens(const ShardInfo& shard, uint64_t first, uint64_t count, uint32_t* out);

// An open, validated shard for repeated reads (the loader reads one window per sample
// without reopening the file). Reads go through pread, so one reader may serve one thread
// at a time without seeking; a file that shrank since validation gives an Error, not a crash.
class ShardReader {
 public:
  explicit ShardReader(ShardInfo info);  // opens the file read-only
  ~ShardReader();
  ShardReader(ShardReader&& other) noexcept;
  ShardReader& operator=(ShardReader&& other) noexcept;
  ShardReader(const ShardReader&) = delete;
  ShardReader& operator=(const ShardReader&) = delete;

  // Tokens [first, first+count) as uint32; bounds-checked against the header's count.
  void read(uint64_t first, uint64_t count, uint32_t* out) const;
  const ShardInfo& info() const { return info_; }

 private:
  ShardInfo info_;
  int fd_ = -1;
};

// Writes a whole shard atomically (temp file + rename). version 1 requires every token
// < 65536 (throws otherwise, naming the token and its position).
void write_shard(const std::string& path, std::span<const uint32_t> tokens,
                 int32_t version = kShardVersionU16);

// Expands a glob ("data/brown/train_*.bin") to a sorted list of files. A pattern that
// matches nothing is an error naming the pattern (and the config key, when given).
std::vector<std::string> expand_glob(const std::string& pattern, const std::string& what = {});

}  // namespace competelm
