#pragma once
// A Backend decorator that times every op (synchronising around it) and counts the FLOPs
// of the GEMMs, for the benchmark's per-op breakdown. Not used in training.
#include <chrono>
#include <map>
#include <memory>
#include <string>

#include "backend/backend.hpp"

namespace competelm {

struct OpStats {
  double seconds = 0.0;
  double flops = 0.0;  // counted for GEMMs and attention only
  long calls = 0;
};

class ProfilingBackend : public Backend {
 public:
  explicit ProfilingBackend(Backend& inner) : in_(inner) {}
  const std::map<std::string, OpStats>& stats() const { return stats_; }
  void reset() { stats_.clear(); }

  std::string name() const override { return in_.name(); }
  void set_precision(Precision p) override { in_.set_precision(p); }
  Precision precision() const override { return in_.precision(); }
  bool memory_is_host() const override { return in_.memory_is_host(); }
  void set_param_buffer(const float* p, size_t n) override { in_.set_param_buffer(p, n); }
  void refresh_param_copy(uint64_t seed, uint64_t step) override {  // a bf16 backend's work only
    if (in_.precision() != Precision::bf16) return in_.refresh_param_copy(seed, step);
    timed("param_copy", 0, [&] { in_.refresh_param_copy(seed, step); });
  }
  void* alloc(size_t bytes) override { return in_.alloc(bytes); }
  void dealloc(void* p) override { in_.dealloc(p); }
  void upload(void* d, const void* s, size_t b) override { in_.upload(d, s, b); }
  void download(void* d, const void* s, size_t b) override { in_.download(d, s, b); }
  void zero(void* p, size_t b) override { timed("zero", 0, [&] { in_.zero(p, b); }); }
  void synchronize() override { in_.synchronize(); }

