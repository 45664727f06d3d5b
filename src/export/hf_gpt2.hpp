#pragma once
// The Hugging Face GPT-2 layout (transformers' GPT2LMHeadModel, as in the `gpt2` model
// repository's model.safetensors: no "transformer." prefix, LM head tied to wte.weight):
//
//   ours                          HF                              note
//   wte (Vp, C)                   wte.weight (V, C)               padding rows dropped / zero-filled
//   wpe (T, C)                    wpe.weight (T, C)
//   blocks.i.ln1.{weight,bias}    h.i.ln_1.{weight,bias}
//   blocks.i.attn.qkv.weight      h.i.attn.c_attn.weight (C, 3C)  Conv1D: transposed
//   blocks.i.attn.qkv.bias        h.i.attn.c_attn.bias (3C)
//   blocks.i.attn.proj.weight     h.i.attn.c_proj.weight (C, C)   transposed
//   blocks.i.ln2.*                h.i.ln_2.*
//   blocks.i.mlp.fc.weight        h.i.mlp.c_fc.weight (C, 4C)     transposed
//   blocks.i.mlp.proj.weight      h.i.mlp.c_proj.weight (4C, C)   transposed
//   lnf.*                         ln_f.*
//
// config.json: GPT2Config fields (n_embd, n_layer, n_head, n_positions, n_ctx, vocab_size,
// layer_norm_epsilon 1e-5, activation_function gelu_new, model_type gpt2, architectures).
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "checkpoint/checkpoint.hpp"
#include "model/gpt2.hpp"

namespace competelm {

// Our dense-model tensors → HF tensors, in HF's usual order. Throws if a tensor is missing
// (an MoE model has no mlp.* tensors: callers refuse those first).
std::vector<std::pair<std::string, LoadedTensor>> to_hf_gpt2(const std::map<std::string, LoadedTensor>& ours,
                                                             const ModelShape& shape);

// HF tensors (with or without the "transformer." prefix) → our tensors. Ignores the attention
// mask buffers (attn.bias, attn.masked_bias) and a tied lm_head.weight; any other unknown or
// missing tensor, or a wrong shape, is an error naming `file` and the tensor.
std::map<std::string, LoadedTensor> from_hf_gpt2(const std::map<std::string, LoadedTensor>& hf,
                                                 const ModelShape& shape, const std::string& file);

std::string hf_gpt2_config_json(const ModelShape& shape);

// Reads a GPT2Config config.json: the model shape. Refuses configs our model does not
// compute (activation other than gelu_new, layer_norm_epsilon ≠ 1e-5, n_inner ≠ 4·n_embd,
// untied embeddings) with an error naming the file and key.
ModelShape read_hf_gpt2_config(const std::string& path);

// Row-major (rows, cols) → (cols, rows).
std::vector<float> transpose(const std::vector<float>& m, int64_t rows, int64_t cols);

}  // namespace competelm
