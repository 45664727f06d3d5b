#pragma once
// Host emulation of the CUDA runtime for tests/cuda_emu: device memory is host memory, a launch
// runs each block in turn with one std::thread per CUDA thread, so that __syncthreads (a block
// barrier) and warp shuffles (a per-warp barrier and exchange slots) behave as on a GPU. Misuse
// that a GPU would reject or leave undefined (bad launch shapes, reading an exited lane) is
// counted in emu::g_errors and fails the test. Only 1-D blocks. Dynamic shared memory
// (`extern __shared__ T name[];`, rewritten by rewrite_launches.sed) is a per-block buffer of the
// launch's byte count, poisoned like fresh shared memory.
#include <algorithm>
#include <barrier>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>
#include <mutex>
#include <functional>
#include <type_traits>

// Lets a .cu file pick its emulation of warp-level PTX (mma.sync, ldmatrix) in place of inline
// assembly (cuda/attention_mma.cu).
#define COMPETELM_CUDA_EMU 1

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)
#define __restrict__

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct uint3 { unsigned x = 0, y = 0, z = 0; };
extern thread_local uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;

typedef struct CUstream_st* cudaStream_t;
typedef struct CUevent_st* cudaEvent_t;
enum cudaError_t { cudaSuccess = 0, cudaErrorMemoryAllocation = 2, cudaErrorInvalidValue = 1, cudaErrorNotReady = 600 };
#define cudaStreamDefault 0x00
#define cudaStreamNonBlocking 0x01
#define cudaEventDefault 0x00
#define cudaEventDisableTiming 0x02
#define cudaEventWaitDefault 0x00
enum cudaMemcpyKind { cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice, cudaMemcpyDefault };
enum cudaDataType { CUDA_R_32F = 0, CUDA_R_16F = 2, CUDA_R_16BF = 14 };
typedef cudaDataType cudaDataType_t;
struct float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
struct alignas(16) uint4 { unsigned x, y, z, w; };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

namespace emu {
void fail(const char* what);
// gather: the exchange area of warp_gather (32 lanes × up to kGatherBytes).
inline constexpr size_t kGatherBytes = 64;
struct Warp {
  std::unique_ptr<std::barrier<>> bar;
  double vals[32];
  bool exited[32];
  alignas(16) unsigned char gather[32 * kGatherBytes];
};
extern std::barrier<>* g_bar;
extern std::vector<Warp>* g_warps;
extern std::atomic<long> g_errors;
extern size_t g_malloc_count;
// Streams made by cudaStreamCreateWithFlags and events not yet destroyed (a test checks none
// leak). cudaStreamCreate hands out one shared stream, not counted.
extern long g_live_streams, g_live_events;
// Run a launch's threads one after another on the calling thread: much faster, and exact for
// kernels with no barrier or shuffle (g_bar / g_warps are null then, so using one crashes).
extern bool g_serial;
// The current block's dynamic shared memory (the launch's third <<<>>> argument, in bytes).
extern unsigned char* g_dyn_smem;
inline void* dyn_smem() { return g_dyn_smem; }
extern std::mutex g_atomic;
template <class T> T shfl(T v, int src) {
  Warp& w = (*g_warps)[threadIdx.x / 32];
  w.vals[threadIdx.x % 32] = double(v);
  w.bar->arrive_and_wait();
  if (w.exited[src & 31]) { std::fprintf(stderr, "EMU: shuffle reads an exited lane\n"); ++g_errors; }
  T r = T(w.vals[src & 31]);
  w.bar->arrive_and_wait();
  return r;
}
// Every lane of the calling warp passes `bytes` (≤ kGatherBytes) at `mine`; on return `all`
// holds lane l's bytes at all + l·bytes, for every l (the emulation of warp-wide register
// exchanges such as mma.sync's operand fragments: one exchange instead of a shuffle per value).
inline void warp_gather(const void* mine, void* all, size_t bytes) {
  if (bytes > kGatherBytes) { std::fprintf(stderr, "EMU: warp_gather of %zu bytes\n", bytes); ++g_errors; return; }
  Warp& w = (*g_warps)[threadIdx.x / 32];
  std::memcpy(w.gather + (threadIdx.x % 32) * bytes, mine, bytes);
  w.bar->arrive_and_wait();
  for (int l = 0; l < 32; ++l)
    if (w.exited[l]) { std::fprintf(stderr, "EMU: warp_gather with an exited lane\n"); ++g_errors; break; }
  std::memcpy(all, w.gather, 32 * bytes);
  w.bar->arrive_and_wait();
}
struct Cfg { dim3 grid; dim3 block; size_t shmem; cudaStream_t s; };
// `opt_in`: the kernel's cudaFuncAttributeMaxDynamicSharedMemorySize (0: none set).
void run_blocks(const Cfg& c, const std::function<void()>& body, size_t opt_in = 0);
using KernelId = void (*)();
void set_smem_opt_in(KernelId k, int bytes);
size_t smem_opt_in(KernelId k);
}  // namespace emu

