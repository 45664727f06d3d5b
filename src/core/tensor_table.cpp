#include "core/tensor_table.hpp"

#include "core/error.hpp"

namespace competelm {

size_t TensorTable::add(std::string name, std::vector<int64_t> shape, bool weight_decay) {
  CLM_ASSERT(!index_.count(name));
  TensorSpec s;
  s.name = std::move(name);
  s.shape = std::move(shape);
  s.numel = 1;
  for (int64_t d : s.shape) s.numel *= static_cast<size_t>(d);
  s.offset = (total_ + 63) / 64 * 64;
  s.weight_decay = weight_decay;
  total_ = s.offset + s.numel;
  index_[s.name] = specs_.size();
  specs_.push_back(s);
  return specs_.size() - 1;
}

const TensorSpec* TensorTable::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &specs_[it->second];
}

const TensorSpec& TensorTable::at(const std::string& name) const {
  const TensorSpec* s = find(name);
  if (!s) fail("no tensor named '{}' in this model", name);
  return *s;
}

size_t TensorTable::count_elements() const {
  size_t n = 0;
  for (const auto& s : specs_) n += s.numel;
  return n;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string out = "(";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + ")";
}

}  // namespace competelm
