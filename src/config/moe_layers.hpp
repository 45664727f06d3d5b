#pragma once
// The moe.layers syntax: which transformer blocks get an MoE FFN instead of a dense MLP.
//
//   all              every block
//   none             no block (the model stays dense even with moe.n_experts > 0)
//   every:N          blocks 0, N, 2N, ... (N ≥ 1)
//   every:N:OFFSET   blocks OFFSET, OFFSET+N, ... (0 ≤ OFFSET < n_layer)
//   0,2,5            a comma-separated list of block indices (any order, no duplicates,
//                    each < n_layer; spaces around the items are allowed)
//
// Shared by the config validator (errors at load time, naming the key) and the model
// builder (moe/moe_config.hpp), so both read the same syntax.
#include <optional>
#include <string>
#include <vector>

namespace competelm {

struct MoeLayersResult {
  std::vector<bool> mask;  // (n_layer): true = the block's FFN is an MoE layer
  std::string error;       // what is wrong, naming the bad part ("'9' is not below ..."); "" = ok
  bool ok() const { return error.empty(); }
};

// Parses `spec` for a model of `n_layer` blocks; never throws.
MoeLayersResult parse_moe_layers(const std::string& spec, int n_layer);

}  // namespace competelm
