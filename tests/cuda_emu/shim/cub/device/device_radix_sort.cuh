#pragma once
#include "cuda_runtime.h"
// Host stand-in for cub's stable LSD radix sort of (key, value) pairs over bits [begin, end).
namespace cub {
struct DeviceRadixSort {
  template <class K, class V>
  static cudaError_t SortPairs(void* temp, size_t& temp_bytes, const K* keys_in, K* keys_out, const V* vals_in, V* vals_out,
                               int n, int begin_bit = 0, int end_bit = int(sizeof(K) * 8), cudaStream_t = nullptr) {
    if (!temp) { temp_bytes = 1000 + size_t(n) * 3; return cudaSuccess; }
    // cub sorts the key BITS as unsigned for unsigned keys; for signed it flips the sign bit (two's complement order).
    std::vector<int> idx(n); for (int i = 0; i < n; ++i) idx[i] = i;
    auto bits = [&](K k) {
      uint64_t u = uint64_t(std::make_unsigned_t<K>(k));
      if (std::is_signed_v<K>) u ^= uint64_t(1) << (sizeof(K) * 8 - 1);
      if (end_bit < 64) u &= (uint64_t(1) << end_bit) - 1;
      return u >> begin_bit;
    };
    std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return bits(keys_in[a]) < bits(keys_in[b]); });
    std::memset(temp, 0xAB, temp_bytes);  // touch the whole temp storage: it must lie inside the scratch
    std::vector<K> ko(n); std::vector<V> vo(n);
    for (int i = 0; i < n; ++i) { ko[i] = keys_in[idx[i]]; vo[i] = vals_in[idx[i]]; }
    std::copy(ko.begin(), ko.end(), keys_out); std::copy(vo.begin(), vo.end(), vals_out);
    return cudaSuccess;
  }
};
}  // namespace cub
