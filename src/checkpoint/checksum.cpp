// checksum64 = XXH64 with the given seed, bit-exact with the reference implementation
// (xxhsum -H64, python xxhash.xxh64), so checkpoint files can be checked with standard tools:
// meta.json stores the value as 16 lowercase hex digits.
#include "checkpoint/checksum.hpp"

#include <bit>
#include <algorithm>
#include <cstring>

#include "checkpoint/checkpoint.hpp"

namespace competelm {

namespace {

static_assert(std::endian::native == std::endian::little, "checksum64 assumes little-endian");

constexpr uint64_t kP1 = 0x9E3779B185EBCA87ULL;
constexpr uint64_t kP2 = 0xC2B2AE3D27D4EB4FULL;
constexpr uint64_t kP3 = 0x165667B19E3779F9ULL;
constexpr uint64_t kP4 = 0x85EBCA77C2B2AE63ULL;
constexpr uint64_t kP5 = 0x27D4EB2F165667C5ULL;

inline uint64_t load64(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

inline uint32_t load32(const unsigned char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

inline uint64_t round64(uint64_t acc, uint64_t input) {
  acc += input * kP2;
  acc = std::rotl(acc, 31);
  return acc * kP1;
}

inline uint64_t merge_round(uint64_t h, uint64_t acc) {
  h ^= round64(0, acc);
  return h * kP1 + kP4;
}

// One 32-byte stripe into the four lanes.
inline void stripe(uint64_t acc[4], const unsigned char* p) {
  acc[0] = round64(acc[0], load64(p));
  acc[1] = round64(acc[1], load64(p + 8));
  acc[2] = round64(acc[2], load64(p + 16));
  acc[3] = round64(acc[3], load64(p + 24));
}

}  // namespace

Checksum64Stream::Checksum64Stream(uint64_t seed) : seed_(seed) {
  acc_[0] = seed + kP1 + kP2;
  acc_[1] = seed + kP2;
  acc_[2] = seed;
  acc_[3] = seed - kP1;
}

void Checksum64Stream::update(const void* data, size_t bytes) {
  if (bytes == 0) return;  // data may be null
  const auto* p = static_cast<const unsigned char*>(data);
  total_ += bytes;
  if (buffered_ > 0) {  // complete the pending stripe first
    size_t take = std::min(bytes, sizeof(buf_) - buffered_);
    std::memcpy(buf_ + buffered_, p, take);
    buffered_ += take;
    p += take;
    bytes -= take;
    if (buffered_ < sizeof(buf_)) return;
    stripe(acc_, buf_);
    buffered_ = 0;
  }
  uint64_t a[4] = {acc_[0], acc_[1], acc_[2], acc_[3]};  // locals: keeps lanes in registers
  while (bytes >= 32) {
    stripe(a, p);
    p += 32;
    bytes -= 32;
  }
  std::memcpy(acc_, a, sizeof(a));
  if (bytes > 0) {
    std::memcpy(buf_, p, bytes);
    buffered_ = bytes;
  }
}

uint64_t Checksum64Stream::digest() const {
  uint64_t h;
  if (total_ >= 32) {
    h = std::rotl(acc_[0], 1) + std::rotl(acc_[1], 7) + std::rotl(acc_[2], 12) +
        std::rotl(acc_[3], 18);
    for (uint64_t a : acc_) h = merge_round(h, a);
  } else {
    h = seed_ + kP5;
  }
  h += total_;
  const unsigned char* p = buf_;
  size_t n = buffered_;
  while (n >= 8) {
    h ^= round64(0, load64(p));
    h = std::rotl(h, 27) * kP1 + kP4;
    p += 8;
    n -= 8;
  }
  if (n >= 4) {
    h ^= uint64_t(load32(p)) * kP1;
    h = std::rotl(h, 23) * kP2 + kP3;
    p += 4;
    n -= 4;
  }
  while (n > 0) {
    h ^= uint64_t(*p) * kP5;
    h = std::rotl(h, 11) * kP1;
    ++p;
    --n;
  }
  h ^= h >> 33;
  h *= kP2;
  h ^= h >> 29;
  h *= kP3;
  h ^= h >> 32;
  return h;
}

uint64_t checksum64(const void* data, size_t bytes, uint64_t seed) {
  Checksum64Stream s(seed);
  s.update(data, bytes);
  return s.digest();
}

}  // namespace competelm
