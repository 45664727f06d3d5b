#include "export/model_tensors.hpp"

#include "core/error.hpp"

namespace competelm {

std::map<std::string, LoadedTensor> model_tensors_host(const GPT2& model, Backend& backend) {
  const TensorTable& table = model.params();
  std::vector<float> all(table.total_elements());
  backend.download(all.data(), const_cast<GPT2&>(model).param_buffer(), all.size() * sizeof(float));
  std::map<std::string, LoadedTensor> out;
  for (const TensorSpec& s : table.specs()) {
    LoadedTensor t;
    t.shape = s.shape;
    t.data.assign(all.begin() + std::ptrdiff_t(s.offset), all.begin() + std::ptrdiff_t(s.offset + s.numel));
    out.emplace(s.name, std::move(t));
  }
  return out;
}

std::vector<NamedTensor> named_views(const GPT2& model, const std::map<std::string, LoadedTensor>& tensors) {
  std::vector<NamedTensor> v;
  for (const TensorSpec& s : model.params().specs()) {
    const LoadedTensor& t = tensors.at(s.name);
    v.push_back({s.name, t.shape, t.data.data()});
  }
  return v;
}

}  // namespace competelm
