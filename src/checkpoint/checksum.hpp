#pragma once
// Incremental form of checksum64 (declared in checkpoint.hpp): feeding the bytes of a file
// in any number of pieces gives the same value as checksum64 over all of them at once, so
// writers and readers hash while streaming and never hold a whole file in memory.
#include <cstddef>
#include <cstdint>

namespace competelm {

// XXH64 (xxHash, 64-bit variant, Yann Collet's public algorithm); ~10 GB/s per core.
class Checksum64Stream {
 public:
  explicit Checksum64Stream(uint64_t seed = 0);
  void update(const void* data, size_t bytes);
  uint64_t digest() const;  // does not consume: more updates may follow

 private:
  uint64_t seed_, total_ = 0;
  uint64_t acc_[4];      // four independent lanes over 32-byte stripes
  unsigned char buf_[32];  // the tail of the input that has not filled a stripe yet
  size_t buffered_ = 0;
};

}  // namespace competelm
