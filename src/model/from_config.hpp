#pragma once
// The model a config describes: its shape, initialisation policy and MoE layers. One place,
// so the trainer, the benchmark and the tools build the same model from the same file.
#include "config/config.hpp"
#include "model/gpt2.hpp"

namespace competelm {

ModelShape model_shape(const Config& cfg);
ModelInit model_init(const Config& cfg);
ModelMoe model_moe(const Config& cfg);  // empty (dense) when moe.n_experts == 0

}  // namespace competelm
