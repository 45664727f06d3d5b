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
void CpuBackend::residual_layernorm_forward(float* res, const float* x, float* out, float* mean,
                                            float* rstd, const float* weight, const float* bias,
                                            int N, int C) {
  cpu::residual_layernorm_forward(res, x, out, mean, rstd, weight, bias, N, C);
}
void CpuBackend::matmul_forward(float* out, const float* inp, const float* weight,
                                const float* bias, int N, int C, int OC) {
  cpu::matmul_forward(out, inp, weight, bias, N, C, OC);
}
void CpuBackend::matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                                 const float* inp, const float* weight, int N, int C, int OC,
                                 GradMode dinp_mode) {
  cpu::matmul_backward(dinp, dweight, dbias, dout, inp, weight, N, C, OC, dinp_mode);
}
void CpuBackend::attention_forward(float* out, float* att, const float* qkv, int B, int T,
                                   int C, int NH) {
  cpu::attention_forward(out, att, qkv, B, T, C, NH);
}
void CpuBackend::attention_backward(float* dqkv, float* scratch, const float* dout,
                                    const float* /*out: the CPU keeps the softmax weights*/,
                                    const float* qkv, const float* att, int B, int T, int C,
                                    int NH) {
  cpu::attention_backward(dqkv, scratch, dout, qkv, att, B, T, C, NH);
}
void CpuBackend::gelu_forward(float* out, const float* inp, size_t n) {
  cpu::gelu_forward(out, inp, n);
}
void CpuBackend::gelu_backward(float* dinp, const float* inp, const float* dout, size_t n,
                               GradMode mode) {
  cpu::gelu_backward(dinp, inp, dout, n, mode);
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

// ---- MoE ----
void CpuBackend::moe_router_forward(float* act, float* probs, const float* logits, int N, int E,
    bool sigmoid) {
  cpu::moe_router_forward(act, probs, logits, N, E, sigmoid);
}
void CpuBackend::moe_router_backward(float* dlogits, const float* dval, const int32_t* idx,
    const float* dprobs, const float* act, const float* probs, int N, int E, int K, bool sigmoid) {
  cpu::moe_router_backward(dlogits, dval, idx, dprobs, act, probs, N, E, K, sigmoid);
}
void CpuBackend::moe_topk(int32_t* idx, float* val, const float* x, int N, int E, int K) {
  cpu::moe_topk(idx, val, x, N, E, K);
}
void CpuBackend::moe_gate_forward(float* gate, const float* val, int N, int K, bool softmax) {
  cpu::moe_gate_forward(gate, val, N, K, softmax);
}
void CpuBackend::moe_gate_backward(float* dval, const float* dgate, const float* gate,
    const float* val, int N, int K, bool softmax) {
  cpu::moe_gate_backward(dval, dgate, gate, val, N, K, softmax);
}
void CpuBackend::moe_softmax_forward(float* out, const float* inp, int N, int E) {
  cpu::moe_softmax_forward(out, inp, N, E);
}
void CpuBackend::moe_softmax_backward(float* dinp, const float* dout, const float* out, int N,
    int E) {
  cpu::moe_softmax_backward(dinp, dout, out, N, E);
}
double CpuBackend::moe_entropy_balance(float* dp, const float* p, int B, int T, int E,
    float scale) {
  return cpu::moe_entropy_balance(dp, p, B, T, E, scale);
}
double CpuBackend::moe_switch_balance(float* dp, const float* p, const int32_t* idx, int N, int E,
    int K, float scale) {
  return cpu::moe_switch_balance(dp, p, idx, N, E, K, scale);
}
double CpuBackend::moe_z_loss(float* dlogits, const float* logits, int N, int E, float scale) {
  return cpu::moe_z_loss(dlogits, logits, N, E, scale);
}
double CpuBackend::moe_distill_loss(float* dp, const float* p, const float* scores,
    const int32_t* idx, int N, int E, int K, float theta, bool topk_target, float scale) {
  return cpu::moe_distill_loss(dp, p, scores, idx, N, E, K, theta, topk_target, scale);
}
double CpuBackend::moe_diversity_loss(float* drows, const float* rows, const int32_t* row_of_slot,
    int N, int K, int C, float scale) {
  return cpu::moe_diversity_loss(drows, rows, row_of_slot, N, K, C, scale);
}
double CpuBackend::moe_mean_entropy(const float* p, int N, int E) {
  return cpu::moe_mean_entropy(p, N, E);
}
double CpuBackend::moe_topk_overlap(const int32_t* a, const int32_t* b, int N, int K) {
  return cpu::moe_topk_overlap(a, b, N, K);
}
void CpuBackend::moe_permute(int32_t* offsets, int32_t* row_of_slot, int32_t* slot_of_row,
    const int32_t* idx, int N, int E, int K) {
  cpu::moe_permute(offsets, row_of_slot, slot_of_row, idx, N, E, K);
}
void CpuBackend::moe_gather_rows(float* out, const float* inp, const int32_t* src, int div, int R,
    int C) {
  cpu::moe_gather_rows(out, inp, src, div, R, C);
}
void CpuBackend::moe_combine_forward(float* out, const float* rows, const float* gate,
    const int32_t* row_of_slot, int N, int K, int C) {
  cpu::moe_combine_forward(out, rows, gate, row_of_slot, N, K, C);
}
void CpuBackend::moe_combine_backward(float* drows, float* dgate, const float* dout,
    const float* rows, const float* gate, const int32_t* row_of_slot, int N, int K, int C) {
  cpu::moe_combine_backward(drows, dgate, dout, rows, gate, row_of_slot, N, K, C);
}
void CpuBackend::moe_scatter_rows(float* dinp, const float* drows, const int32_t* row_of_slot, int N,
    int K, int C) {
  cpu::moe_scatter_rows(dinp, drows, row_of_slot, N, K, C);
}
void CpuBackend::moe_expert_score(float* scores, int stride, const float* o, int N, int C,
    bool l2) {
  cpu::moe_expert_score(scores, stride, o, N, C, l2);
}
void CpuBackend::moe_expert_score_backward(float* d_o, const float* dscores, int stride,
    const float* o, int N, int C, bool l2) {
  cpu::moe_expert_score_backward(d_o, dscores, stride, o, N, C, l2);
}
void CpuBackend::moe_compete_insert(int32_t* idx, float* best, float* keep_o, float* keep_h,
    const float* scores, int stride, const float* o, const float* h, int expert, int N, int K, int C,
    int H) {
  cpu::moe_compete_insert(idx, best, keep_o, keep_h, scores, stride, o, h, expert, N, K, C, H);
}

}  // namespace competelm::cpu
