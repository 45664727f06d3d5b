#pragma once
// Token shards in llm.c's format: a 256×int32 header, then the tokens.
//   header[0] = 20240520 (magic)
//   header[1] = version: 1 → uint16 tokens (llm.c's format, GPT-2 vocab), 2 → uint32 tokens
//               (competelm's extension for vocabularies above 65535)
//   header[2] = number of tokens in the file
// competelm's body checksum, in slots llm.c leaves zero and its readers ignore (so shards
// we write still load in llm.c):
//   header[3] = kShardChecksumTag: the body checksum below is present
//   header[4] = low 32 bits, header[5] = high 32 bits of checksum64 (XXH64, seed 0) of the
//               token bytes exactly as stored after the header
//   header[6..255] = 0 (checked when the tag is present)
// Shards from llm.c (header[3] = 0) carry no checksum and load as before: for them only the
// header and the file size are checked, plus the token range (ids ≥ vocab_size are refused
// by the loader when LoaderOptions::vocab_size is set, and by the model's forward). Any other value in header[3] is refused, so a flipped byte there
// cannot silently switch the check off.
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
constexpr int32_t kShardChecksumTag = 0x34364858;  // the bytes "XH64" on disk
constexpr size_t kShardChecksumTagSlot = 3;
constexpr size_t kShardChecksumLoSlot = 4;
constexpr size_t kShardChecksumHiSlot = 5;
constexpr size_t kShardFirstReservedSlot = 6;

struct ShardInfo {
  std::string path;
  int32_t version = 0;
  uint64_t num_tokens = 0;
  bool has_checksum = false;   // header[3] holds kShardChecksumTag
  uint64_t body_checksum = 0;  // checksum64 of the token bytes, when has_checksum
  size_t token_bytes() const { return version == kShardVersionU16 ? 2 : 4; }
};

// Reads and validates the header: magic, version, the checksum slots, and that the file size
// equals header + num_tokens × token size. Throws competelm::Error naming the file and the
// field. Cheap (one 1 KiB read): the body is checked by verify_shard_body.
ShardInfo read_shard_header(const std::string& path);

// Hashes the token bytes of a shard with a body checksum and refuses a mismatch (an Error
// naming the file); a shard without one (llm.c's) passes unchecked. Cost: one sequential
// pass over the file, ~1.9 GB/s on one core from the page cache (test "[data-bench]"), so
// e.g. ~10 s per process for a 10B-token (20 GB) corpus, or disk speed when not cached.
void verify_shard_body(const ShardInfo& shard);

// Reads tokens [first, first+count) of a validated shard into out (as uint32). Opens a
// ShardReader, so the body checksum is verified on every call: for one-off reads only.
void read_shard_tokens(const ShardInfo& shard, uint64_t first, uint64_t count, uint32_t* out);

// An open, validated shard for repeated reads (the loader reads one window per sample
// without reopening the file). Opening verifies the body checksum (verify_shard_body), so a
// corrupt shard is refused before any of its tokens is used; the loader opens every shard
// when it is built, i.e. before the first step. A file changed in place after that is
// caught only when its size changed. Reads go through pread, so one reader may serve one thread
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

// Writes a whole shard atomically (temp file + rename), with the body checksum in the
// header. version 1 requires every token < 65536 (throws otherwise, naming the token and
// its position).
void write_shard(const std::string& path, std::span<const uint32_t> tokens,
                 int32_t version = kShardVersionU16);

// Expands a glob ("data/brown/train_*.bin") to a sorted list of files. A pattern that
// matches nothing is an error naming the pattern (and the config key, when given).
std::vector<std::string> expand_glob(const std::string& pattern, const std::string& what = {});

}  // namespace competelm
