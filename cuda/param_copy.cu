// The bf16 copy of the parameters (bf16 precision): written once per optimizer step with
// stochastic rounding, read by the GEMMs (matmul.cu) instead of rounding the fp32 weights on
// every call. The fp32 parameters stay the master copy; the optimizer never reads the bf16 one.
//
// Stochastic rounding of x (fp32 bits u) to bf16: add 16 random bits r to the 16 bits that
// bf16 drops, keep the top 16: bf16 = (u + r) >> 16. The carry happens exactly when r ≥
// 2¹⁶ − (u mod 2¹⁶), so P(round away from zero) = (u mod 2¹⁶) / 2¹⁶, the fraction of the way
// from the lower-magnitude neighbour to the next one: E[bf16(x)] = x. Values already in bf16
// (u mod 2¹⁶ = 0) stay exact; NaN stays NaN (quietened); ±max rounds up to ±inf with the
// probability above, like any other value.
//
// r is a counter-based hash of (seed, step, element index): no RNG state, independent of the
// launch geometry, identical on every rank and on a run resumed at the same step.
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "cuda_backend.cuh"
#include "cuda_common.cuh"

namespace competelm::cuda {
namespace {

constexpr int kThreads = 256;
constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;  // splitmix64's increment
constexpr uint64_t kDomain = 0xB7F16C0B1E5D2A93ull;  // separates this stream from other uses of the seed

// splitmix64's finaliser: a bijection of 64 bits whose output bits all depend on every input bit.
__host__ __device__ inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// fp32 bits → bf16 bits. NaN → a quiet NaN of the same sign (its payload may sit in the dropped
// bits, which the rounding would otherwise turn into ±inf).
__device__ inline uint16_t bf16_bits_stochastic(uint32_t u, uint32_t r16) {
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return uint16_t((u >> 16) | 0x0040u);
  return uint16_t((u + r16) >> 16);  // u ≤ 0xFF800000 here: no 32-bit overflow
}
// Round to nearest even, as __float2bfloat16_rn (for the tests: a copy identical to what the
// per-call conversion produces).
__device__ inline uint16_t bf16_bits_nearest(uint32_t u) {
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return uint16_t((u >> 16) | 0x0040u);
  return uint16_t((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

// dst[i] = bf16(src[i]), i < n; random bits of element i: the top 16 of mix64(key + i·golden).
__global__ void param_copy_kernel(uint16_t* dst, const float* src, size_t n, uint64_t key, int stochastic) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const uint32_t u = __float_as_uint(src[i]);
    dst[i] = stochastic ? bf16_bits_stochastic(u, uint32_t(mix64(key + i * kGolden) >> 48)) : bf16_bits_nearest(u);
  }
}

bool overlaps(const void* p, size_t bytes, const float* range, size_t n) {
  if (!range || n == 0 || !p || bytes == 0) return false;
  const auto a = reinterpret_cast<uintptr_t>(p), b = reinterpret_cast<uintptr_t>(range);
  return a < b + n * sizeof(float) && b < a + bytes;
}

}  // namespace

bool bf16_param_copy_requested() {
  return gate_enabled(kBf16ParamCopyVerified, "COMPETELM_BF16_PARAM_COPY");
}

void CudaBackend::set_param_buffer(const float* params, size_t n) {
  if (!params || n == 0) {  // unbound: give the copy's memory back once queued GEMMs are done with it
    if (param_copy_) CUDA_CHECK(cudaStreamSynchronize(stream_));
    unbind_param_buffer();
    return;
  }
  if (params == params_ && n == params_n_) return;
  params_ = params;
  params_n_ = n;
  param_copy_valid_ = false;
}

void CudaBackend::unbind_param_buffer() noexcept {
  if (param_copy_) device_free(param_copy_, param_copy_capacity_ * sizeof(uint16_t));
  param_copy_ = nullptr;
  param_copy_capacity_ = 0;
  params_ = nullptr;
  params_n_ = 0;
  param_copy_valid_ = false;
}

void CudaBackend::refresh_param_copy(uint64_t seed, uint64_t step) {
  // Not used (no bf16 GEMMs, or the copy not switched on): no memory, no pass.
  if (!param_copy_enabled_ || precision_ != Precision::bf16 || !params_) {
    param_copy_valid_ = false;
    return;
  }
  write_param_copy(seed, step, ParamRounding::stochastic);
}

void CudaBackend::write_param_copy(uint64_t seed, uint64_t step, ParamRounding rounding) {
  param_copy_valid_ = false;
  if (!params_) return;
  if (param_copy_capacity_ < params_n_) {
    if (param_copy_) {
      CUDA_CHECK(cudaStreamSynchronize(stream_));  // queued GEMMs may still read the old copy
      device_free(param_copy_, param_copy_capacity_ * sizeof(uint16_t));
      param_copy_ = nullptr;
      param_copy_capacity_ = 0;
    }
    param_copy_ = static_cast<uint16_t*>(device_malloc(params_n_ * sizeof(uint16_t), "the bf16 parameter copy"));
    param_copy_capacity_ = params_n_;
  }
  const uint64_t key = mix64(mix64(seed ^ kDomain) + step * kGolden);
  const unsigned grid = std::min<unsigned>(blocks_for(params_n_, kThreads), 1u << 16);
  param_copy_kernel<<<grid, kThreads, 0, stream_>>>(param_copy_, params_, params_n_, key,
                                                    rounding == ParamRounding::stochastic ? 1 : 0);
  CUDA_CHECK_LAUNCH();
  param_copy_valid_ = true;
}

void CudaBackend::invalidate_param_copy(const void* p, size_t bytes) {
  if (param_copy_valid_ && overlaps(p, bytes, params_, params_n_)) param_copy_valid_ = false;
}

const void* CudaBackend::param_copy_operand(const float* src, int rows, int cols, int ld) const {
  if (!param_copy_enabled_ || !param_copy_valid_ || ld != rows || !src) return nullptr;
  const auto s = reinterpret_cast<uintptr_t>(src), b = reinterpret_cast<uintptr_t>(params_);
  const uintptr_t e = b + params_n_ * sizeof(float);
  const size_t extent = size_t(rows) * size_t(cols) * sizeof(float);  // packed: ld = rows
  if (s < b || s >= e || (s - b) % sizeof(float) != 0 || extent > e - s) return nullptr;
  const uint16_t* copy = param_copy_ + (s - b) / sizeof(float);
  // cuBLASLt reads bf16 operands in 16-byte vectors at best: a less aligned weight keeps the
  // per-call conversion into (256-byte aligned) scratch.
  if (reinterpret_cast<uintptr_t>(copy) % 16 != 0) return nullptr;
  return copy;
}

}  // namespace competelm::cuda
