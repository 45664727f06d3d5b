#pragma once
// Helpers for checking backward ops against central finite differences of a double-
// precision reference forward, and fp32 results against double references.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "core/rng.hpp"

namespace competelm::test {

inline std::vector<float> random_floats(Rng& rng, size_t n, float stddev = 1.0f) {
  std::vector<float> v(n);
  for (float& x : v) x = stddev * rng.normal();
  return v;
}

inline std::vector<double> to_double(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}

// Central differences of the scalar objective f at x, in double: ∂f/∂x_i for every i.
// With h = 1e-5 the truncation error (~h²) and the rounding error (~1e-16/h) are both far
// below the tolerances the fp32 analytic gradients are held to.
template <class Objective>
std::vector<double> fd_gradient(std::vector<double> x, Objective&& f, double h = 1e-5) {
  std::vector<double> g(x.size());
  for (size_t i = 0; i < x.size(); i++) {
    const double x0 = x[i];
    x[i] = x0 + h;
    const double fp = f(x);
    x[i] = x0 - h;
    const double fm = f(x);
    x[i] = x0;
    g[i] = (fp - fm) / (2 * h);
  }
  return g;
}

// The same at every `stride`-th input only (for inputs whose full FD would be slow); returns
// the pairs (analytic value at those inputs, FD value) ready for rel_error.
template <class Objective>
std::pair<std::vector<float>, std::vector<double>> fd_sampled(const std::vector<float>& analytic,
                                                             std::vector<double> x, Objective&& f,
                                                             size_t stride, double h = 1e-5) {
  std::pair<std::vector<float>, std::vector<double>> r;
  for (size_t i = 0; i < x.size(); i += stride) {
    const double x0 = x[i];
    x[i] = x0 + h;
    const double fp = f(x);
    x[i] = x0 - h;
    const double fm = f(x);
    x[i] = x0;
    r.first.push_back(analytic[i]);
    r.second.push_back((fp - fm) / (2 * h));
  }
  return r;
}

// max |got - want| / max |want|: the error relative to the tensor's scale, so entries that
// are tiny do not blow the ratio up.
inline double rel_error(const std::vector<float>& got, const std::vector<double>& want) {
  REQUIRE(got.size() == want.size());
  double max_err = 0.0, max_ref = 0.0;
  for (size_t i = 0; i < got.size(); i++) {
    max_err = std::max(max_err, std::abs(static_cast<double>(got[i]) - want[i]));
    max_ref = std::max(max_ref, std::abs(want[i]));
  }
  return max_err / std::max(max_ref, 1e-30);
}

// Σ w·out: the scalar objective whose gradient w.r.t. out is w (= the dout fed to backward).
inline double weighted_sum(const std::vector<double>& out, const std::vector<float>& w) {
  double s = 0.0;
  for (size_t i = 0; i < out.size(); i++) s += w[i] * out[i];
  return s;
}

}  // namespace competelm::test