  void encoder_forward(float* out, const int32_t* tok, const float* wte, const float* wpe, int B, int T,
                       int C) override {
    timed("encoder", 0, [&] { in_.encoder_forward(out, tok, wte, wpe, B, T, C); });
  }
  void encoder_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tok, int B, int T,
                        int C) override {
    timed("encoder", 0, [&] { in_.encoder_backward(dwte, dwpe, dout, tok, B, T, C); });
  }
  void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* w,
                         const float* b, int N, int C) override {
    timed("layernorm", 0, [&] { in_.layernorm_forward(out, mean, rstd, inp, w, b, N, C); });
  }
  void layernorm_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp,
                          const float* w, const float* mean, const float* rstd, int N, int C) override {
    timed("layernorm", 0, [&] { in_.layernorm_backward(dinp, dw, db, dout, inp, w, mean, rstd, N, C); });
  }
  void residual_layernorm_forward(float* res, const float* x, float* out, float* mean, float* rstd,
                                  const float* w, const float* b, int N, int C) override {
    timed("layernorm", 0, [&] { in_.residual_layernorm_forward(res, x, out, mean, rstd, w, b, N, C); });
  }
  void matmul_forward(float* out, const float* inp, const float* w, const float* b, int N, int C,
                      int OC) override {
    timed("matmul", 2.0 * N * C * OC, [&] { in_.matmul_forward(out, inp, w, b, N, C, OC); });
  }
  void matmul_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp,
                       const float* w, int N, int C, int OC, GradMode dinp_mode) override {
    timed("matmul", 4.0 * N * C * OC,
          [&] { in_.matmul_backward(dinp, dw, db, dout, inp, w, N, C, OC, dinp_mode); });
  }
  void matmul_gelu_forward(float* pre, float* out, const float* inp, const float* w, const float* b, int N, int C,
                           int OC) override {  // the GELU rides on the GEMM: timed as "matmul", its FLOPs
    timed("matmul", 2.0 * N * C * OC, [&] { in_.matmul_gelu_forward(pre, out, inp, w, b, N, C, OC); });
  }
  void matmul_backward_gelu(float* dpre, float* dw, float* db, const float* dout, const float* inp, const float* pre,
                            const float* w, int N, int C, int OC, float* scratch_dinp) override {
    timed("matmul", 4.0 * N * C * OC,  // the GELU derivative rides on the dinp GEMM
          [&] { in_.matmul_backward_gelu(dpre, dw, db, dout, inp, pre, w, N, C, OC, scratch_dinp); });
  }
  void attention_forward(float* out, float* att, const float* qkv, int B, int T, int C, int NH) override {
    timed("attention", 2.0 * B * T * T * C, [&] { in_.attention_forward(out, att, qkv, B, T, C, NH); });
  }
  void attention_backward(float* dqkv, float* scratch, const float* dout, const float* out, const float* qkv,
                          const float* att, int B, int T, int C, int NH) override {
    timed("attention", 4.0 * B * T * T * C,
          [&] { in_.attention_backward(dqkv, scratch, dout, out, qkv, att, B, T, C, NH); });
  }
  void gelu_forward(float* out, const float* inp, size_t n) override {
    timed("gelu", 0, [&] { in_.gelu_forward(out, inp, n); });
  }
  void gelu_backward(float* dinp, const float* inp, const float* dout, size_t n, GradMode mode) override {
    timed("gelu", 0, [&] { in_.gelu_backward(dinp, inp, dout, n, mode); });
  }
  void residual_forward(float* out, const float* a, const float* b, size_t n) override {
    timed("residual", 0, [&] { in_.residual_forward(out, a, b, n); });
  }
  void accumulate(float* y, const float* x, size_t n) override {
    timed("residual", 0, [&] { in_.accumulate(y, x, n); });
  }
  void scale(float* x, float s, size_t n) override { timed("residual", 0, [&] { in_.scale(x, s, n); }); }
  void crossentropy_forward(float* losses, const float* logits, const int32_t* t, int N, int V,
                            int Vp) override {
    timed("crossentropy", 0, [&] { in_.crossentropy_forward(losses, logits, t, N, V, Vp); });
  }
  void crossentropy_backward(float* dl, const float* logits, const float* losses, const int32_t* t,
                             float dloss, int N, int V, int Vp) override {
    timed("crossentropy", 0, [&] { in_.crossentropy_backward(dl, logits, losses, t, dloss, N, V, Vp); });
  }
  double sum_squares(const float* x, size_t n) override {
    double r = 0;
    timed("optimizer", 0, [&] { r = in_.sum_squares(x, n); });
    return r;
  }
  double sum_squares_ranges(const float* x, const std::vector<std::pair<size_t, size_t>>& ranges) override {
    double r = 0;
    timed("optimizer", 0, [&] { r = in_.sum_squares_ranges(x, ranges); });
    return r;
  }
  void adamw_update(float* p, const float* g, float* m, float* v, size_t n, float lr, float b1, float b2,
                    float eps, float wd, float gs, int t) override {
    timed("optimizer", 0, [&] { in_.adamw_update(p, g, m, v, n, lr, b1, b2, eps, wd, gs, t); });
  }

  // ---- MoE ----
  void moe_router_forward(float* act, float* probs, const float* logits, int N, int E,
    bool sigmoid) override {
    timed("moe", 0, [&] { in_.moe_router_forward(act, probs, logits, N, E, sigmoid); });
  }
  void moe_router_backward(float* dlogits, const float* dval, const int32_t* idx,
    const float* dprobs, const float* act, const float* probs, int N, int E, int K,
    bool sigmoid) override {
    timed("moe", 0, [&] { in_.moe_router_backward(dlogits, dval, idx, dprobs, act, probs, N, E, K,
      sigmoid); });
  }
  void moe_topk(int32_t* idx, float* val, const float* x, int N, int E, int K) override {
    timed("moe", 0, [&] { in_.moe_topk(idx, val, x, N, E, K); });
  }
  void moe_gate_forward(float* gate, const float* val, int N, int K, bool softmax) override {
    timed("moe", 0, [&] { in_.moe_gate_forward(gate, val, N, K, softmax); });
  }
  void moe_gate_backward(float* dval, const float* dgate, const float* gate, const float* val, int N,
    int K, bool softmax) override {
    timed("moe", 0, [&] { in_.moe_gate_backward(dval, dgate, gate, val, N, K, softmax); });
  }
  void moe_softmax_forward(float* out, const float* inp, int N, int E) override {
    timed("moe", 0, [&] { in_.moe_softmax_forward(out, inp, N, E); });
  }
  void moe_softmax_backward(float* dinp, const float* dout, const float* out, int N,
    int E) override {
    timed("moe", 0, [&] { in_.moe_softmax_backward(dinp, dout, out, N, E); });
  }
  double moe_entropy_balance(float* dp, const float* p, int B, int T, int E, float scale) override {
    double r = 0;
    timed("moe", 0, [&] { r = in_.moe_entropy_balance(dp, p, B, T, E, scale); });
    return r;
  }
  double moe_switch_balance(float* dp, const float* p, const int32_t* idx, int N, int E, int K,
    float scale) override {
    double r = 0;
    timed("moe", 0, [&] { r = in_.moe_switch_balance(dp, p, idx, N, E, K, scale); });
    return r;
  }
  double moe_z_loss(float* dlogits, const float* logits, int N, int E, float scale) override {
    double r = 0;
    timed("moe", 0, [&] { r = in_.moe_z_loss(dlogits, logits, N, E, scale); });
    return r;
  }
  double moe_distill_loss(float* dp, const float* p, const float* scores, const int32_t* idx, int N,
    int E, int K, float theta, bool topk_target, float scale) override {
    double r = 0;
    timed("moe", 0, [&] { r = in_.moe_distill_loss(dp, p, scores, idx, N, E, K, theta, topk_target,
      scale); });
    return r;
  }
  double moe_diversity_loss(float* drows, const float* rows, const int32_t* row_of_slot, int N,
    int K, int C, float scale) override {
    double r = 0;
    timed("moe", 0, [&] { r = in_.moe_diversity_loss(drows, rows, row_of_slot, N, K, C, scale); });
    return r;
  }
  double moe_mean_entropy(const float* p, int N, int E) override {
    double r = 0;
    timed("moe", 0, [&] { r = in_.moe_mean_entropy(p, N, E); });
    return r;
  }
  double moe_topk_overlap(const int32_t* a, const int32_t* b, int N, int K) override {
    double r = 0;
    timed("moe", 0, [&] { r = in_.moe_topk_overlap(a, b, N, K); });
    return r;
  }
  void moe_permute(int32_t* offsets, int32_t* row_of_slot, int32_t* slot_of_row, const int32_t* idx,
    int N, int E, int K) override {
    timed("moe", 0, [&] { in_.moe_permute(offsets, row_of_slot, slot_of_row, idx, N, E, K); });
  }
  void moe_gather_rows(float* out, const float* inp, const int32_t* src, int div, int R,
    int C) override {
    timed("moe", 0, [&] { in_.moe_gather_rows(out, inp, src, div, R, C); });
  }
  void moe_combine_forward(float* out, const float* rows, const float* gate,
    const int32_t* row_of_slot, int N, int K, int C) override {
    timed("moe", 0, [&] { in_.moe_combine_forward(out, rows, gate, row_of_slot, N, K, C); });
  }
  void moe_combine_backward(float* drows, float* dgate, const float* dout, const float* rows,
    const float* gate, const int32_t* row_of_slot, int N, int K, int C) override {
    timed("moe", 0, [&] { in_.moe_combine_backward(drows, dgate, dout, rows, gate, row_of_slot, N, K,
      C); });
  }
  void moe_scatter_rows(float* dinp, const float* drows, const int32_t* row_of_slot, int N, int K,
    int C) override {
    timed("moe", 0, [&] { in_.moe_scatter_rows(dinp, drows, row_of_slot, N, K, C); });
  }
  void moe_expert_score(float* scores, int stride, const float* o, int N, int C, bool l2) override {
    timed("moe", 0, [&] { in_.moe_expert_score(scores, stride, o, N, C, l2); });
  }
  void moe_expert_score_backward(float* d_o, const float* dscores, int stride, const float* o, int N,
    int C, bool l2) override {
    timed("moe", 0, [&] { in_.moe_expert_score_backward(d_o, dscores, stride, o, N, C, l2); });
  }
  void moe_compete_insert(int32_t* idx, float* best, float* keep_o, float* keep_h,
    const float* scores, int stride, const float* o, const float* h, int expert, int N, int K, int C,
    int H) override {
    timed("moe", 0, [&] { in_.moe_compete_insert(idx, best, keep_o, keep_h, scores, stride, o, h,
      expert, N, K, C, H); });
  }

 private:
  template <typename F>
  void timed(const char* op, double flops, F&& f) {
    in_.synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    f();
    in_.synchronize();
    OpStats& s = stats_[op];
    s.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    s.flops += flops;
    s.calls++;
  }
  Backend& in_;
  std::map<std::string, OpStats> stats_;
};

}  // namespace competelm
