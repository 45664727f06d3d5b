#pragma once
// AdamW over the model's parameter table: fp32 moments in one backend allocation laid out
// like the parameters, decoupled weight decay only on tensors whose spec says so.
#include <cstdint>

#include "backend/backend.hpp"
#include "core/tensor_table.hpp"

namespace competelm {

struct AdamWOptions {
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.1f;
};

class AdamW {
 public:
  AdamW(Backend& backend, const TensorTable& params, const AdamWOptions& opts);
  ~AdamW();
  AdamW(const AdamW&) = delete;
  AdamW& operator=(const AdamW&) = delete;

  // One update of every tensor: params -= lr·(...), with the gradients multiplied by
  // grad_scale first (clipping). Increments the step counter t (1-based inside).
  void step(float* params, const float* grads, float lr, float grad_scale = 1.0f);

  int64_t t() const { return t_; }
  void set_t(int64_t t) { t_ = t; }
  float* m() { return m_; }  // backend memory, params.total_elements() floats
  float* v() { return v_; }
  const TensorTable& table() const { return table_; }

 private:
  Backend& be_;
  const TensorTable& table_;
  AdamWOptions opts_;
  float* m_ = nullptr;
  float* v_ = nullptr;
  int64_t t_ = 0;
};

// sqrt(Σ g²) over every parameter tensor's gradient (alignment gaps excluded).
double global_grad_norm(Backend& backend, const TensorTable& params, const float* grads);

}  // namespace competelm
