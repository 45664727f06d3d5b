#pragma once
// Incremental (KV-cache) inference for a GPT2: the prompt is processed once, then each new
// token costs one pass over a single position, attending to the keys and values of every
// earlier position kept per layer in the cache (L, NH, T, hs). The per-token cost no longer
// grows with recomputing the prefix; only the attention term grows, linearly and cheaply.
//
// The dense ops (layernorm, linear layers, GELU, residual adds, MoE layers) run through the
// Backend on backend memory, reading the model's parameters by name. The single-query
// attention over the cache runs on the host (cached_attention below): one (n, 3C) download
// and one (n, C) upload per layer and chunk, a few kilobytes per token.
//
// Produces the logits GPT2::forward produces for the same sequence (same ops, same order of
// additions; the attention sums differ only in rounding).
#include <cstdint>
#include <memory>
#include <vector>

#include "backend/backend.hpp"
#include "core/tensor_table.hpp"
#include "model/gpt2.hpp"
#include "moe/moe_layer.hpp"

namespace competelm {

// Causal attention of n new queries (positions pos0 .. pos0+n-1) over a KV cache.
// qkv: (n, 3C) rows as the qkv projection writes them (q | k | v, each NH·hs wide; only q is
// read). k_cache, v_cache: (NH, max_T, hs) holding positions 0 .. pos0+n-1. out: (n, C).
void cached_attention(float* out, const float* qkv, const float* k_cache, const float* v_cache, int pos0, int n,
                      int max_T, int NH, int hs);

class KvDecoder {
 public:
  // max_chunk: most positions one internal pass processes (longer inputs are split into
  // chunks); 0 = model.seq_len. Activation memory is O(max_chunk · (4C + Vp)).
  KvDecoder(Backend& backend, GPT2& model, int max_chunk = 0);
  ~KvDecoder();
  KvDecoder(const KvDecoder&) = delete;
  KvDecoder& operator=(const KvDecoder&) = delete;

  void reset() { length_ = 0; }          // forget the context
  int length() const { return length_; }  // positions in the cache
  int capacity() const { return max_T_; } // model.seq_len: positions the cache can hold

  // Appends n tokens (positions length() .. length()+n-1; needs length()+n ≤ capacity()) and
  // returns host logits: (n, Vp) when all_logits, else (1, Vp) for the last token. The
  // reference stays valid until the next call.
  const std::vector<float>& append(const int32_t* tokens, int n, bool all_logits = false);

 private:
  void forward_chunk(const int32_t* tokens, int n, bool all_logits);  // n ≤ max_chunk_

  Backend& be_;
  GPT2& model_;
  int L_, C_, NH_, hs_, Vp_, V_, max_T_, max_chunk_;
  int length_ = 0;
  TensorTable acts_;            // this decoder's activations (and the MoE layers' own)
  float* acts_mem_ = nullptr;   // backend memory described by acts_
  int32_t* tokens_dev_ = nullptr;
  size_t x_, ln_, mean_, rstd_, qkv_, atty_, tmp_, fch_, fch_gelu_, logits_;  // handles into acts_
  std::vector<std::unique_ptr<MoeLayer>> moe_;  // per block; null for a dense MLP block
  std::vector<std::vector<float>> k_cache_, v_cache_;  // per layer (NH, max_T, hs), host
  std::vector<float> qkv_host_, atty_host_;             // (max_chunk, 3C), (max_chunk, C)
  std::vector<float> logits_host_;
};

}  // namespace competelm
