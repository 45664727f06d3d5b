#pragma once
// Shared by the attention GPU tests: a shape's description, the log-sum-exp reference, and a
// buffer on one backend. Shape: any struct with B, T, C, NH and qkv_scale.
#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "backend/backend.hpp"

namespace competelm::gpu_testing {

// Memory on one backend only (the attention state differs in size between the two), zeroed.
struct Buffer {
  Backend& be;
  float* p = nullptr;
  size_t n = 0;
  Buffer(Backend& backend, size_t count) : be(backend), n(count) {
    p = static_cast<float*>(be.alloc(std::max<size_t>(n, 1) * sizeof(float)));
    be.zero(p, std::max<size_t>(n, 1) * sizeof(float));
  }
  ~Buffer() { be.dealloc(p); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  std::vector<float> host() const {
    std::vector<float> h(n);
    be.download(h.data(), p, n * sizeof(float));
    return h;
  }
};

template <class Shape>
std::string describe(const Shape& s) {
  std::ostringstream os;
  os << "B=" << s.B << " T=" << s.T << " C=" << s.C << " NH=" << s.NH << " hs=" << s.C / s.NH
     << " qkv_scale=" << s.qkv_scale;
  return os.str();
}

// L[b,h,t] = log Σ_{s ≤ t} exp(q_t·k_s / sqrt(hs)), in double from the host qkv (B,T,3C).
template <class Shape>
std::vector<float> host_lse(const std::vector<float>& qkv, const Shape& s) {
  const int hs = s.C / s.NH;
  const size_t C3 = 3 * size_t(s.C);
  std::vector<float> lse(size_t(s.B) * s.NH * s.T);
  std::vector<double> row(size_t(s.T));
  for (int b = 0; b < s.B; ++b)
    for (int h = 0; h < s.NH; ++h)
      for (int t = 0; t < s.T; ++t) {
        const float* q = &qkv[(size_t(b) * s.T + t) * C3 + size_t(h) * hs];
        double m = -INFINITY;
        for (int u = 0; u <= t; ++u) {
          const float* k = &qkv[(size_t(b) * s.T + u) * C3 + s.C + size_t(h) * hs];
          double dot = 0.0;
          for (int d = 0; d < hs; ++d) dot += double(q[d]) * k[d];
          row[size_t(u)] = dot / std::sqrt(double(hs));
          m = std::max(m, row[size_t(u)]);
        }
        double sum = 0.0;
        for (int u = 0; u <= t; ++u) sum += std::exp(row[size_t(u)] - m);
        lse[(size_t(b) * s.NH + h) * s.T + t] = float(m + std::log(sum));
      }
  return lse;
}

}  // namespace competelm::gpu_testing
