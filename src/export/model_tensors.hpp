#pragma once
// A model's parameters as host tensors keyed by our names ("wte", "blocks.0.ln1.weight", ...),
// for the exporters; and the reverse direction is load_model_tensors (model/saved_model.hpp).
#include <map>
#include <string>
#include <vector>

#include "backend/backend.hpp"
#include "checkpoint/checkpoint.hpp"
#include "model/gpt2.hpp"

namespace competelm {

std::map<std::string, LoadedTensor> model_tensors_host(const GPT2& model, Backend& backend);

// Views of `tensors` in the model's parameter order (the order files are written in).
std::vector<NamedTensor> named_views(const GPT2& model, const std::map<std::string, LoadedTensor>& tensors);

}  // namespace competelm
