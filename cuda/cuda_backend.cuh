#pragma once
// The CUDA backend: the Backend op interface on one GPU, fp32 tensors in device memory
// (parameters, gradients, activations, optimizer state), GEMMs through cuBLASLt, custom
// kernels for the rest. Precision (backend.hpp) picks what the matrix products compute in:
// fp32 by default (results track the CPU oracle), tf32 or bf16 tensor-core operands.
// Every op is enqueued on one stream; the host waits only where a value is needed there
// (download, ops returning a double). No float atomics: deterministic run to run.
//
// One file per op family implements the members: cuda_backend.cu (memory, handles),
// encoder.cu, layernorm.cu, matmul.cu, attention.cu (flash attention), pointwise.cu,
// crossentropy.cu, optimizer.cu, moe_*.cu.
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>

#include "backend/backend.hpp"

namespace competelm::cuda {

// A GPU code path behind a gate: on when `verified` (it has passed its GPU tests), overridden
// by the environment variable `env` set to 0 (off, e.g. to compare speed) or 1 (on, to test an
// unverified path).
bool gate_enabled(bool verified, const char* env);

// The persistent bf16 parameter copy (param_copy.cu): verified on an H100 on 2026-11-23
// (tests/gpu/test_cuda_bf16_params.cpp, the bf16 model, training and bit-for-bit resume tests
// with it on, compute-sanitizer memcheck clean), so it is on by default.
inline constexpr bool kBf16ParamCopyVerified = true;
// kBf16ParamCopyVerified unless COMPETELM_BF16_PARAM_COPY is 0 (off) or 1 (on).
bool bf16_param_copy_requested();

// The fused GEMM + GELU forward (matmul_gelu_forward through cuBLASLt's GELU_AUX_BIAS
// epilogue, matmul.cu): verified on an H100 on 2026-11-23 (tests/gpu/test_cuda_epilogue.cpp,
// the model gradient and bf16 training tests with it on; cuBLASLt's GELU is the tanh form), so
// it is on by default.
inline constexpr bool kGemmEpilogueVerified = true;
// kGemmEpilogueVerified unless COMPETELM_GEMM_EPILOGUES is 0 (off) or 1 (on).
bool gemm_epilogues_requested();

// The register-resident FlashAttention-2 kernels of the bf16 mode (attention_mma.cu: mma.sync
// m16n8k16, head sizes 32 and 64): verified on an H100 on 2026-11-23
// (tests/gpu/test_cuda_attention_mma.cpp, the attention, model and bf16 training / bit-for-bit
// resume tests with it on, memcheck and racecheck clean), so on by default; the wmma kernels
// (attention_tc.cu) serve head size 128 and COMPETELM_ATTENTION_MMA=0.
inline constexpr bool kAttentionMmaVerified = true;
// kAttentionMmaVerified unless COMPETELM_ATTENTION_MMA is 0 (off) or 1 (on).
bool attention_mma_requested();

// The fused GEMM + GELU backward (matmul_backward_gelu through cuBLASLt's DGELU epilogue,
// matmul.cu): emulated on the CPU (tests/cuda_emu) but not yet run on a GPU
// (tests/gpu/test_cuda_epilogue.cpp), so off by default.
inline constexpr bool kDgeluEpilogueVerified = false;
// kDgeluEpilogueVerified unless COMPETELM_DGELU_EPILOGUE is 0 (off) or 1 (on).
bool dgelu_epilogue_requested();

struct MatmulCache;  // cuBLASLt descriptors and algorithms per GEMM shape (matmul_cache.cuh)

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device);
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  std::string name() const override { return "cuda"; }
  int device() const { return device_; }
  cudaStream_t stream() const { return stream_; }
  // fp32 (default): exact fp32 GEMMs and attention. tf32: GEMM operands rounded to TF32
  // (~1e-3 relative). bf16: GEMM and attention operands rounded to bf16 (~4e-3 relative),
  // fp32 accumulation, tensor-core attention (attention_tc.cu).
  void set_precision(Precision p) override { precision_ = p; }
  Precision precision() const override { return precision_; }
  // Peak device memory held so far, in bytes: alloc() plus the backend's own scratch and
  // cuBLASLt workspace (everything this backend cudaMallocs).
  size_t peak_bytes() const { return peak_bytes_; }
  size_t live_bytes() const { return live_bytes_; }

  // ---- memory ----
  void* alloc(size_t bytes) override;
  void dealloc(void* p) override;
  void upload(void* dst, const void* src_host, size_t bytes) override;
  void download(void* dst_host, const void* src, size_t bytes) override;
  void zero(void* p, size_t bytes) override;
  void synchronize() override;

  // ---- bf16 parameter copy (param_copy.cu) ----
  // Used by the bf16 GEMMs when switched on (bf16_param_copy_requested() at construction, or
  // set_param_copy_enabled) and valid: written by refresh_param_copy / write_param_copy, made
  // invalid by upload / zero / adamw_update touching the bound range and by rebinding it, gone
  // with dealloc of the block holding it. Invalid: the GEMMs convert the fp32 weights per call.
  void set_param_buffer(const float* params, size_t n) override;
  void refresh_param_copy(uint64_t seed, uint64_t step) override;
  enum class ParamRounding { stochastic, nearest };
  // Writes the copy (whatever the switch and precision; nearest = the per-call conversion's
  // rounding, for tests) and marks it valid.
  void write_param_copy(uint64_t seed, uint64_t step, ParamRounding rounding);
  void set_param_copy_enabled(bool on) { param_copy_enabled_ = on; }
  bool param_copy_enabled() const { return param_copy_enabled_; }
  // The copy (n packed bf16 bit patterns, device memory) while valid, else null.
  const void* param_copy() const { return param_copy_valid_ ? param_copy_ : nullptr; }

  // ---- embeddings ----
  void encoder_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int B, int T,
                       int C) override;
  void encoder_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int B, int T,
                        int C) override;

  // ---- layernorm ----
  void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                         const float* bias, int N, int C) override;
  void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                          const float* weight, const float* mean, const float* rstd, int N, int C) override;
  void residual_layernorm_forward(float* res, const float* x, float* out, float* mean, float* rstd,
                                  const float* weight, const float* bias, int N, int C) override;

  // ---- linear ----
  void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int N, int C,
                      int OC) override;
  void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                       const float* weight, int N, int C, int OC, GradMode dinp_mode) override;
  // One cuBLASLt call with the GELU_AUX_BIAS epilogue (D = out, aux = pre) when switched on
  // (gemm_epilogues_requested() at construction, or set_gemm_epilogues_enabled) and the shapes
  // and pointers meet its requirements; else the unfused default.
  void matmul_gelu_forward(float* pre, float* out, const float* inp, const float* weight, const float* bias, int N,
                           int C, int OC) override;
  // The weight and bias gradients, then dpre in one cuBLASLt call with the DGELU epilogue
  // (D = dpre, aux = pre) when switched on (dgelu_epilogue_requested() at construction, or
  // set_dgelu_epilogue_enabled) and the shapes and pointers meet its requirements; else the
  // unfused default.
  void matmul_backward_gelu(float* dpre, float* dweight, float* dbias, const float* dout, const float* inp,
                            const float* pre, const float* weight, int N, int C, int OC,
                            float* scratch_dinp) override;
  void set_dgelu_epilogue_enabled(bool on) { dgelu_epilogue_enabled_ = on; }
  bool dgelu_epilogue_enabled() const { return dgelu_epilogue_enabled_; }
  void set_gemm_epilogues_enabled(bool on) { gemm_epilogues_enabled_ = on; }
  bool gemm_epilogues_enabled() const { return gemm_epilogues_enabled_; }

  // ---- attention (flash: no T×T tensor) ----
  // bf16 mode: the mma kernels (attention_mma.cu) where switched on (attention_mma_requested()
  // at construction, or set_attention_mma_enabled) and the head size has one; else attention_tc.cu.
  void set_attention_mma_enabled(bool on) { attention_mma_enabled_ = on; }
  bool attention_mma_enabled() const { return attention_mma_enabled_; }
  size_t attention_state_elements(int B, int NH, int T) const override;
  size_t attention_scratch_elements(int B, int NH, int T) const override;
  void attention_forward(float* out, float* att, const float* qkv, int B, int T, int C, int NH) override;
  void attention_backward(float* dqkv, float* scratch, const float* dout, const float* out, const float* qkv,
                          const float* att, int B, int T, int C, int NH) override;

  // ---- pointwise ----
  void gelu_forward(float* out, const float* inp, size_t n) override;
  void gelu_backward(float* dinp, const float* inp, const float* dout, size_t n, GradMode mode) override;
  void residual_forward(float* out, const float* a, const float* b, size_t n) override;
  void accumulate(float* y, const float* x, size_t n) override;
  void scale(float* x, float s, size_t n) override;

  // ---- loss ----
  void crossentropy_forward(float* losses, const float* logits, const int32_t* targets, int N, int V,
                            int Vp) override;
  void crossentropy_backward(float* dlogits, const float* logits, const float* losses, const int32_t* targets,
                             float dloss, int N, int V, int Vp) override;

  // ---- optimizer ----
  double sum_squares(const float* x, size_t n) override;
  double sum_squares_ranges(const float* x, const std::vector<std::pair<size_t, size_t>>& ranges) override;
  void adamw_update(float* params, const float* grads, float* m, float* v, size_t n, float lr, float beta1,
                    float beta2, float eps, float weight_decay, float grad_scale, int t) override;

  // ---- MoE ----
  void moe_router_forward(float* act, float* probs, const float* logits, int N, int E, bool sigmoid) override;
  void moe_router_backward(float* dlogits, const float* dval, const int32_t* idx, const float* dprobs,
                           const float* act, const float* probs, int N, int E, int K, bool sigmoid) override;
  void moe_topk(int32_t* idx, float* val, const float* x, int N, int E, int K) override;
  void moe_gate_forward(float* gate, const float* val, int N, int K, bool softmax) override;
  void moe_gate_backward(float* dval, const float* dgate, const float* gate, const float* val, int N, int K,
                         bool softmax) override;
  void moe_softmax_forward(float* out, const float* inp, int N, int E) override;
  void moe_softmax_backward(float* dinp, const float* dout, const float* out, int N, int E) override;
  double moe_entropy_balance(float* dp, const float* p, int B, int T, int E, float scale) override;
  double moe_switch_balance(float* dp, const float* p, const int32_t* idx, int N, int E, int K,
                            float scale) override;
  double moe_z_loss(float* dlogits, const float* logits, int N, int E, float scale) override;
  double moe_distill_loss(float* dp, const float* p, const float* scores, const int32_t* idx, int N, int E,
                          int K, float theta, bool topk_target, float scale) override;
  double moe_diversity_loss(float* drows, const float* rows, const int32_t* row_of_slot, int N, int K, int C,
                            float scale) override;
  double moe_mean_entropy(const float* p, int N, int E) override;
  double moe_topk_overlap(const int32_t* a, const int32_t* b, int N, int K) override;
  void moe_permute(int32_t* offsets, int32_t* row_of_slot, int32_t* slot_of_row, const int32_t* idx, int N,
                   int E, int K) override;
  void moe_gather_rows(float* out, const float* inp, const int32_t* src, int div, int R, int C) override;
  void moe_combine_forward(float* out, const float* rows, const float* gate, const int32_t* row_of_slot, int N,
                           int K, int C) override;
  void moe_combine_backward(float* drows, float* dgate, const float* dout, const float* rows, const float* gate,
                            const int32_t* row_of_slot, int N, int K, int C) override;
  void moe_scatter_rows(float* dinp, const float* drows, const int32_t* row_of_slot, int N, int K,
                        int C) override;
  void moe_expert_score(float* scores, int stride, const float* o, int N, int C, bool l2) override;
  void moe_expert_score_backward(float* d_o, const float* dscores, int stride, const float* o, int N, int C,
                                 bool l2) override;
  void moe_compete_insert(int32_t* idx, float* best, float* keep_o, float* keep_h, const float* scores,
                          int stride, const float* o, const float* h, int expert, int N, int K, int C,
                          int H) override;

  // ---- helpers shared by the op files ----
  cublasLtHandle_t lt() const { return lt_; }
  void* lt_workspace() const { return lt_workspace_; }
  size_t lt_workspace_bytes() const { return lt_workspace_bytes_; }

  // Device scratch of at least `bytes` (grown on demand, reused by every op: ops on one
  // stream never overlap). Valid until the next call with the same slot. Slot 0 is the ops'
  // general scratch; slots 1 and 2 hold the bf16 copies of a GEMM's two operands.
  static constexpr int kScratchSlots = 3;
  void* scratch(size_t bytes, int slot = 0);
  // A double computed on the device into scratch, copied to the host (synchronises).
  double fetch_double(const double* dev);

 private:
  // Frees every resource (constructor failure and destructor); never throws.
  void release() noexcept;
  void* device_malloc(size_t bytes, const char* what);  // cudaMalloc + live/peak accounting
  // The copy is stale once [p, p + bytes) overlaps the bound parameter range.
  void invalidate_param_copy(const void* p, size_t bytes);
  // Forgets the bound range and frees the copy; the caller has synchronised the stream.
  void unbind_param_buffer() noexcept;
  // The bf16 copy of a GEMM operand stored packed (rows, cols; ld = rows) when it lies wholly in
  // the valid copy's range and is 16-byte aligned there; else null (convert per call).
  const void* param_copy_operand(const float* src, int rows, int cols, int ld) const;
  // A bf16 image of an fp32 operand shared by the GEMMs of one op (matmul_backward's dout is the
  // B operand of both its products): set for the op's duration, matched in gemm() by pointer
  // and stored layout (rows, cols, ld), so the operand is converted once instead of per GEMM.
  struct SharedOperand {
    const float* src = nullptr;
    int rows = 0, cols = 0, ld = 0;
    const void* bf16 = nullptr;
  };
  SharedOperand shared_operand_;
  void device_free(void* p, size_t bytes) noexcept;
  // Column-major cuBLASLt GEMM on the stream (matmul.cu):
  //   D (m,n; ld ldd) = op(A) · op(B) + beta · D  (+ bias[m] broadcast over the columns)
  // op(A) is (m,k): A stored (k,m) with lda when trans_a, else (m,k). op(B) is (k,n) likewise.
  // Precision: fp32 as is; tf32 rounds the operands inside cuBLASLt; bf16 first copies A and B
  // into packed bf16 scratch (round to nearest even), then multiplies on the tensor cores.
  // `tokens` names the dimension that is the token count (it varies step to step in MoE layers:
  // plans are bucketed by it, see matmul.cu).
  // gelu_aux (needs bias): the GELU_AUX_BIAS epilogue, gelu_aux (m,n; ld ldd) = the
  // pre-activation, D = gelu(gelu_aux); false (nothing enqueued) when cuBLASLt has no algorithm
  // for it. Without gelu_aux it always returns true (no algorithm is an error).
  // dgelu_aux (no bias, no gelu_aux, beta 0): the DGELU epilogue, dgelu_aux (m,n; ld ldd) = the
  // forward's pre-activation, D = gelu'(dgelu_aux) ∘ op(A)·op(B); false (nothing enqueued) when
  // cuBLASLt has no algorithm for it.
  enum class GemmTokens { none, n, k };
  bool gemm(bool trans_a, bool trans_b, int m, int n, int k, const float* A, int lda, const float* B, int ldb,
            float* D, int ldd, float beta, const float* bias, GemmTokens tokens, float* gelu_aux = nullptr,
            const float* dgelu_aux = nullptr);

  int device_;
  cudaStream_t stream_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  void* lt_workspace_ = nullptr;
  size_t lt_workspace_bytes_ = 0;
  void* scratch_[kScratchSlots] = {};
  size_t scratch_bytes_[kScratchSlots] = {};
  Precision precision_ = Precision::fp32;
  size_t live_bytes_ = 0, peak_bytes_ = 0;
  std::unordered_map<void*, size_t> sizes_;  // alloc()ed blocks still live → bytes
  std::unique_ptr<MatmulCache> matmul_cache_;
  // The bf16 parameter copy: the bound fp32 range, its bf16 image (capacity in elements).
  const float* params_ = nullptr;
  size_t params_n_ = 0;
  uint16_t* param_copy_ = nullptr;
  size_t param_copy_capacity_ = 0;
  bool param_copy_valid_ = false;
  bool param_copy_enabled_ = bf16_param_copy_requested();
  bool gemm_epilogues_enabled_ = gemm_epilogues_requested();
  bool dgelu_epilogue_enabled_ = dgelu_epilogue_requested();
  bool attention_mma_enabled_ = attention_mma_requested();
};

}  // namespace competelm::cuda
