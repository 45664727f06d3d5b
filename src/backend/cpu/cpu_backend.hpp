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
  bool memory_is_host() const override { return true; }
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
  void residual_layernorm_forward(float* res, const float* x, float* out, float* mean, float* rstd,
                                  const float* weight, const float* bias, int N, int C) override;
  void matmul_forward(float* out, const float* inp, const float* weight, const float* bias,
                      int N, int C, int OC) override;
  void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                       const float* inp, const float* weight, int N, int C, int OC,
                       GradMode dinp_mode) override;
  void attention_forward(float* out, float* att, const float* qkv, int B, int T, int C,
                         int NH) override;
  void attention_backward(float* dqkv, float* scratch, const float* dout, const float* out,
                          const float* qkv, const float* att, int B, int T, int C, int NH) override;
  void gelu_forward(float* out, const float* inp, size_t n) override;
  void gelu_backward(float* dinp, const float* inp, const float* dout, size_t n, GradMode mode) override;
  void residual_forward(float* out, const float* a, const float* b, size_t n) override;
  void accumulate(float* y, const float* x, size_t n) override;
  void scale(float* x, float s, size_t n) override;
  void crossentropy_forward(float* losses, const float* logits, const int32_t* targets, int N,
                            int V, int Vp) override;
  void crossentropy_backward(float* dlogits, const float* logits, const float* losses,
                             const int32_t* targets, float dloss, int N, int V, int Vp) override;
  double sum_squares(const float* x, size_t n) override;
  void adamw_update(float* params, const float* grads, float* m, float* v, size_t n, float lr,
                    float beta1, float beta2, float eps, float weight_decay, float grad_scale,
                    int t) override;

  // ---- MoE ----
  void moe_router_forward(float* act, float* probs, const float* logits, int N, int E,
    bool sigmoid) override;
  void moe_router_backward(float* dlogits, const float* dval, const int32_t* idx,
    const float* dprobs, const float* act, const float* probs, int N, int E, int K,
    bool sigmoid) override;
  void moe_topk(int32_t* idx, float* val, const float* x, int N, int E, int K) override;
  void moe_gate_forward(float* gate, const float* val, int N, int K, bool softmax) override;
  void moe_gate_backward(float* dval, const float* dgate, const float* gate, const float* val, int N,
    int K, bool softmax) override;
  void moe_softmax_forward(float* out, const float* inp, int N, int E) override;
  void moe_softmax_backward(float* dinp, const float* dout, const float* out, int N,
    int E) override;
  double moe_entropy_balance(float* dp, const float* p, int B, int T, int E, float scale) override;
  double moe_switch_balance(float* dp, const float* p, const int32_t* idx, int N, int E, int K,
    float scale) override;
  double moe_z_loss(float* dlogits, const float* logits, int N, int E, float scale) override;
  double moe_distill_loss(float* dp, const float* p, const float* scores, const int32_t* idx, int N,
    int E, int K, float theta, bool topk_target, float scale) override;
  double moe_diversity_loss(float* drows, const float* rows, const int32_t* row_of_slot, int N,
    int K, int C, float scale) override;
  double moe_mean_entropy(const float* p, int N, int E) override;
  double moe_topk_overlap(const int32_t* a, const int32_t* b, int N, int K) override;
  void moe_permute(int32_t* offsets, int32_t* row_of_slot, int32_t* slot_of_row, const int32_t* idx,
    int N, int E, int K) override;
  void moe_gather_rows(float* out, const float* inp, const int32_t* src, int div, int R,
    int C) override;
  void moe_combine_forward(float* out, const float* rows, const float* gate,
    const int32_t* row_of_slot, int N, int K, int C) override;
  void moe_combine_backward(float* drows, float* dgate, const float* dout, const float* rows,
    const float* gate, const int32_t* row_of_slot, int N, int K, int C) override;
  void moe_scatter_rows(float* dinp, const float* drows, const int32_t* row_of_slot, int N, int K,
    int C) override;
  void moe_expert_score(float* scores, int stride, const float* o, int N, int C, bool l2) override;
  void moe_expert_score_backward(float* d_o, const float* dscores, int stride, const float* o, int N,
    int C, bool l2) override;
  void moe_compete_insert(int32_t* idx, float* best, float* keep_o, float* keep_h,
    const float* scores, int stride, const float* o, const float* h, int expert, int N, int K, int C,
    int H) override;

 private:
  int num_threads_;
};

}  // namespace competelm::cpu
