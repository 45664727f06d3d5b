#pragma once
// AdamW over the model's parameter table: fp32 moments for the ranges of the flat parameter
// buffer this rank owns (all of it in a single process; its ZeRO-1 shards under data
// parallelism), decoupled weight decay only on tensors whose spec says so.
#include <cstdint>
#include <vector>

#include "backend/backend.hpp"
#include "core/tensor_table.hpp"
#include "dist/data_parallel.hpp"

namespace competelm {

struct AdamWOptions {
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.1f;
};

class AdamW {
 public:
  // owned: ranges of the flat buffer this rank updates; empty = all of it.
  AdamW(Backend& backend, const TensorTable& params, const AdamWOptions& opts,
        std::vector<ParamRange> owned = {});
  ~AdamW();
  AdamW(const AdamW&) = delete;
  AdamW& operator=(const AdamW&) = delete;

  // One update of the owned ranges: params -= lr·(...), with the gradients multiplied by
  // grad_scale first (clipping). Increments the step counter t (1-based inside).
  void step(float* params, const float* grads, float lr, float grad_scale = 1.0f);
  // Σ g² over the owned ranges (alignment gaps excluded): this rank's share of the norm².
  double owned_sum_squares(const float* grads) const;

  int64_t t() const { return t_; }
  void set_t(int64_t t) { t_ = t; }
  const std::vector<ParamRange>& owned() const { return owned_; }
  // Moments ↔ host buffers in the parameters' layout (total_elements): export fills the
  // owned ranges (the rest zero), import reads the owned ranges.
  void export_moments(std::vector<float>& m, std::vector<float>& v) const;
  void import_moments(const std::vector<float>& m, const std::vector<float>& v);
  const TensorTable& table() const { return table_; }

 private:
  Backend& be_;
  const TensorTable& table_;
  AdamWOptions opts_;
  std::vector<ParamRange> owned_;
  size_t owned_elements_ = 0;
  float* m_ = nullptr;  // backend memory: the owned ranges back to back
  float* v_ = nullptr;
  int64_t t_ = 0;
  // Calls fn(tensor, lo, hi, moment_offset) for each piece of a tensor inside an owned range.
  template <typename Fn>
  void for_each_owned_piece(Fn&& fn) const;
};

// sqrt(Σ g²) over every parameter tensor's gradient (alignment gaps excluded).
double global_grad_norm(Backend& backend, const TensorTable& params, const float* grads);

}  // namespace competelm
