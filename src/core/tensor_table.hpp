#pragma once
// A table of named tensors laid out in one allocation (llm.c style), addressed by name or
// by the handle returned at registration, never by magic indices. Parameters, gradients,
// optimizer moments and activations each live in one buffer described by such a table.
#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace competelm {

struct TensorSpec {
  std::string name;             // e.g. "blocks.3.attn.qkv.weight"
  std::vector<int64_t> shape;   // e.g. {3*C, C}
  size_t offset = 0;            // in elements from the start of the buffer
  size_t numel = 0;
  bool weight_decay = false;    // AdamW applies decoupled weight decay to this tensor
};

class TensorTable {
 public:
  // Registers a tensor; returns its index (stable handle). Offsets are aligned to 64
  // elements so every tensor starts on a cache line / vector-friendly boundary.
  size_t add(std::string name, std::vector<int64_t> shape, bool weight_decay = false);
  const TensorSpec& operator[](size_t i) const { return specs_[i]; }
  const TensorSpec& at(const std::string& name) const;  // throws Error naming the tensor
  const TensorSpec* find(const std::string& name) const;
  const std::vector<TensorSpec>& specs() const { return specs_; }
  size_t size() const { return specs_.size(); }
  size_t total_elements() const { return total_; }  // buffer length incl. alignment gaps
  size_t count_elements() const;                      // Σ numel (the parameter count)

 private:
  std::vector<TensorSpec> specs_;
  std::unordered_map<std::string, size_t> index_;
  size_t total_ = 0;
};

std::string shape_str(const std::vector<int64_t>& shape);  // "(768, 2304)"

}  // namespace competelm
