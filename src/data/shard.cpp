#include "data/shard.hpp"

#include <fcntl.h>
#include <glob.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>
#include <utility>

#include "checkpoint/checksum.hpp"
#include "core/error.hpp"

namespace competelm {

// The on-disk format is little-endian (llm.c writes it with numpy on x86).
static_assert(std::endian::native == std::endian::little, "token shards assume a little-endian host");

namespace {

std::string errno_text() { return std::strerror(errno); }

// Closes a file descriptor on scope exit.
struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

// pread until count bytes arrived or the file ends; returns the bytes read.
size_t pread_full(int fd, void* buf, size_t count, uint64_t offset) {
  auto* p = static_cast<char*>(buf);
  size_t done = 0;
  while (done < count) {
    ssize_t n = ::pread(fd, p + done, count - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return done;
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  return done;
}

void write_full(int fd, const void* buf, size_t count, const std::string& path) {
  const auto* p = static_cast<const char*>(buf);
  size_t done = 0;
  while (done < count) {
    ssize_t n = ::write(fd, p + done, count - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("{}: write failed: {}", path, errno_text());
    }
    done += static_cast<size_t>(n);
  }
}

const char* token_type_name(int32_t version) { return version == kShardVersionU16 ? "uint16" : "uint32"; }

constexpr const char* kCorruptHint =
    "the shard is corrupt: re-create it with competelm-tokenize (or copy it again from its source)";

// checksum64 of the token bytes of an open shard, read in chunks (one sequential pass).
uint64_t hash_body(int fd, const ShardInfo& shard) {
  const uint64_t total = shard.num_tokens * shard.token_bytes();
  std::vector<unsigned char> buf(std::min<uint64_t>(total, uint64_t{1} << 20));
  Checksum64Stream hash;
  for (uint64_t done = 0; done < total;) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), total - done));
    const size_t got = pread_full(fd, buf.data(), want, kShardHeaderBytes + done);
    if (got != want)
      fail("{}: reading the token bytes at byte offset {} for the body checksum returned {} of {} bytes "
           "(file truncated or changed since its header was validated?)",
           shard.path, kShardHeaderBytes + done, got, want);
    hash.update(buf.data(), got);
    done += got;
  }
  return hash.digest();
}

void verify_body(int fd, const ShardInfo& shard) {
  if (!shard.has_checksum) return;  // an llm.c shard: nothing to compare against
  const uint64_t have = hash_body(fd, shard);
  if (have != shard.body_checksum)
    fail_hint(kCorruptHint,
              "{}: body checksum does not match: the {} token bytes after the header hash to {:016x}, "
              "the header (ints {}-{}) says {:016x}",
              shard.path, shard.num_tokens * shard.token_bytes(), have, kShardChecksumLoSlot,
              kShardChecksumHiSlot, shard.body_checksum);
}

}  // namespace

