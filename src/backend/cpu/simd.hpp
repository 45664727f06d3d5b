#pragma once
// Explicit 4-wide float vectors (GCC/Clang vector extensions) for the transcendental-heavy
// loops: softmax exponentials, GELU's tanh, AdamW's sqrt. The compiler will not vectorise
// loops over libm's expf/tanhf/sqrtf, nor over float clamps while -ftrapping-math is on (the
// default), so these loops are written on vectors directly. 4 lanes = one SSE2 register on
// plain x86-64 (wider vectors in function signatures would change the ABI without AVX). Tails run through the same vector code on a padded
// copy, so a value's result never depends on where it sits in the array.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace competelm::cpu::simd {

using f32x4 = float __attribute__((vector_size(16)));
using i32x4 = int32_t __attribute__((vector_size(16)));
using f64x4 = double __attribute__((vector_size(32)));  // local accumulators only
inline constexpr int kWidth = 4;

inline f32x4 load(const float* p) {
  f32x4 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store(float* p, f32x4 v) { std::memcpy(p, &v, sizeof v); }
// The first n (< 4) lanes from p, the rest `fill`.
inline f32x4 load_partial(const float* p, size_t n, float fill) {
  float tmp[kWidth];
  for (int i = 0; i < kWidth; i++) tmp[i] = fill;
  std::memcpy(tmp, p, n * sizeof(float));
  return load(tmp);
}
inline void store_partial(float* p, f32x4 v, size_t n) {
  float tmp[kWidth];
  store(tmp, v);
  std::memcpy(p, tmp, n * sizeof(float));
}
inline f32x4 splat(float x) { return f32x4{} + x; }
inline f32x4 vmax(f32x4 a, f32x4 b) { return a > b ? a : b; }
inline f32x4 vmin(f32x4 a, f32x4 b) { return a < b ? a : b; }
inline float hmax(f32x4 v) {
  float m = v[0];
  for (int i = 1; i < kWidth; i++) m = v[i] > m ? v[i] : m;
  return m;
}

// e^x with ~2 ulp relative error: Cody-Waite reduction by ln 2, Cephes expf polynomial.
// Inputs are clamped to [-87.3, 88.3] so 2^n stays a normal float: below, the result is
// ~1.2e-38 rather than a denormal or 0 (no softmax can tell), above, ~2e38 rather than inf.
inline f32x4 exp(f32x4 x) {
  x = vmin(vmax(x, splat(-87.3f)), splat(88.3f));
  const f32x4 shifter = splat(12582912.0f);  // 1.5·2²³: adding it rounds to an integer
  const f32x4 n = (x * 1.44269504088896341f + shifter) - shifter;
  const f32x4 r = (x - n * 0.693359375f) - n * -2.12194440e-4f;  // x - n·ln2, ln2 in two parts
  f32x4 p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const f32x4 er = p * (r * r) + r + 1.0f;
  const i32x4 bits = (__builtin_convertvector(n, i32x4) + 127) << 23;  // 2^n
  f32x4 scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return er * scale;
}

// tanh x = 1 - 2/(e^{2x} + 1): absolute error ~1e-7 (what GELU needs: it adds the result
// to 1), saturating cleanly to ±1.
inline f32x4 tanh(f32x4 x) { return 1.0f - 2.0f / (exp(2.0f * x) + 1.0f); }

inline f32x4 sqrt(f32x4 x) {
#if defined(__SSE2__)
  return reinterpret_cast<f32x4>(_mm_sqrt_ps(reinterpret_cast<__m128>(x)));
#else
  for (int i = 0; i < kWidth; i++) x[i] = std::sqrt(x[i]);
  return x;
#endif
}

// out[i] = f(in...) for i < n over 4-wide vectors: the tail goes through f on a padded copy.
// f takes and returns f32x4; `ins` are the input arrays (all of length n).
template <class F, class... In>
inline void map(float* out, size_t n, F&& f, const In*... ins) {
  size_t i = 0;
  for (; i + kWidth <= n; i += kWidth) store(out + i, f(load(ins + i)...));
  if (i < n) store_partial(out + i, f(load_partial(ins + i, n - i, 0.0f)...), n - i);
}

}  // namespace competelm::cpu::simd
