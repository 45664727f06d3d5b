#include "train/adamw.hpp"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

namespace competelm {

AdamW::AdamW(Backend& backend, const TensorTable& params, const AdamWOptions& opts, std::vector<ParamRange> owned)
    : be_(backend), table_(params), opts_(opts), owned_(std::move(owned)) {
  if (owned_.empty()) owned_.push_back({0, params.total_elements()});
  for (const ParamRange& r : owned_) owned_elements_ += r.size();
  const size_t bytes = std::max<size_t>(owned_elements_, 1) * sizeof(float);
  m_ = static_cast<float*>(be_.alloc(bytes));
  v_ = static_cast<float*>(be_.alloc(bytes));
}

AdamW::~AdamW() {
  be_.dealloc(m_);
  be_.dealloc(v_);
}

template <typename Fn>
void AdamW::for_each_owned_piece(Fn&& fn) const {
  size_t moment_base = 0;
  for (const ParamRange& r : owned_) {
    for (const TensorSpec& s : table_.specs()) {
      const size_t lo = std::max(r.begin, s.offset), hi = std::min(r.end, s.offset + s.numel);
      if (lo < hi) fn(s, lo, hi, moment_base + (lo - r.begin));
    }
    moment_base += r.size();
  }
}

void AdamW::step(float* params, const float* grads, float lr, float grad_scale) {
  ++t_;
  for_each_owned_piece([&](const TensorSpec& s, size_t lo, size_t hi, size_t mo) {
    const float wd = s.weight_decay ? opts_.weight_decay : 0.0f;
    be_.adamw_update(params + lo, grads + lo, m_ + mo, v_ + mo, hi - lo, lr, opts_.beta1, opts_.beta2, opts_.eps,
                     wd, grad_scale, static_cast<int>(t_));
  });
}

double AdamW::owned_sum_squares(const float* grads) const {
  std::vector<std::pair<size_t, size_t>> pieces;
  for_each_owned_piece([&](const TensorSpec&, size_t lo, size_t hi, size_t) { pieces.emplace_back(lo, hi); });
  return be_.sum_squares_ranges(grads, pieces);
}

void AdamW::export_moments(std::vector<float>& m, std::vector<float>& v) const {
  m.assign(table_.total_elements(), 0.0f);
  v.assign(table_.total_elements(), 0.0f);
  size_t base = 0;
  for (const ParamRange& r : owned_) {
    be_.download(m.data() + r.begin, m_ + base, r.size() * sizeof(float));
    be_.download(v.data() + r.begin, v_ + base, r.size() * sizeof(float));
    base += r.size();
  }
}

void AdamW::import_moments(const std::vector<float>& m, const std::vector<float>& v) {
  size_t base = 0;
  for (const ParamRange& r : owned_) {
    be_.upload(m_ + base, m.data() + r.begin, r.size() * sizeof(float));
    be_.upload(v_ + base, v.data() + r.begin, r.size() * sizeof(float));
    base += r.size();
  }
}

double global_grad_norm(Backend& backend, const TensorTable& params, const float* grads) {
  double sum = 0.0;
  for (const TensorSpec& s : params.specs()) sum += backend.sum_squares(grads + s.offset, s.numel);
  return std::sqrt(sum);
}

}  // namespace competelm
