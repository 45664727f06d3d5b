// Compiles simd_vec.inc + simd_kernels.inc three times: for plain x86-64 (or whatever the
// build targets), for AVX2 and for AVX-512F, each copy in its own namespace with internal
// linkage (no ODR clash between the copies), and picks the widest the CPU supports.
#include "backend/cpu/simd.hpp"

#include <cmath>
#include <cstdint>
#include <cstring>

// The per-set copies need GCC's `#pragma GCC target` (Clang ignores it): elsewhere only the
// generic kernels are built.
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__) && !defined(__clang__)
#define COMPETELM_SIMD_X86 1
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

// The 16-float vector types are passed between force-inlined helpers only, never across a
// function call (GCC warns that their calling convention differs between instruction sets).
#define COMPETELM_SIMD_INLINE inline __attribute__((always_inline))
#define COMPETELM_SIMD_LAMBDA __attribute__((always_inline))
#pragma GCC diagnostic ignored "-Wpsabi"

namespace competelm::cpu::simd {
namespace {

#define COMPETELM_SIMD_LEVEL 128
namespace generic {
constexpr const char* kName = "generic";
#include "backend/cpu/simd_vec.inc"
#include "backend/cpu/simd_kernels.inc"
}  // namespace generic

#if defined(COMPETELM_SIMD_X86)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#undef COMPETELM_SIMD_LEVEL
#define COMPETELM_SIMD_LEVEL 256
namespace avx2 {
constexpr const char* kName = "avx2";
#include "backend/cpu/simd_vec.inc"
#include "backend/cpu/simd_kernels.inc"
}  // namespace avx2
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f")
#undef COMPETELM_SIMD_LEVEL
#define COMPETELM_SIMD_LEVEL 512
namespace avx512 {
constexpr const char* kName = "avx512";
#include "backend/cpu/simd_vec.inc"
#include "backend/cpu/simd_kernels.inc"
}  // namespace avx512
#pragma GCC pop_options
#endif

Isa best_supported() {
  if (supported(Isa::kAvx512)) return Isa::kAvx512;
  if (supported(Isa::kAvx2)) return Isa::kAvx2;
  return Isa::kGeneric;
}

}  // namespace

bool supported(Isa isa) {
#if defined(COMPETELM_SIMD_X86)
  // libgcc's checks include the OS enabling the wide registers (XGETBV), not only CPUID.
  switch (isa) {
    case Isa::kAvx512: return __builtin_cpu_supports("avx512f");
    case Isa::kAvx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Isa::kGeneric: return true;
  }
  return false;
#else
  return isa == Isa::kGeneric;
#endif
}

const Kernels& kernels_for(Isa isa) {
#if defined(COMPETELM_SIMD_X86)
  switch (isa) {
    case Isa::kAvx512: return avx512::kKernels;
    case Isa::kAvx2: return avx2::kKernels;
    case Isa::kGeneric: break;
  }
#endif
  (void)isa;
  return generic::kKernels;
}

const Kernels& kernels() {
  static const Kernels& best = kernels_for(best_supported());  // CPU features do not change
  return best;
}

}  // namespace competelm::cpu::simd
