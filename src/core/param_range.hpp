#pragma once
// A range of elements of a model's flat parameter (or gradient) buffer, and the listener the
// backward pass tells as ranges of gradients become final.
#include <cstddef>

namespace competelm {

struct ParamRange {
  size_t begin = 0, end = 0;  // elements [begin, end) of the flat buffer
  size_t size() const { return end - begin; }
};

// GPT2::backward calls grads_ready once per range of GPT2::grad_ready_order(), in that order,
// as soon as no later op of the backward writes those gradients: a data-parallel reduction
// can start on them while the backward goes on with earlier layers.
class GradReadyListener {
 public:
  virtual ~GradReadyListener() = default;
  virtual void grads_ready(ParamRange range) = 0;
};

}  // namespace competelm
