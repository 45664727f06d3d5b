#pragma once
// From the run config's moe section to what the model builds: which blocks are MoE layers
// and the resolved options of each (every MoE layer of a model shares one MoeOptions).
#include <vector>

#include "config/config.hpp"
#include "moe/competition_schedule.hpp"
#include "moe/moe_options.hpp"

namespace competelm {

// (model.n_layer): true where the block's FFN is an MoE layer (moe.layers syntax, see
// config/moe_layers.hpp). All false when moe.n_experts == 0 (a dense model), whatever
// moe.layers says. Throws competelm::Error naming moe.layers if it does not parse (a
// config from load_config() has already been checked).
std::vector<bool> moe_layer_mask(const Config& cfg);

// Number of true entries of moe_layer_mask(cfg).
int count_moe_layers(const Config& cfg);

// moe.expert_hidden resolved: the configured value, or for 0, H = ceil(4·d_model / top_k)
// rounded up to a multiple of 8, so the K active experts together cost about one dense MLP
// (4·d_model) and the GEMM widths stay aligned. (768, K=2) → 1536; (128, K=2) → 256;
// (64, K=3) → 88.
int resolve_expert_hidden(int expert_hidden, int d_model, int top_k);

// The options every MoE layer of the model is built with: the moe keys with their strings
// mapped to enums and expert_hidden resolved. With n_experts == 0 (dense) the result carries
// n_experts = 0 and must not be used to build a layer.
MoeOptions moe_options(const Config& cfg);

// The competition schedule's options for this run: train.steps, the MoE layer count, the
// moe.competition_* keys and run.seed. Routers other than competesmoe never compete: their
// schedule has rate 0 (a table of the right shape with no pair in it).
ScheduleOptions schedule_options(const Config& cfg);

}  // namespace competelm
