#pragma once
// Checked, hashed I/O for the files of one checkpoint. The writer hashes bytes as they are
// written (meta.json records the result); the reader hashes bytes as they are read and
// compares size and checksum with meta.json, so no file is ever held twice in memory.
#include <cstddef>
#include <cstdint>
#include <string>

#include "checkpoint/checkpoint.hpp"
#include "checkpoint/checksum.hpp"
#include "core/fs_util.hpp"

namespace competelm {

class CheckpointFileWriter {
 public:
  CheckpointFileWriter(std::string name, const std::string& dir);
  void write(const void* data, size_t bytes);  // honours the test-only fault hook
  void write_zeros(size_t bytes);
  uint64_t bytes_written() const { return out_.bytes_written(); }
  CheckpointFile finish();  // fsync + close; returns the record for meta.json

 private:
  std::string name_;
  OutputFile out_;
  Checksum64Stream hash_;
};

// Reads a listed file front to back. Construction checks the size against meta.json; every
// read is bounds-checked (Error naming file and offset); finish() compares the checksum.
// read_at serves selective loads (a rank reading only its slices): random access that
// neither moves the stream nor hashes, so the file's checksum must be verified elsewhere.
class CheckpointFileReader {
 public:
  CheckpointFileReader(const std::string& dir, const CheckpointFile& expect);
  ~CheckpointFileReader();
  CheckpointFileReader(const CheckpointFileReader&) = delete;
  CheckpointFileReader& operator=(const CheckpointFileReader&) = delete;

  void read(void* dst, size_t bytes);  // exactly `bytes` or throws "truncated at offset"
  void skip(size_t bytes);             // reads (and hashes) bytes without keeping them
  // Exactly `bytes` at file offset `offset` (pread), or throws naming the file and offset.
  void read_at(uint64_t offset, void* dst, size_t bytes);
  uint64_t pos() const { return pos_; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // Bytes taken from the file so far (buffer fills, large reads and read_at): the I/O cost.
  uint64_t bytes_read() const { return bytes_read_; }
  void finish();  // all bytes consumed and checksum equal, or throws

 private:
  std::string path_;
  CheckpointFile expect_;
  int fd_ = -1;
  uint64_t size_ = 0, pos_ = 0;
  uint64_t bytes_read_ = 0;
  Checksum64Stream hash_;
  std::string buf_;  // small reads are served from here
  size_t buf_pos_ = 0;

  void raw_read(char* dst, size_t bytes);  // from the fd, hashing
};

// Reads a whole listed file and checks its size and checksum without keeping it.
void verify_checkpoint_file(const std::string& dir, const CheckpointFile& expect);

std::string checksum_hex(uint64_t checksum);  // 16 lowercase hex digits

}  // namespace competelm
