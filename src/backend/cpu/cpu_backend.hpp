#pragma once
// The CPU backend: fp32 in host memory, OpenMP for the element-wise and per-head ops and
// OpenBLAS sgemm for the linear layers. It is the reference oracle the CUDA backend is
// tested against. Each method forwards to the free function of the same name in ops.hpp.
#include "backend/backend.hpp"

namespace competelm::cpu {

class CpuBackend final : public Backend {
 public:
  // num_threads: OpenMP threads (process-wide); 0 = every hardware thread. OpenBLAS is set to
  // one thread and its GEMMs are split over the OpenMP threads, so the two thread pools
  // never oversubscribe the cores.
  explicit CpuBackend(int num_threads = 0);
  std::string name() const override { return "cpu"; }
  int num_threads() const { return num_threads_; }

  void* alloc(size_t bytes) override;
  void dealloc(void* p) override;
  void upload(void* dst, const void* src_host, size_t bytes) override;
  void download(void* dst_host, const void* src, size_t bytes) override;
  void zero(void* p, size_t bytes) override;

  void encoder_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe,
                       int B, int T, int C) override;
  void encoder_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens,
                        int B, int T, int C) override;
  void layernorm_forward(float* out, float* mean, float* rstd, const float* inp,
                         const float* weight, const float* bias, int N, int C) override;
  void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                          const float* inp, const float* weight, const float* mean,
                          const float* rstd, int N, int C) override;
  void matmul_forward(float* out, const float* inp, const float* weight, const float* bias,
                      int N, int C, int OC) override;
  void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                       const float* inp, const float* weight, int N, int C, int OC) override;
  void attention_forward(float* out, float* att, const float* qkv, int B, int T, int C,
                         int NH) override;
  void attention_backward(float* dqkv, float* scratch, const float* dout, const float* qkv,
                          const float* att, int B, int T, int C, int NH) override;
  void gelu_forward(float* out, const float* inp, size_t n) override;
  void gelu_backward(float* dinp, const float* inp, const float* dout, size_t n) override;
  void residual_forward(float* out, const float* a, const float* b, size_t n) override;
  void accumulate(float* y, const float* x, size_t n) override;
  void scale(float* x, float s, size_t n) override;
  void crossentropy_forward(float* losses, const float* logits, const int32_t* targets, int N,
                            int V, int Vp) override;
  void crossentropy_backward(float* dlogits, const float* logits, const int32_t* targets,
                             float dloss, int N, int V, int Vp) override;
  double sum_squares(const float* x, size_t n) override;
  void adamw_update(float* params, const float* grads, float* m, float* v, size_t n, float lr,
                    float beta1, float beta2, float eps, float weight_decay, float grad_scale,
                    int t) override;

 private:
  int num_threads_;
};

}  // namespace competelm::cpu
