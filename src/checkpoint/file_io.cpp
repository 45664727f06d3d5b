#include "checkpoint/file_io.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>

#include "checkpoint/fault_injection.hpp"
#include "core/error.hpp"

namespace competelm {

namespace {

// Test-only disk-full simulation (fault_injection.hpp); -1 = disarmed.
std::atomic<long> g_fault_bytes_left{-1};

constexpr size_t kReadBuffer = 1 << 16;

}  // namespace

void set_checkpoint_write_fault_after(long bytes) { g_fault_bytes_left.store(bytes < 0 ? -1 : bytes); }

std::string checksum_hex(uint64_t checksum) { return fmt::format("{:016x}", checksum); }

CheckpointFileWriter::CheckpointFileWriter(std::string name, const std::string& dir)
    : name_(std::move(name)), out_(dir + "/" + name_) {}

void CheckpointFileWriter::write(const void* data, size_t bytes) {
  if (bytes == 0) return;  // data may be null (empty tensor)
  long left = g_fault_bytes_left.load();
  if (left >= 0 && bytes > size_t(left)) {
    out_.write(data, size_t(left));  // the part that "fits", like a real short write
    g_fault_bytes_left.store(0);
    fail_io("write failed for", out_.path(), ENOSPC);
  }
  if (left >= 0) g_fault_bytes_left.store(left - long(bytes));
  out_.write(data, bytes);
  hash_.update(data, bytes);
}

void CheckpointFileWriter::write_zeros(size_t bytes) {
  static constexpr char kZeros[64] = {};
  while (bytes > 0) {
    size_t n = std::min(bytes, sizeof(kZeros));
    write(kZeros, n);
    bytes -= n;
  }
}

CheckpointFile CheckpointFileWriter::finish() {
  out_.sync_and_close();
  return CheckpointFile{name_, out_.bytes_written(), hash_.digest()};
}

CheckpointFileReader::CheckpointFileReader(const std::string& dir, const CheckpointFile& expect)
    : path_(dir + "/" + expect.name), expect_(expect) {
  fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) fail_io("cannot open checkpoint file", path_, errno);
  struct stat st {};
  if (::fstat(fd_, &st) != 0) fail_io("cannot stat", path_, errno);
  size_ = uint64_t(st.st_size);
  if (size_ != expect.bytes)
    fail("{}: size mismatch: meta.json lists {} bytes but the file has {} (truncated or "
         "corrupted?)", path_, expect.bytes, size_);
}

CheckpointFileReader::~CheckpointFileReader() {
  if (fd_ >= 0) ::close(fd_);
}

void CheckpointFileReader::raw_read(char* dst, size_t bytes) {
  char* p = dst;
  size_t left = bytes;
  while (left > 0) {
    ssize_t n = ::read(fd_, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail_io("read failed for", path_, errno);
    }
    if (n == 0) fail("{}: unexpected end of file (file shrank while reading?)", path_);
    p += n;
    left -= size_t(n);
  }
  bytes_read_ += bytes;
  hash_.update(dst, bytes);
}

void CheckpointFileReader::read_at(uint64_t offset, void* dst, size_t bytes) {
  if (offset > size_ || bytes > size_ - offset)
    fail("{}: truncated: needs {} bytes at offset {} but the file has {}", path_, bytes, offset, size_);
  char* p = static_cast<char*>(dst);
  size_t left = bytes;
  uint64_t at = offset;
  while (left > 0) {
    ssize_t n = ::pread(fd_, p, left, off_t(at));
    if (n < 0) {
      if (errno == EINTR) continue;
      fail_io(fmt::format("read at offset {} failed for", at), path_, errno);
    }
    if (n == 0) fail("{}: unexpected end of file at offset {} (file shrank while reading?)", path_, at);
    p += n;
    at += uint64_t(n);
    left -= size_t(n);
  }
  bytes_read_ += bytes;
}

void CheckpointFileReader::read(void* dst, size_t bytes) {
  if (bytes > size_ - pos_)
    fail("{}: truncated: needs {} bytes at offset {} but the file has {}", path_, bytes, pos_, size_);
  if (bytes == 0) return;  // dst may be null (empty tensor)
  char* out = static_cast<char*>(dst);
  size_t left = bytes;
  // Serve from the buffer first; large reads go straight into dst.
  size_t avail = buf_.size() - buf_pos_;
  size_t take = std::min(avail, left);
  std::memcpy(out, buf_.data() + buf_pos_, take);
  buf_pos_ += take;
  out += take;
  left -= take;
  if (left >= kReadBuffer) {
    raw_read(out, left);
    left = 0;
  } else if (left > 0) {
    // Refill: the stream position of the fd is pos_ + bytes already buffered (all consumed).
    size_t fill = size_t(std::min<uint64_t>(kReadBuffer, size_ - (pos_ + take)));
    buf_.resize(fill);
    raw_read(buf_.data(), fill);
    std::memcpy(out, buf_.data(), left);
    buf_pos_ = left;
  }
  pos_ += bytes;
}

void CheckpointFileReader::skip(size_t bytes) {
  char scratch[4096];
  while (bytes > 0) {
    size_t n = std::min(bytes, sizeof(scratch));
    read(scratch, n);
    bytes -= n;
  }
}

void CheckpointFileReader::finish() {
  if (pos_ != size_) fail("{}: {} unexpected trailing bytes after offset {}", path_, size_ - pos_, pos_);
  uint64_t got = hash_.digest();
  if (got != expect_.checksum)
    fail_hint("the file changed after it was written; resume from an earlier checkpoint",
              "{}: checksum mismatch (file corrupted?): meta.json lists {}, file hashes to {}",
              path_, checksum_hex(expect_.checksum), checksum_hex(got));
}

void verify_checkpoint_file(const std::string& dir, const CheckpointFile& expect) {
  CheckpointFileReader r(dir, expect);
  std::string chunk(1 << 20, '\0');
  while (r.pos() < r.size()) {
    size_t n = size_t(std::min<uint64_t>(chunk.size(), r.size() - r.pos()));
    r.read(chunk.data(), n);
  }
  r.finish();
}

}  // namespace competelm