// Target of the launches that tests/cuda_emu/rewrite_launches.sed writes; converts the arguments
// to the kernel's parameter types as a real launch would.
template <class... P, class... A>
void emu_launch(void (*k)(P...), emu::Cfg c, A... a) {
  emu::run_blocks(c, [=] { k(P(a)...); }, emu::smem_opt_in(reinterpret_cast<emu::KernelId>(k)));
}
template <class... P>
cudaError_t cudaFuncSetAttribute(void (*k)(P...), cudaFuncAttribute, int value) {
  emu::set_smem_opt_in(reinterpret_cast<emu::KernelId>(k), value);
  return cudaSuccess;
}

inline void __syncthreads() { emu::g_bar->arrive_and_wait(); }
template <class T> T __shfl_sync(unsigned, T v, int src) { return emu::shfl(v, src); }
template <class T> T __shfl_xor_sync(unsigned, T v, int o) { return emu::shfl(v, int(threadIdx.x % 32) ^ o); }
template <class T> T __shfl_down_sync(unsigned, T v, unsigned o) { int s = int(threadIdx.x % 32) + int(o); return emu::shfl(v, s < 32 ? s : int(threadIdx.x % 32)); }
// Every lane of `mask` passes v; the mask of those lanes whose v equals this lane's.
template <class T> unsigned __match_any_sync(unsigned mask, T v) {
  static_assert(sizeof(T) <= 4, "exchanged through a double: exact for 32-bit values");
  emu::Warp& w = (*emu::g_warps)[threadIdx.x / 32];
  w.vals[threadIdx.x % 32] = double(v);
  w.bar->arrive_and_wait();
  unsigned m = 0;
  for (int l = 0; l < 32; ++l) {
    if (!(mask >> l & 1u)) continue;
    if (w.exited[l]) { std::fprintf(stderr, "EMU: __match_any_sync names an exited lane\n"); ++emu::g_errors; continue; }
    if (T(w.vals[l]) == v) m |= 1u << l;
  }
  w.bar->arrive_and_wait();
  return m;
}
inline int __popc(unsigned x) { return __builtin_popcount(x); }
// Global and shared memory alike: one lock for all, since blocks run one at a time.
template <class T> T atomicAdd(T* p, T v) { std::lock_guard<std::mutex> l(emu::g_atomic); const T o = *p; *p = o + v; return o; }
template <class A, class B> inline auto min(A a, B b) { return a < b ? a : b; }
template <class A, class B> inline auto max(A a, B b) { return a > b ? a : b; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }

cudaError_t cudaMalloc(void** p, size_t bytes);
template <class T> cudaError_t cudaMalloc(T** p, size_t bytes) { return cudaMalloc(reinterpret_cast<void**>(p), bytes); }
cudaError_t cudaFree(void* p);
cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t s = nullptr);
cudaError_t cudaMemset(void* p, int v, size_t n);
cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind k, cudaStream_t st = nullptr);
cudaError_t cudaMemcpy(void* d, const void* s, size_t n, cudaMemcpyKind k);
cudaError_t cudaStreamSynchronize(cudaStream_t);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaStreamCreate(cudaStream_t*);
cudaError_t cudaStreamDestroy(cudaStream_t);
// Streams and events: everything runs at once on the host, so every stream is always idle
// (cudaStreamQuery: cudaSuccess) and ordering between streams holds by construction. They
// check their handles (an event used after cudaEventDestroy, a stream destroyed twice).
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned flags);
cudaError_t cudaStreamQuery(cudaStream_t s);
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags = 0);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned flags);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s = nullptr);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaGetDeviceCount(int*);
cudaError_t cudaSetDevice(int);
cudaError_t cudaGetLastError();
const char* cudaGetErrorName(cudaError_t);
const char* cudaGetErrorString(cudaError_t);
