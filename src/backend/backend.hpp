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
//    gradient buffers at the start of an optimizer step / backward pass. Exception: the ops
//    taking a GradMode (matmul_backward, gelu_backward) may instead OVERWRITE (=) their input
//    gradient dinp, for a destination the caller would otherwise zero just before the call
//    (an activation gradient): that saves the zero-fill pass and, in a GEMM, the read of the
//    destination (beta = 0). Weight and bias gradients are always accumulated (gradient
//    accumulation over micro-batches relies on it).
//  - N = number of rows (B·T) where an op does not care about the sequence structure.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace competelm {

// How the matrix products (linear layers and attention) compute. Storage is fp32 in every
// mode (parameters, gradients, activations, optimizer state); the modes differ in what the
// tensor cores see:
//   fp32  exact fp32 products (CUDA cores): the CPU oracle's precision, for tests;
//   tf32  operands rounded to TF32 (10-bit mantissa), fp32 accumulation;
//   bf16  operands rounded to bf16 (8-bit mantissa), fp32 accumulation (the fast mode).
enum class Precision { fp32, tf32, bf16 };
const char* precision_name(Precision p);

// What a backward op does with its input-gradient destination dinp: add to it (+=) or
// overwrite it (=, its prior contents never read: NaN there is harmless). Overwriting equals
// accumulating into zeros, bit for bit (up to the sign of a zero).
enum class GradMode { accumulate, overwrite };

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  // The CPU backend computes in fp32 only; the CUDA backend takes any Precision.
  virtual void set_precision(Precision p);
  virtual Precision precision() const { return Precision::fp32; }
  // True when the backend's pointers are host memory (the CPU backend): collectives can then
  // read and write them directly; otherwise they need device communicators (host-staged MPI
  // or NCCL: attach_device_comms in dist/dist_context.hpp).
  virtual bool memory_is_host() const { return false; }

  // ---- memory ----------------------------------------------------------------------
  virtual void* alloc(size_t bytes) = 0;  // zero-initialised
  virtual void dealloc(void* p) = 0;
  virtual void upload(void* dst, const void* src_host, size_t bytes) = 0;
  virtual void download(void* dst_host, const void* src, size_t bytes) = 0;
  virtual void zero(void* p, size_t bytes) = 0;
  virtual void synchronize() {}

  // ---- low-precision parameter copy (CUDA bf16; no-ops elsewhere) ----------------------------
  // The model's flat parameter buffer (n floats, backend memory); null/0 unbinds. A backend that
  // multiplies in bf16 may keep a bf16 copy of it for the GEMMs to read.
  virtual void set_param_buffer(const float* /*params*/, size_t /*n*/) {}
  // (Re)writes that copy from the fp32 parameters with stochastic rounding drawn from a hash of
  // (seed, step, element index): the same bits on every rank and on a resumed run. Call after
  // every write of the parameters (optimizer update + gather, initialisation, checkpoint load),
  // with `step` = optimizer steps completed. A write the backend sees (upload, adamw_update)
  // invalidates the copy until then: the GEMMs fall back to rounding the fp32 weights per call.
  virtual void refresh_param_copy(uint64_t /*seed*/, uint64_t /*step*/) {}

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
  // The residual add fused with the layernorm that reads its sum, in one pass over the rows:
  //   res += x;  layernorm_forward(out, mean, rstd, res, weight, bias)
  // exactly those semantics (same eps and statistics; res keeps the sum for the backward). The
  // default makes the two calls; the CPU and CUDA backends override it with a single pass.
  virtual void residual_layernorm_forward(float* res /*(N,C)*/, const float* x /*(N,C)*/,
                                          float* out /*(N,C)*/, float* mean /*(N)*/, float* rstd /*(N)*/,
                                          const float* weight /*(C)*/, const float* bias /*(C)*/, int N,
                                          int C) {
    accumulate(res, x, size_t(N) * size_t(C));
    layernorm_forward(out, mean, rstd, res, weight, bias, N, C);
  }

  // ---- linear layers ---------------------------------------------------------------------
  // out = inp · weightᵀ (+ bias). bias may be null.
  virtual void matmul_forward(float* out /*(N,OC)*/, const float* inp /*(N,C)*/,
                              const float* weight /*(OC,C)*/, const float* bias /*(OC) or null*/,
                              int N, int C, int OC) = 0;
  // dinp += dout · weight (dinp_mode overwrite: dinp = dout · weight, 0 when OC = 0);
  // dweight += doutᵀ · inp; dbias += Σ_rows dout. dinp, dweight and dbias may each be null.
  virtual void matmul_backward(float* dinp /*(N,C)*/, float* dweight /*(OC,C)*/,
                               float* dbias /*(OC) or null*/, const float* dout /*(N,OC)*/,
                               const float* inp /*(N,C)*/, const float* weight /*(OC,C)*/,
                               int N, int C, int OC, GradMode dinp_mode) = 0;
  // The first layer of an MLP: pre = inp · weightᵀ (+ bias), out = gelu(pre), exactly
  // matmul_forward then gelu_forward (pre is kept: gelu_backward needs it). The default is
  // those two calls; a backend may fuse the GELU into the GEMM's epilogue.
  virtual void matmul_gelu_forward(float* pre /*(N,OC)*/, float* out /*(N,OC)*/, const float* inp /*(N,C)*/,
                                   const float* weight /*(OC,C)*/, const float* bias /*(OC) or null*/, int N,
                                   int C, int OC) {
    matmul_forward(pre, inp, weight, bias, N, C, OC);
    gelu_forward(out, pre, static_cast<size_t>(N) * static_cast<size_t>(OC));
  }
  // The backward of an MLP's second layer fused with the GELU before it: with inp = gelu(pre),
  // dweight += doutᵀ · inp; dbias += Σ_rows dout; dpre = gelu'(pre) ∘ (dout · weight)
  // (overwritten). dpre may alias inp (the MoE experts reuse the activation's memory): the
  // weight gradient reads inp before dpre is written. scratch_dinp (N,C) is free memory the
  // default uses for dout · weight; it must not alias the other arguments. The default is
  // matmul_backward then gelu_backward, both overwriting; a backend may fuse the GELU
  // derivative into the dinp GEMM's epilogue.
  virtual void matmul_backward_gelu(float* dpre /*(N,C)*/, float* dweight /*(OC,C)*/,
                                    float* dbias /*(OC) or null*/, const float* dout /*(N,OC)*/,
                                    const float* inp /*(N,C): gelu(pre)*/, const float* pre /*(N,C)*/,
                                    const float* weight /*(OC,C)*/, int N, int C, int OC,
                                    float* scratch_dinp /*(N,C)*/) {
    matmul_backward(scratch_dinp, dweight, dbias, dout, inp, weight, N, C, OC, GradMode::overwrite);
    gelu_backward(dpre, pre, scratch_dinp, static_cast<size_t>(N) * static_cast<size_t>(C), GradMode::overwrite);
  }

  // ---- causal self-attention ---------------------------------------------------------------
  // Elements of the per-layer state the attention forward keeps for its backward (`att`
  // below) and of the backward's scratch. The CPU oracle keeps the (B,NH,T,T) weights; a
  // flash-attention backend keeps only per-row softmax statistics (B,NH,T).
  virtual size_t attention_state_elements(int B, int NH, int T) const { return size_t(B) * NH * T * T; }
  virtual size_t attention_scratch_elements(int B, int NH, int T) const { return size_t(B) * NH * T * T; }
  // qkv holds q, k, v concatenated per token (each C = NH·hs wide). att (of
  // attention_state_elements) keeps what the backward needs: on the CPU the softmaxed
  // (B,NH,T,T) weights.
  virtual void attention_forward(float* out /*(B,T,C)*/, float* att /*(B,NH,T,T)*/,
                                 const float* qkv /*(B,T,3C)*/, int B, int T, int C, int NH) = 0;
  // dqkv += ∂L/∂qkv. scratch (attention_scratch_elements) is free memory for the backward.
  // out is what attention_forward wrote for these inputs: a flash-attention backward takes
  // its per-row D = rowsum(dout ∘ out) from it instead of recomputing the forward.
  virtual void attention_backward(float* dqkv /*(B,T,3C)*/, float* scratch /*(B,NH,T,T)*/,
                                  const float* dout /*(B,T,C)*/, const float* out /*(B,T,C)*/,
                                  const float* qkv /*(B,T,3C)*/,
                                  const float* att /*(B,NH,T,T)*/, int B, int T, int C, int NH) = 0;

  // ---- pointwise -----------------------------------------------------------------------------
  // GELU, tanh approximation (as GPT-2).
  virtual void gelu_forward(float* out, const float* inp, size_t n) = 0;
  // dinp += gelu'(inp) · dout (mode overwrite: dinp = gelu'(inp) · dout).
  virtual void gelu_backward(float* dinp, const float* inp, const float* dout, size_t n, GradMode mode) = 0;
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
  // Σ x² over the element ranges [first, second) of x, in double, with one wait for the result
  // however many ranges (a host round trip per tensor costs more than the sums on a GPU). The
  // order of summation is fixed by the ranges, so the result is deterministic.
  virtual double sum_squares_ranges(const float* x, const std::vector<std::pair<size_t, size_t>>& ranges) {
    double sum = 0.0;
    for (const auto& [begin, end] : ranges) sum += sum_squares(x + begin, end - begin);
    return sum;
  }
  // AdamW step t (1-based) on n elements, bias-corrected, decoupled weight decay:
  //   m = b1 m + (1-b1) g·grad_scale;  v = b2 v + (1-b2) (g·grad_scale)²
  //   p -= lr · ( m̂ / (sqrt(v̂) + eps) + wd · p )
  virtual void adamw_update(float* params, const float* grads, float* m, float* v, size_t n,
                            float lr, float beta1, float beta2, float eps, float weight_decay,
                            float grad_scale, int t) = 0;

  // ---- MoE ----
  // The routing math of a Mixture-of-Experts layer (src/moe/moe_layer.hpp). N tokens, E
  // experts, K winners per token; index tensors are int32 in backend memory. A "slot" is a
  // (token n, choice k) pair, numbered n·K + k; a "row" is a slot's position in the
  // expert-sorted (grouped) buffers of R = N·K rows. Top-K is descending with ties going to
  // the LOWEST index. Ops returning a double reduce to the host (a sync on a device backend).
  // Loss ops: d pointers may be null (value only); otherwise they ACCUMULATE scale·∂loss/∂.
  //
  // Router: act = softmax(logits) (sigmoid=false; probs = act, the two may alias) or
  // act = sigmoid(logits) and probs = act / Σ_e act (sigmoid=true, normalised-sigmoid gating).
  virtual void moe_router_forward(float* act /*(N,E)*/, float* probs /*(N,E)*/,
                                  const float* logits /*(N,E)*/, int N, int E, bool sigmoid) = 0;
  // dlogits (=) = ∂L/∂logits given ∂L/∂act at the top-K entries (dval at idx; dval may be
  // null) and ∂L/∂probs (dprobs, may be null).
  virtual void moe_router_backward(float* dlogits /*(N,E)*/, const float* dval /*(N,K)*/,
                                   const int32_t* idx /*(N,K)*/, const float* dprobs /*(N,E)*/,
                                   const float* act /*(N,E)*/, const float* probs /*(N,E)*/,
                                   int N, int E, int K, bool sigmoid) = 0;
  // idx = top-K of each row of x (descending, ties → lowest index), val = x[idx].
  virtual void moe_topk(int32_t* idx /*(N,K)*/, float* val /*(N,K)*/, const float* x /*(N,E)*/,
                        int N, int E, int K) = 0;
  // gate = val / Σ_k val (softmax=false) or softmax_k(val) (softmax=true), per token.
  virtual void moe_gate_forward(float* gate /*(N,K)*/, const float* val /*(N,K)*/, int N, int K,
                                bool softmax) = 0;
  // dval (=) = ∂L/∂val given dgate; gate is the forward's output.
  virtual void moe_gate_backward(float* dval /*(N,K)*/, const float* dgate /*(N,K)*/,
                                 const float* gate /*(N,K)*/, const float* val /*(N,K)*/, int N,
                                 int K, bool softmax) = 0;
  // Row softmax, and its backward (dinp +=).
  virtual void moe_softmax_forward(float* out /*(N,E)*/, const float* inp /*(N,E)*/, int N, int E) = 0;
  virtual void moe_softmax_backward(float* dinp /*(N,E)*/, const float* dout /*(N,E)*/,
                                    const float* out /*(N,E)*/, int N, int E) = 0;
  // Entropy balance: P_b = mean over sequence b's T tokens of p; loss = -mean_b H(P_b).
  virtual double moe_entropy_balance(float* dp /*(B·T,E)*/, const float* p /*(B·T,E)*/, int B,
                                     int T, int E, float scale) = 0;
  // Switch balance: E · Σ_e f_e · P_e, f_e = fraction of tokens with idx[:,0] = e (no
  // gradient through f), P_e = mean over tokens of p.
  virtual double moe_switch_balance(float* dp /*(N,E)*/, const float* p /*(N,E)*/,
                                    const int32_t* idx /*(N,K)*/, int N, int E, int K,
                                    float scale) = 0;
  // z-loss: mean_n logsumexp(logits_n)².
  virtual double moe_z_loss(float* dlogits /*(N,E)*/, const float* logits /*(N,E)*/, int N, int E,
                            float scale) = 0;
  // Router distillation: target t = softmax(scores) (topk_target: softmax over the winners'
  // scores, 0 elsewhere), stop-gradient; loss = mean_{n,e} (p - t)² + theta · mean_{n,k}
  // (p[idx] - t[idx])². Gradient into p only.
  virtual double moe_distill_loss(float* dp /*(N,E)*/, const float* p /*(N,E)*/,
                                  const float* scores /*(N,E)*/, const int32_t* idx /*(N,K)*/,
                                  int N, int E, int K, float theta, bool topk_target,
                                  float scale) = 0;
  // Diversity: mean_n (1/K²) Σ_{i≠j} cos(rows[row(n,i)], rows[row(n,j)]).
  virtual double moe_diversity_loss(float* drows /*(R,C)*/, const float* rows /*(R,C)*/,
                                    const int32_t* row_of_slot /*(N,K)*/, int N, int K, int C,
                                    float scale) = 0;
  // Statistics: mean_n H(p_n) (nats), and mean_n |a_n ∩ b_n| / K.
  virtual double moe_mean_entropy(const float* p /*(N,E)*/, int N, int E) = 0;
  virtual double moe_topk_overlap(const int32_t* a /*(N,K)*/, const int32_t* b /*(N,K)*/, int N,
                                  int K) = 0;
  // Grouping: offsets[e] = first row of expert e (offsets[E] = N·K); a stable permutation
  // (slots of one expert keep token order): row_of_slot[n·K+k] and its inverse slot_of_row.
  virtual void moe_permute(int32_t* offsets /*(E+1)*/, int32_t* row_of_slot /*(N,K)*/,
                           int32_t* slot_of_row /*(N·K)*/, const int32_t* idx /*(N,K)*/, int N,
                           int E, int K) = 0;
  // out[r,:] = inp[src[r] / div, :]  (div = K gathers token rows for slots, 1 = plain gather).
  virtual void moe_gather_rows(float* out /*(R,C)*/, const float* inp, const int32_t* src /*(R)*/,
                               int div, int R, int C) = 0;
  // out[n,:] (=) = Σ_k gate[n,k] · rows[row_of_slot[n,k], :]
  virtual void moe_combine_forward(float* out /*(N,C)*/, const float* rows /*(R,C)*/,
                                   const float* gate /*(N,K)*/, const int32_t* row_of_slot /*(N,K)*/,
                                   int N, int K, int C) = 0;
  // drows[row(n,k)] (=) = gate[n,k] · dout[n];  dgate[n,k] (=) = <dout[n], rows[row(n,k)]>
  virtual void moe_combine_backward(float* drows /*(R,C)*/, float* dgate /*(N,K)*/,
                                    const float* dout /*(N,C)*/, const float* rows /*(R,C)*/,
                                    const float* gate /*(N,K)*/, const int32_t* row_of_slot /*(N,K)*/,
                                    int N, int K, int C) = 0;
  // dinp[n,:] += Σ_k drows[row_of_slot[n,k], :]
  virtual void moe_scatter_rows(float* dinp /*(N,C)*/, const float* drows /*(R,C)*/,
                                const int32_t* row_of_slot /*(N,K)*/, int N, int K, int C) = 0;
  // Competition scores of one expert's outputs: scores[n·stride] = mean_c softplus(o[n,c])
  // (l2=false) or ||o[n,:]||₂ (l2=true). Backward: d_o[n,:] += dscores[n·stride] · ∂s/∂o.
  virtual void moe_expert_score(float* scores, int stride, const float* o /*(N,C)*/, int N, int C,
                                bool l2) = 0;
  virtual void moe_expert_score_backward(float* d_o /*(N,C)*/, const float* dscores, int stride,
                                         const float* o /*(N,C)*/, int N, int C, bool l2) = 0;
  // Running top-K over experts visited in increasing index order: expert `expert`'s scores
  // (scores[n·stride]) enter token n's K slots (idx, best) when they beat the worst held one
  // (strictly: an earlier, lower index wins ties), and its rows of o and h are copied into the
  // slot's keep_o / keep_h. The call for expert 0 starts every token's slots afresh.
  virtual void moe_compete_insert(int32_t* idx /*(N,K)*/, float* best /*(N,K)*/,
                                  float* keep_o /*(N·K,C)*/, float* keep_h /*(N·K,H)*/,
                                  const float* scores, int stride, const float* o /*(N,C)*/,
                                  const float* h /*(N,H)*/, int expert, int N, int K, int C,
                                  int H) = 0;
};

// device: "cpu", "cuda" or "auto" (cuda when built and a GPU is present, else cpu).
// num_threads: CPU threads (0 = all cores); gpu: the CUDA device (a rank's local rank).
// Throws a competelm::Error naming the reason when the requested backend is unavailable.
std::unique_ptr<Backend> make_backend(const std::string& device, int num_threads = 0, int gpu = 0);
// run.precision onto a backend: auto = bf16 on CUDA, fp32 elsewhere; fp32/tf32/bf16 as named
// (an Error naming run.precision where the backend cannot, e.g. bf16 on the CPU).
void apply_precision(Backend& backend, const std::string& precision);

}  // namespace competelm