ShardInfo read_shard_header(const std::string& path) {
  Fd f(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (f.fd < 0) fail("{}: cannot open token shard: {}", path, errno_text());
  struct stat st {};
  if (::fstat(f.fd, &st) != 0) fail("{}: cannot stat token shard: {}", path, errno_text());
  if (!S_ISREG(st.st_mode)) fail("{}: not a regular file (expected an llm.c token shard)", path);
  const uint64_t file_bytes = static_cast<uint64_t>(st.st_size);
  if (file_bytes < kShardHeaderBytes)
    fail("{}: file holds {} bytes, less than the {}-byte shard header (truncated? not an llm.c token shard?)",
         path, file_bytes, kShardHeaderBytes);

  int32_t header[kShardHeaderInts];
  if (pread_full(f.fd, header, kShardHeaderBytes, 0) != kShardHeaderBytes)
    fail("{}: cannot read the {}-byte shard header: {}", path, kShardHeaderBytes, errno_text());

  if (header[0] != kShardMagic)
    fail("{}: bad magic {} (expected {}): not an llm.c token shard", path, header[0], kShardMagic);
  const int32_t version = header[1];
  if (version != kShardVersionU16 && version != kShardVersionU32)
    fail("{}: unsupported shard version {} (expected {} = uint16 tokens or {} = uint32 tokens)", path,
         version, kShardVersionU16, kShardVersionU32);
  if (header[2] < 0) fail("{}: header says {} tokens (expected a count >= 0)", path, header[2]);

  ShardInfo info;
  info.path = path;
  info.version = version;
  info.num_tokens = static_cast<uint64_t>(header[2]);

  // The body checksum slots (see shard.hpp). llm.c leaves header[3] zero: no checksum.
  const int32_t tag = header[kShardChecksumTagSlot];
  if (tag == kShardChecksumTag) {
    info.has_checksum = true;
    info.body_checksum = static_cast<uint64_t>(static_cast<uint32_t>(header[kShardChecksumLoSlot])) |
                         static_cast<uint64_t>(static_cast<uint32_t>(header[kShardChecksumHiSlot])) << 32;
    for (size_t i = kShardFirstReservedSlot; i < kShardHeaderInts; ++i)
      if (header[i] != 0)
        fail_hint(kCorruptHint, "{}: header int {} (byte offset {}) is {}, expected 0 in a shard with a body checksum",
                  path, i, i * sizeof(int32_t), header[i]);
  } else if (tag != 0) {
    fail_hint(kCorruptHint,
              "{}: header int {} (byte offset {}) is {:#010x}: expected 0 (llm.c shard, no body checksum) or "
              "{:#010x} (body checksum present)",
              path, kShardChecksumTagSlot, kShardChecksumTagSlot * sizeof(int32_t), static_cast<uint32_t>(tag),
              static_cast<uint32_t>(kShardChecksumTag));
  }
  const uint64_t want = info.num_tokens * info.token_bytes();
  const uint64_t have = file_bytes - kShardHeaderBytes;
  if (have != want)
    fail("{}: header says {} tokens ({} bytes of {}) but the file holds {} bytes after the header ({})", path,
         info.num_tokens, want, token_type_name(version), have,
         have < want ? "truncated?" : "extra bytes after the tokens?");
  return info;
}

ShardReader::ShardReader(ShardInfo info) : info_(std::move(info)) {
  fd_ = ::open(info_.path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) fail("{}: cannot open token shard: {}", info_.path, errno_text());
  try {
    verify_body(fd_, info_);
  } catch (...) {
    ::close(fd_);
    fd_ = -1;
    throw;
  }
}

void verify_shard_body(const ShardInfo& shard) {
  Fd f(::open(shard.path.c_str(), O_RDONLY | O_CLOEXEC));
  if (f.fd < 0) fail("{}: cannot open token shard: {}", shard.path, errno_text());
  verify_body(f.fd, shard);
}

ShardReader::~ShardReader() {
  if (fd_ >= 0) ::close(fd_);
}

ShardReader::ShardReader(ShardReader&& other) noexcept
    : info_(std::move(other.info_)), fd_(std::exchange(other.fd_, -1)) {}

ShardReader& ShardReader::operator=(ShardReader&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    info_ = std::move(other.info_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

void ShardReader::read(uint64_t first, uint64_t count, uint32_t* out) const {
  if (first > info_.num_tokens || count > info_.num_tokens - first)
    fail("{}: read of tokens [{}, {}) is past the end of the shard ({} tokens)", info_.path, first,
         first + count, info_.num_tokens);
  if (count == 0) return;
  const size_t tb = info_.token_bytes();
  const size_t bytes = count * tb;
  const size_t got = pread_full(fd_, out, bytes, kShardHeaderBytes + first * tb);
  if (got != bytes)
    fail("{}: read of tokens [{}, {}) returned {} of {} bytes (file changed since it was validated?)",
         info_.path, first, first + count, got, bytes);
  if (tb == 2) {
    // Widen uint16 → uint32 in place, from the back: element i is written at byte 4i,
    // which only overlaps uint16 elements 2i and 2i+1, already consumed.
    auto* bytes_in = reinterpret_cast<const unsigned char*>(out);
    for (uint64_t i = count; i-- > 0;) {
      uint16_t v;
      std::memcpy(&v, bytes_in + 2 * i, sizeof v);
      out[i] = v;
    }
  }
}

void read_shard_tokens(const ShardInfo& shard, uint64_t first, uint64_t count, uint32_t* out) {
  ShardReader(shard).read(first, count, out);
}

void write_shard(const std::string& path, std::span<const uint32_t> tokens, int32_t version) {
  if (version != kShardVersionU16 && version != kShardVersionU32)
    fail("{}: cannot write shard version {} (expected {} = uint16 or {} = uint32)", path, version,
         kShardVersionU16, kShardVersionU32);
  if (tokens.size() > static_cast<size_t>(INT32_MAX))
    fail("{}: {} tokens do not fit one shard (the header's count is an int32; at most {})", path,
         tokens.size(), INT32_MAX);
  if (version == kShardVersionU16) {
    for (size_t i = 0; i < tokens.size(); ++i)
      if (tokens[i] > 0xFFFF)
        fail_hint("write version 2 (uint32 tokens) for vocabularies above 65535",
                  "{}: token {} at position {} does not fit in uint16 (shard version 1)", path, tokens[i], i);
  }

  int32_t header[kShardHeaderInts] = {};
  header[0] = kShardMagic;
  header[1] = version;
  header[2] = static_cast<int32_t>(tokens.size());
  header[kShardChecksumTagSlot] = kShardChecksumTag;
  // The header goes first with the checksum slots still zero; they are filled in with a
  // pwrite once the body (hashed as it streams out) is written.

  // Write beside the target, then rename: a reader never sees a half-written shard.
  const std::string tmp = fmt::format("{}.tmp.{}", path, ::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("{}: cannot create temporary shard file: {}", tmp, errno_text());
  try {
    write_full(fd, header, kShardHeaderBytes, tmp);
    Checksum64Stream hash;
    if (version == kShardVersionU32) {
      write_full(fd, tokens.data(), tokens.size_bytes(), tmp);
      hash.update(tokens.data(), tokens.size_bytes());
    } else {
      std::vector<uint16_t> chunk;
      constexpr size_t kChunk = size_t{1} << 16;
      for (size_t i = 0; i < tokens.size(); i += kChunk) {
        const size_t n = std::min(kChunk, tokens.size() - i);
        chunk.resize(n);
        for (size_t j = 0; j < n; ++j) chunk[j] = static_cast<uint16_t>(tokens[i + j]);
        write_full(fd, chunk.data(), n * sizeof(uint16_t), tmp);
        hash.update(chunk.data(), n * sizeof(uint16_t));
      }
    }
    const uint64_t sum = hash.digest();
    const uint32_t slots[2] = {static_cast<uint32_t>(sum), static_cast<uint32_t>(sum >> 32)};
    const off_t at = static_cast<off_t>(kShardChecksumLoSlot * sizeof(int32_t));
    if (::pwrite(fd, slots, sizeof slots, at) != static_cast<ssize_t>(sizeof slots))
      fail("{}: writing the body checksum into the header failed: {}", tmp, errno_text());
    if (::fsync(fd) != 0) fail("{}: fsync failed: {}", tmp, errno_text());
    const int rc = ::close(fd);
    fd = -1;
    if (rc != 0) fail("{}: close failed: {}", tmp, errno_text());
    if (::rename(tmp.c_str(), path.c_str()) != 0)
      fail("{}: cannot rename {} into place: {}", path, tmp, errno_text());
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  // Make the rename itself durable (best effort: some filesystems refuse fsync on a directory).
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  const std::string dir = parent.empty() ? std::string(".") : parent.string();
  Fd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (d.fd >= 0) (void)::fsync(d.fd);
}

std::vector<std::string> expand_glob(const std::string& pattern, const std::string& what) {
  const std::string who = what.empty() ? std::string("data") : what;
  glob_t g{};
  const int rc = ::glob(pattern.c_str(), 0, nullptr, &g);
  std::vector<std::string> files;
  if (rc == 0)
    for (size_t i = 0; i < g.gl_pathc; ++i) files.emplace_back(g.gl_pathv[i]);
  ::globfree(&g);
  if (rc == GLOB_NOMATCH || (rc == 0 && files.empty()))
    fail_hint("run scripts/prepare_data.sh to build the default corpus", "{}: pattern '{}' matches no file",
              who, pattern);
  if (rc != 0)
    fail("{}: cannot expand pattern '{}' ({})", who, pattern,
         rc == GLOB_ABORTED ? "read error" : rc == GLOB_NOSPACE ? "out of memory" : "glob error");
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace competelm
