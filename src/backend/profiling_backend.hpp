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
  void matmul_forward(float* out, const float* inp, const float* w, const float* b, int N, int C,
                      int OC) override {
    timed("matmul", 2.0 * N * C * OC, [&] { in_.matmul_forward(out, inp, w, b, N, C, OC); });
  }
  void matmul_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp,
                       const float* w, int N, int C, int OC) override {
    timed("matmul", 4.0 * N * C * OC, [&] { in_.matmul_backward(dinp, dw, db, dout, inp, w, N, C, OC); });
  }
  void attention_forward(float* out, float* att, const float* qkv, int B, int T, int C, int NH) override {
    timed("attention", 2.0 * B * T * T * C, [&] { in_.attention_forward(out, att, qkv, B, T, C, NH); });
  }
  void attention_backward(float* dqkv, float* scratch, const float* dout, const float* qkv, const float* att,
                          int B, int T, int C, int NH) override {
    timed("attention", 4.0 * B * T * T * C,
          [&] { in_.attention_backward(dqkv, scratch, dout, qkv, att, B, T, C, NH); });
  }
  void gelu_forward(float* out, const float* inp, size_t n) override {
    timed("gelu", 0, [&] { in_.gelu_forward(out, inp, n); });
  }
  void gelu_backward(float* dinp, const float* inp, const float* dout, size_t n) override {
    timed("gelu", 0, [&] { in_.gelu_backward(dinp, inp, dout, n); });
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
  void crossentropy_backward(float* dl, const float* logits, const int32_t* t, float dloss, int N, int V,
                             int Vp) override {
    timed("crossentropy", 0, [&] { in_.crossentropy_backward(dl, logits, t, dloss, N, V, Vp); });
  }
  double sum_squares(const float* x, size_t n) override {
    double r = 0;
    timed("optimizer", 0, [&] { r = in_.sum_squares(x, n); });
    return r;
  }
  void adamw_update(float* p, const float* g, float* m, float* v, size_t n, float lr, float b1, float b2,
                    float eps, float wd, float gs, int t) override {
    timed("optimizer", 0, [&] { in_.adamw_update(p, g, m, v, n, lr, b1, b2, eps, wd, gs, t); });
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
