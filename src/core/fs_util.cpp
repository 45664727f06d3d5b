#include "core/fs_util.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>
#include <utility>

#include "core/error.hpp"

namespace competelm {

std::string errno_text(int err) { return std::generic_category().message(err); }

void fail_io(std::string_view action, const std::string& path, int err) {
  fail("{} {}: {}", action, path, errno_text(err));
}

OutputFile::OutputFile(std::string path) : path_(std::move(path)) {
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) fail_io("cannot create", path_, errno);
}

OutputFile::~OutputFile() {
  if (fd_ >= 0) ::close(fd_);
}

void OutputFile::write(const void* data, size_t bytes) {
  CLM_ASSERT(fd_ >= 0);
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    // Linux writes at most ~2 GiB per call; larger requests come back short and are resumed.
    ssize_t n = ::write(fd_, p, bytes);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail_io("write failed for", path_, errno);
    }
    if (n == 0) fail_io("write failed for", path_, ENOSPC);  // no progress: treat as disk full
    p += n;
    bytes -= size_t(n);
    written_ += uint64_t(n);
  }
}

void OutputFile::write_zeros(size_t bytes) {
  static constexpr char kZeros[256] = {};
  while (bytes > 0) {
    size_t n = std::min(bytes, sizeof(kZeros));
    write(kZeros, n);
    bytes -= n;
  }
}

void OutputFile::sync_and_close() {
  CLM_ASSERT(fd_ >= 0);
  if (::fsync(fd_) != 0) {
    int err = errno;
    ::close(fd_);
    fd_ = -1;
    fail_io("fsync failed for", path_, err);
  }
  int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0 && errno != EINTR) fail_io("close failed for", path_, errno);
}

void fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail_io("cannot open directory", dir, errno);
  if (::fsync(fd) != 0) {
    int err = errno;
    ::close(fd);
    // Some filesystems cannot fsync directories; the data files themselves were synced.
    if (err == EINVAL || err == ENOTSUP) return;
    fail_io("fsync failed for directory", dir, err);
  }
  ::close(fd);
}

std::string parent_dir(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

void write_file_atomic(const std::string& path, std::string_view content) {
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  try {
    OutputFile f(tmp);
    f.write(content.data(), content.size());
    f.sync_and_close();
    if (::rename(tmp.c_str(), path.c_str()) != 0) fail_io("cannot rename " + tmp + " to", path, errno);
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  fsync_dir(parent_dir(path));
}

std::string read_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail_io("cannot open", path, errno);
  std::string out;
  struct stat st {};
  if (::fstat(fd, &st) == 0 && st.st_size > 0) out.reserve(size_t(st.st_size));
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      fail_io("read failed for", path, err);
    }
    if (n == 0) break;
    out.append(buf, size_t(n));
  }
  ::close(fd);
  return out;
}

}  // namespace competelm
