#pragma once
// Durable file I/O for checkpoints, run records and logs: every write() return value is
// checked (short writes resumed, EINTR retried), data is fsynced before it is relied on, and
// small files are replaced atomically (temp file + fsync + rename + directory fsync).
// Failures throw competelm::Error naming the file and the OS error text (e.g. ENOSPC →
// "No space left on device").
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace competelm {

// The OS text for an errno value ("No space left on device"); thread-safe.
std::string errno_text(int err);

// Throws Error("<action> <path>: <errno text>").
[[noreturn]] void fail_io(std::string_view action, const std::string& path, int err);

// A file opened for writing (created or truncated, mode 0644). Writes go straight to the
// fd (no user-space buffering: callers write large blocks). Not copyable.
class OutputFile {
 public:
  explicit OutputFile(std::string path);
  ~OutputFile();  // closes without fsync if sync_and_close was not reached (error paths)
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;

  void write(const void* data, size_t bytes);  // all bytes or throws
  void write_zeros(size_t bytes);              // padding
  void sync_and_close();                       // fsync + close, both checked
  const std::string& path() const { return path_; }
  uint64_t bytes_written() const { return written_; }

 private:
  std::string path_;
  int fd_ = -1;
  uint64_t written_ = 0;
};

// fsync a directory so that entries created / renamed in it survive a crash.
void fsync_dir(const std::string& dir);

// Replaces `path` with `content` atomically: readers see the old or the new file, never a
// partial one, also after a crash. Temp file: <path>.tmp-<pid> in the same directory.
void write_file_atomic(const std::string& path, std::string_view content);

// Whole file into memory; throws Error naming the file when it cannot be read.
std::string read_file(const std::string& path);

// The directory part of a path ("a/b/c" → "a/b", "c" → ".").
std::string parent_dir(const std::string& path);

}  // namespace competelm
