#pragma once
// The vector kernels of the transcendental- and bandwidth-heavy loops (softmax exponentials,
// GELU's tanh, AdamW, Σ x²), compiled once per x86 instruction set and picked at run time, so
// the default build (no -march) still runs AVX-512 or AVX2 code where the CPU has it.
//
// Every variant runs the same source on a logical width of 16 floats whatever the hardware
// width, and reduces its lanes in a fixed order, so a machine always gets the same bits
// (run to run, thread count to thread count). Variants may differ from each other by a
// rounding where the wider sets fuse multiply-adds (the tests bound it). Tails run through
// the same vector code on a padded copy, so a value's result never depends on where it sits
// in the array.
#include <cstddef>

namespace competelm::cpu::simd {

enum class Isa { kGeneric, kAvx2, kAvx512 };

// The softmax statistics of a row: its maximum and Σ exp(x - max) (in double: a vocabulary
// row has ~50k terms, the small ones must not be lost).
struct SoftmaxStats {
  float max;
  double sum_exp;
};

// AdamW's per-step scalars, already rounded to float as torch does (see adamw.cpp).
struct AdamwCoeffs {
  float grad_scale, decay, beta1, beta2, one_minus_b1, one_minus_b2, bc2_sqrt, eps, neg_step;
};

// One instruction set's kernels. All lengths are element counts; any n ≥ 0 is fine.
struct Kernels {
  const char* name;
  // out[i] = scale · exp(x[i] - shift); out may be x. exp has ~2 ulp relative error; inputs
  // are clamped to [-87.3, 88.3] (results stay normal floats, never 0 or inf).
  void (*exp_shifted)(float* out, const float* x, size_t n, float shift, float scale);
  // out[i] = tanh(x[i]), absolute error ~1e-7.
  void (*tanh)(float* out, const float* x, size_t n);
  SoftmaxStats (*softmax_stats)(const float* x, size_t n);  // n ≥ 1
  void (*gelu_forward)(float* out, const float* inp, size_t n);
  void (*gelu_backward)(float* dinp, const float* inp, const float* dout, size_t n);      // accumulates
  void (*gelu_backward_set)(float* dinp, const float* inp, const float* dout, size_t n);  // overwrites
  double (*sum_squares)(const float* x, size_t n);
  void (*adamw)(float* params, const float* grads, float* m, float* v, size_t n, const AdamwCoeffs& c);
};

bool supported(Isa isa);               // this CPU (and OS) can run isa's kernels
const Kernels& kernels_for(Isa isa);   // isa's kernels; call only when supported(isa)
const Kernels& kernels();              // the widest supported set, chosen once

}  // namespace competelm::cpu::simd
