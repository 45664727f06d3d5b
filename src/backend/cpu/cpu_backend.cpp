// CpuBackend: memory management and thread setup; the ops live in one file per family.
#include "backend/cpu/cpu_backend.hpp"

#include <omp.h>
#include <sys/mman.h>

#include <cstdlib>
#include <cstring>
#include <new>
#include <thread>

#include "backend/cpu/ops.hpp"
#include "core/error.hpp"

extern "C" void openblas_set_num_threads(int);  // in libopenblas, not declared by cblas.h

namespace competelm::cpu {
namespace {
constexpr size_t kAlign = 64;  // cache line and AVX-512 vector
// Large buffers (weights, gradients, optimizer moments, activations) are placed on 2 MiB
// boundaries and offered to the kernel as transparent huge pages: the optimizer and the
// GEMMs stream through hundreds of MiB, and 4 KiB pages cost a TLB miss every 4 KiB.
constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kHugeMin = size_t{4} << 20;  // below this, a huge page would mostly be waste
}

CpuBackend::CpuBackend(int num_threads) {
  if (num_threads < 0) fail("run.threads: {} is negative (0 = all hardware threads)", num_threads);
  if (num_threads == 0) num_threads = static_cast<int>(std::thread::hardware_concurrency());
  num_threads_ = num_threads > 0 ? num_threads : 1;
  omp_set_num_threads(num_threads_);
  // OpenBLAS runs single-threaded: the GEMMs are split over the OpenMP threads instead
  // (sgemm_split.hpp), so only one pool of num_threads_ threads ever competes for the cores.
  openblas_set_num_threads(1);
}

void* CpuBackend::alloc(size_t bytes) {
  const size_t align = bytes >= kHugeMin ? kHugePage : kAlign;
  const size_t rounded = (bytes + align - 1) / align * align;  // aligned_alloc needs a multiple
  void* p = std::aligned_alloc(align, rounded > 0 ? rounded : align);
  if (!p) fail("cpu backend: out of host memory allocating {} bytes", bytes);
#if defined(MADV_HUGEPAGE)
  if (align == kHugePage) madvise(p, rounded, MADV_HUGEPAGE);  // advice only: failure is harmless
#endif
  std::memset(p, 0, rounded > 0 ? rounded : align);
  return p;
}

void CpuBackend::dealloc(void* p) { std::free(p); }

void CpuBackend::upload(void* dst, const void* src_host, size_t bytes) {
  if (bytes) std::memcpy(dst, src_host, bytes);
}

void CpuBackend::download(void* dst_host, const void* src, size_t bytes) {
  if (bytes) std::memcpy(dst_host, src, bytes);
}

void CpuBackend::zero(void* p, size_t bytes) {
  // One thread: memset already runs at the memory's write bandwidth (measured: two threads
  // clear 128 MiB no faster than one).
  if (bytes) std::memset(p, 0, bytes);
}

void CpuBackend::encoder_forward(float* out, const int32_t* tokens, const float* wte,
                                 const float* wpe, int B, int T, int C) {
  cpu::encoder_forward(out, tokens, wte, wpe, B, T, C);
}
void CpuBackend::encoder_backward(float* dwte, float* dwpe, const float* dout,
                                  const int32_t* tokens, int B, int T, int C) {
  cpu::encoder_backward(dwte, dwpe, dout, tokens, B, T, C);
}
void CpuBackend::layernorm_forward(float* out, float* mean, float* rstd, const float* inp,
                                   const float* weight, const float* bias, int N, int C) {
  cpu::layernorm_forward(out, mean, rstd, inp, weight, bias, N, C);
}
void CpuBackend::layernorm_backward(float* dinp, float* dweight, float* dbias,
                                    const float* dout, const float* inp, const float* weight,
                                    const float* mean, const float* rstd, int N, int C) {
  cpu::layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C);
}
void CpuBackend::matmul_forward(float* out, const float* inp, const float* weight,
                                const float* bias, int N, int C, int OC) {
  cpu::matmul_forward(out, inp, weight, bias, N, C, OC);
}
void CpuBackend::matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                                 const float* inp, const float* weight, int N, int C, int OC) {
  cpu::matmul_backward(dinp, dweight, dbias, dout, inp, weight, N, C, OC);
}
void CpuBackend::attention_forward(float* out, float* att, const float* qkv, int B, int T,
                                   int C, int NH) {
  cpu::attention_forward(out, att, qkv, B, T, C, NH);
}
void CpuBackend::attention_backward(float* dqkv, float* scratch, const float* dout,
                                    const float* qkv, const float* att, int B, int T, int C,
                                    int NH) {
  cpu::attention_backward(dqkv, scratch, dout, qkv, att, B, T, C, NH);
}
void CpuBackend::gelu_forward(float* out, const float* inp, size_t n) {
  cpu::gelu_forward(out, inp, n);
}
void CpuBackend::gelu_backward(float* dinp, const float* inp, const float* dout, size_t n) {
  cpu::gelu_backward(dinp, inp, dout, n);
}
void CpuBackend::residual_forward(float* out, const float* a, const float* b, size_t n) {
  cpu::residual_forward(out, a, b, n);
}
void CpuBackend::accumulate(float* y, const float* x, size_t n) { cpu::accumulate(y, x, n); }
void CpuBackend::scale(float* x, float s, size_t n) { cpu::scale(x, s, n); }
void CpuBackend::crossentropy_forward(float* losses, const float* logits,
                                      const int32_t* targets, int N, int V, int Vp) {
  cpu::crossentropy_forward(losses, logits, targets, N, V, Vp);
}
void CpuBackend::crossentropy_backward(float* dlogits, const float* logits, const float* losses,
                                       const int32_t* targets, float dloss, int N, int V,
                                       int Vp) {
  cpu::crossentropy_backward(dlogits, logits, losses, targets, dloss, N, V, Vp);
}
double CpuBackend::sum_squares(const float* x, size_t n) { return cpu::sum_squares(x, n); }
void CpuBackend::adamw_update(float* params, const float* grads, float* m, float* v, size_t n,
                              float lr, float beta1, float beta2, float eps, float weight_decay,
                              float grad_scale, int t) {
  cpu::adamw_update(params, grads, m, v, n, lr, beta1, beta2, eps, weight_decay, grad_scale, t);
}

}  // namespace competelm::cpu
