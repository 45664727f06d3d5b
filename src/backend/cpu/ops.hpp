#pragma once
// The CPU backend's ops as free functions (fp32, host memory, OpenMP + OpenBLAS). Each has
// the signature and contract of the Backend method of the same name (see backend.hpp):
// backward ops ACCUMULATE into their gradients (matmul_backward and gelu_backward may
// overwrite dinp instead: GradMode), crossentropy_backward may run in place.
// Every op is deterministic for a given thread count: reductions across threads combine
// per-thread (or per-block) partials in a fixed order, never in arrival order.
#include <cstddef>
#include <cstdint>

#include "backend/backend.hpp"  // GradMode

namespace competelm::cpu {

// ---- embeddings (encoder.cpp) -------------------------------------------------------------
void encoder_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe,
                     int B, int T, int C);
void encoder_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens,
                      int B, int T, int C);

// ---- layernorm (layernorm.cpp), eps = 1e-5, biased variance ----------------------------------
inline constexpr float kLayerNormEps = 1e-5f;
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp,
                       const float* weight, const float* bias, int N, int C);
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                        const float* inp, const float* weight, const float* mean,
                        const float* rstd, int N, int C);
// res += x, then layernorm_forward on res, one pass per row; bit-identical to the two calls.
void residual_layernorm_forward(float* res, const float* x, float* out, float* mean, float* rstd,
                                const float* weight, const float* bias, int N, int C);

// ---- linear layers through cblas_sgemm (matmul.cpp) -------------------------------------------
void matmul_forward(float* out, const float* inp, const float* weight, const float* bias,
                    int N, int C, int OC);
// dinp, dweight, dbias may each be null (that gradient is then not computed); dinp_mode
// overwrite: dinp = dout · weight (sgemm beta = 0) instead of +=.
void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                     const float* inp, const float* weight, int N, int C, int OC, GradMode dinp_mode);

// ---- causal self-attention (attention.cpp), scale 1/sqrt(hs) -----------------------------------
void attention_forward(float* out, float* att, const float* qkv, int B, int T, int C, int NH);
void attention_backward(float* dqkv, float* scratch, const float* dout, const float* qkv,
                        const float* att, int B, int T, int C, int NH);

// ---- pointwise (gelu.cpp, residual.cpp) ---------------------------------------------------------
void gelu_forward(float* out, const float* inp, size_t n);
void gelu_backward(float* dinp, const float* inp, const float* dout, size_t n, GradMode mode);
void residual_forward(float* out, const float* a, const float* b, size_t n);
void accumulate(float* y, const float* x, size_t n);
void scale(float* x, float s, size_t n);

// ---- loss (crossentropy.cpp) ---------------------------------------------------------------------
// Throws competelm::Error when a target lies outside [0, V).
void crossentropy_forward(float* losses, const float* logits, const int32_t* targets, int N,
                          int V, int Vp);
void crossentropy_backward(float* dlogits, const float* logits, const float* losses,
                           const int32_t* targets, float dloss, int N, int V, int Vp);

// ---- optimizer (adamw.cpp) ------------------------------------------------------------------------
double sum_squares(const float* x, size_t n);
void adamw_update(float* params, const float* grads, float* m, float* v, size_t n, float lr,
                  float beta1, float beta2, float eps, float weight_decay, float grad_scale,
                  int t);

// ---- MoE routing math (moe_routing.cpp, moe_losses.cpp, moe_dispatch.cpp, moe_compete.cpp) ----
void moe_router_forward(float* act, float* probs, const float* logits, int N, int E, bool sigmoid);
void moe_router_backward(float* dlogits, const float* dval, const int32_t* idx, const float* dprobs,
    const float* act, const float* probs, int N, int E, int K, bool sigmoid);
void moe_topk(int32_t* idx, float* val, const float* x, int N, int E, int K);
void moe_gate_forward(float* gate, const float* val, int N, int K, bool softmax);
void moe_gate_backward(float* dval, const float* dgate, const float* gate, const float* val, int N,
    int K, bool softmax);
void moe_softmax_forward(float* out, const float* inp, int N, int E);
void moe_softmax_backward(float* dinp, const float* dout, const float* out, int N, int E);
double moe_entropy_balance(float* dp, const float* p, int B, int T, int E, float scale);
double moe_switch_balance(float* dp, const float* p, const int32_t* idx, int N, int E, int K,
    float scale);
double moe_z_loss(float* dlogits, const float* logits, int N, int E, float scale);
double moe_distill_loss(float* dp, const float* p, const float* scores, const int32_t* idx, int N,
    int E, int K, float theta, bool topk_target, float scale);
double moe_diversity_loss(float* drows, const float* rows, const int32_t* row_of_slot, int N, int K,
    int C, float scale);
double moe_mean_entropy(const float* p, int N, int E);
double moe_topk_overlap(const int32_t* a, const int32_t* b, int N, int K);
void moe_permute(int32_t* offsets, int32_t* row_of_slot, int32_t* slot_of_row, const int32_t* idx,
    int N, int E, int K);
void moe_gather_rows(float* out, const float* inp, const int32_t* src, int div, int R, int C);
void moe_combine_forward(float* out, const float* rows, const float* gate,
    const int32_t* row_of_slot, int N, int K, int C);
void moe_combine_backward(float* drows, float* dgate, const float* dout, const float* rows,
    const float* gate, const int32_t* row_of_slot, int N, int K, int C);
void moe_scatter_rows(float* dinp, const float* drows, const int32_t* row_of_slot, int N, int K,
    int C);
void moe_expert_score(float* scores, int stride, const float* o, int N, int C, bool l2);
void moe_expert_score_backward(float* d_o, const float* dscores, int stride, const float* o, int N,
    int C, bool l2);
void moe_compete_insert(int32_t* idx, float* best, float* keep_o, float* keep_h, const float* scores,
    int stride, const float* o, const float* h, int expert, int N, int K, int C, int H);

}  // namespace competelm::cpu
