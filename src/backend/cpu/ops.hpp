#pragma once
// The CPU backend's ops as free functions (fp32, host memory, OpenMP + OpenBLAS). Each has
// the signature and contract of the Backend method of the same name (see backend.hpp):
// backward ops ACCUMULATE into their gradients, crossentropy_backward may run in place.
// Every op is deterministic for a given thread count: reductions across threads combine
// per-thread (or per-block) partials in a fixed order, never in arrival order.
#include <cstddef>
#include <cstdint>

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

// ---- linear layers through cblas_sgemm (matmul.cpp) -------------------------------------------
void matmul_forward(float* out, const float* inp, const float* weight, const float* bias,
                    int N, int C, int OC);
// dinp, dweight, dbias may each be null (that gradient is then not computed).
void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                     const float* inp, const float* weight, int N, int C, int OC);

// ---- causal self-attention (attention.cpp), scale 1/sqrt(hs) -----------------------------------
void attention_forward(float* out, float* att, const float* qkv, int B, int T, int C, int NH);
void attention_backward(float* dqkv, float* scratch, const float* dout, const float* qkv,
                        const float* att, int B, int T, int C, int NH);

// ---- pointwise (gelu.cpp, residual.cpp) ---------------------------------------------------------
void gelu_forward(float* out, const float* inp, size_t n);
void gelu_backward(float* dinp, const float* inp, const float* dout, size_t n);
void residual_forward(float* out, const float* a, const float* b, size_t n);
void accumulate(float* y, const float* x, size_t n);
void scale(float* x, float s, size_t n);

// ---- loss (crossentropy.cpp) ---------------------------------------------------------------------
// Throws competelm::Error when a target lies outside [0, V).
void crossentropy_forward(float* losses, const float* logits, const int32_t* targets, int N,
                          int V, int Vp);
void crossentropy_backward(float* dlogits, const float* logits, const int32_t* targets,
                           float dloss, int N, int V, int Vp);

// ---- optimizer (adamw.cpp) ------------------------------------------------------------------------
double sum_squares(const float* x, size_t n);
void adamw_update(float* params, const float* grads, float* m, float* v, size_t n, float lr,
                  float beta1, float beta2, float eps, float weight_decay, float grad_scale,
                  int t);

}  // namespace competelm::cpu
