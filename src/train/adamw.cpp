#include "train/adamw.hpp"

#include <cmath>

namespace competelm {

AdamW::AdamW(Backend& backend, const TensorTable& params, const AdamWOptions& opts)
    : be_(backend), table_(params), opts_(opts) {
  const size_t bytes = params.total_elements() * sizeof(float);
  m_ = static_cast<float*>(be_.alloc(bytes));
  v_ = static_cast<float*>(be_.alloc(bytes));
}

AdamW::~AdamW() {
  be_.dealloc(m_);
  be_.dealloc(v_);
}

void AdamW::step(float* params, const float* grads, float lr, float grad_scale) {
  ++t_;
  for (const TensorSpec& s : table_.specs()) {
    const float wd = s.weight_decay ? opts_.weight_decay : 0.0f;
    be_.adamw_update(params + s.offset, grads + s.offset, m_ + s.offset, v_ + s.offset, s.numel, lr,
                     opts_.beta1, opts_.beta2, opts_.eps, wd, grad_scale, static_cast<int>(t_));
  }
}

double global_grad_norm(Backend& backend, const TensorTable& params, const float* grads) {
  double sum = 0.0;
  for (const TensorSpec& s : params.specs()) sum += backend.sum_squares(grads + s.offset, s.numel);
  return std::sqrt(sum);
}

}  // namespace competelm
