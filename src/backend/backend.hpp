#pragma once
// The op interface every backend implements. The model's forward and backward passes and
// the training loop are written once against it; the CPU backend (fp32, OpenMP, OpenBLAS)
// is the reference oracle, the CUDA backend implements the same calls on device memory.
//
// Conventions (llm.c style):
//  - Pointers are backend memory (host memory for the CPU backend), fp32 unless noted.
//  - Linear weights are (OC, C) row-major: out = inp · weightᵀ + bias.
//  - Every backward op ACCUMULATES (+=) into the gradients it writes (dinp, dweight,
//    dbias), so residual branches and weight sharing need no extra adds. The caller zeroes
//    gradient buffers at the start of an optimizer step / backward pass.
//  - N = number of rows (B·T) where an op does not care about the sequence structure.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace competelm {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;

  // ---- memory ----------------------------------------------------------------------
  virtual void* alloc(size_t bytes) = 0;  // zero-initialised
  virtual void dealloc(void* p) = 0;
  virtual void upload(void* dst, const void* src_host, size_t bytes) = 0;
  virtual void download(void* dst_host, const void* src, size_t bytes) = 0;
  virtual void zero(void* p, size_t bytes) = 0;
  virtual void synchronize() {}

  // ---- embeddings --------------------------------------------------------------------
  // out[b,t,:] = wte[tokens[b,t],:] + wpe[t,:]
  virtual void encoder_forward(float* out /*(B,T,C)*/, const int32_t* tokens /*(B,T)*/,
                               const float* wte /*(Vp,C)*/, const float* wpe /*(maxT,C)*/,
                               int B, int T, int C) = 0;
  virtual void encoder_backward(float* dwte /*(Vp,C)*/, float* dwpe /*(maxT,C)*/,
                                const float* dout /*(B,T,C)*/, const int32_t* tokens /*(B,T)*/,
                                int B, int T, int C) = 0;

  // ---- layernorm (eps = 1e-5), statistics kept for the backward pass ---------------------
  virtual void layernorm_forward(float* out /*(N,C)*/, float* mean /*(N)*/, float* rstd /*(N)*/,
                                 const float* inp /*(N,C)*/, const float* weight /*(C)*/,
                                 const float* bias /*(C)*/, int N, int C) = 0;
  virtual void layernorm_backward(float* dinp /*(N,C)*/, float* dweight /*(C)*/, float* dbias /*(C)*/,
                                  const float* dout /*(N,C)*/, const float* inp /*(N,C)*/,
                                  const float* weight /*(C)*/, const float* mean /*(N)*/,
                                  const float* rstd /*(N)*/, int N, int C) = 0;

  // ---- linear layers ---------------------------------------------------------------------
  // out = inp · weightᵀ (+ bias). bias may be null.
  virtual void matmul_forward(float* out /*(N,OC)*/, const float* inp /*(N,C)*/,
                              const float* weight /*(OC,C)*/, const float* bias /*(OC) or null*/,
                              int N, int C, int OC) = 0;
  // dinp += dout · weight; dweight += doutᵀ · inp; dbias += Σ_rows dout. dbias may be null.
  virtual void matmul_backward(float* dinp /*(N,C)*/, float* dweight /*(OC,C)*/,
                               float* dbias /*(OC) or null*/, const float* dout /*(N,OC)*/,
                               const float* inp /*(N,C)*/, const float* weight /*(OC,C)*/,
                               int N, int C, int OC) = 0;

  // ---- causal self-attention ---------------------------------------------------------------
  // qkv holds q, k, v concatenated per token (each C = NH·hs wide). att keeps the softmaxed
  // (B,NH,T,T) attention weights for the backward pass (CPU oracle; CUDA uses flash attention).
  virtual void attention_forward(float* out /*(B,T,C)*/, float* att /*(B,NH,T,T)*/,
                                 const float* qkv /*(B,T,3C)*/, int B, int T, int C, int NH) = 0;
  // dqkv += ∂L/∂qkv. scratch is (B,NH,T,T) of free memory for the backward of the softmax.
  virtual void attention_backward(float* dqkv /*(B,T,3C)*/, float* scratch /*(B,NH,T,T)*/,
                                  const float* dout /*(B,T,C)*/, const float* qkv /*(B,T,3C)*/,
                                  const float* att /*(B,NH,T,T)*/, int B, int T, int C, int NH) = 0;

  // ---- pointwise -----------------------------------------------------------------------------
  // GELU, tanh approximation (as GPT-2).
  virtual void gelu_forward(float* out, const float* inp, size_t n) = 0;
  virtual void gelu_backward(float* dinp, const float* inp, const float* dout, size_t n) = 0;  // dinp +=
  // out = a + b
  virtual void residual_forward(float* out, const float* a, const float* b, size_t n) = 0;
  // y += x
  virtual void accumulate(float* y, const float* x, size_t n) = 0;
  // x *= s
  virtual void scale(float* x, float s, size_t n) = 0;

  // ---- loss ---------------------------------------------------------------------------------
  // Softmax cross-entropy over the first V of Vp columns (padding columns are ignored).
  // losses[i] = -log softmax(logits[i])[targets[i]]. Logits are left untouched.
  virtual void crossentropy_forward(float* losses /*(N)*/, const float* logits /*(N,Vp)*/,
                                    const int32_t* targets /*(N)*/, int N, int V, int Vp) = 0;
  // dlogits = dloss · (softmax(logits) - onehot(target)), 0 in the padding columns.
  // dlogits may alias logits (fused, in place: the full probability tensor is never stored).
  // losses are the forward's: a row's log-sum-exp is losses[i] + logits[i, target], so the
  // backward makes one pass over the logits instead of recomputing the softmax statistics.
  virtual void crossentropy_backward(float* dlogits /*(N,Vp)*/, const float* logits /*(N,Vp)*/,
                                     const float* losses /*(N)*/, const int32_t* targets /*(N)*/,
                                     float dloss, int N, int V, int Vp) = 0;

  // ---- optimizer -------------------------------------------------------------------------------
  // Σ x² in double precision (for the global grad norm).
  virtual double sum_squares(const float* x, size_t n) = 0;
  // AdamW step t (1-based) on n elements, bias-corrected, decoupled weight decay:
  //   m = b1 m + (1-b1) g·grad_scale;  v = b2 v + (1-b2) (g·grad_scale)²
  //   p -= lr · ( m̂ / (sqrt(v̂) + eps) + wd · p )
  virtual void adamw_update(float* params, const float* grads, float* m, float* v, size_t n,
                            float lr, float beta1, float beta2, float eps, float weight_decay,
                            float grad_scale, int t) = 0;
};

// device: "cpu", "cuda" or "auto" (cuda when built and a GPU is present, else cpu).
// Throws a competelm::Error naming the reason when the requested backend is unavailable.
std::unique_ptr<Backend> make_backend(const std::string& device, int num_threads = 0);

}  // namespace competelm
