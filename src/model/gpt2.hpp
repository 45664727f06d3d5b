#pragma once
// GPT-2: token + learned position embeddings, pre-LayerNorm blocks (causal self-attention,
// GELU MLP), final LayerNorm, LM head tied to the token embedding, vocab padded to a
// multiple of 128. Parameters live in one backend allocation and activations in another,
// both addressed through TensorTables. forward() and backward() read top to bottom.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.hpp"
#include "core/param_range.hpp"
#include "core/tensor_table.hpp"
#include "moe/moe_layer.hpp"

namespace competelm {

struct ModelShape {
  int n_layer = 2;
  int d_model = 64;     // C
  int n_head = 4;       // NH
  int seq_len = 64;     // maximum T (rows of wpe)
  int vocab_size = 50257;
  int padded_vocab() const { return (vocab_size + 127) / 128 * 128; }  // Vp
};

// Initialisation and weight-decay policy for the parameters.
struct ModelInit {
  float std = 0.02f;            // N(0, std) for weights; biases and LN bias 0, LN weight 1
  bool scale_residual = true;   // GPT-2: residual projections use std / sqrt(2·n_layer)
  bool decay_embeddings = false;
  bool decay_norms = false;     // decay on LayerNorm weights
};

// Which blocks' FFN is a Mixture-of-Experts layer (the others keep the dense MLP).
struct ModelMoe {
  std::vector<bool> layers;  // (n_layer); empty or all false = dense model
  MoeOptions options;
  ExpertParallel ep;         // this rank holds experts [ep.first_expert(E), +E/P) of each layer
  int count() const;         // number of MoE layers
};

class GPT2 {
 public:
  // Allocates parameters, gradients and activations for batches of up to B×T tokens.
  GPT2(Backend& backend, const ModelShape& shape, const ModelInit& init, int B, int T,
       const ModelMoe& moe = {});
  ~GPT2();
  GPT2(const GPT2&) = delete;
  GPT2& operator=(const GPT2&) = delete;

  const ModelShape& shape() const { return shape_; }
  // This rank's parameters: every replicated tensor in model order, then (one region from
  // expert_region_begin() on) the routed experts this rank holds under expert parallelism.
  const TensorTable& params() const { return params_; }
  // The whole model as one process holds it (all E experts, model order): the layout of
  // checkpoints and initialisation. Equal to params() up to order when expert parallel is 1.
  const TensorTable& canonical_params() const { return canonical_; }
  size_t expert_region_begin() const { return expert_region_begin_; }
  // Where local tensor s sits in its canonical tensor: element offset (experts: ep.rank·numel).
  size_t canonical_offset(const TensorSpec& s) const;
  // Host copies: canonical (canonical_params() layout) → this rank's layout, and back for a
  // host buffer holding this rank's layout. to_canonical needs every rank of the expert-parallel
  // group (collective over moe().ep.comm when P > 1).
  std::vector<float> from_canonical(const std::vector<float>& canonical) const;
  std::vector<float> to_canonical(const std::vector<float>& local) const;
  float* param_buffer() { return params_mem_; }   // backend memory, params().total_elements()
  float* grad_buffer() { return grads_mem_; }     // same layout as param_buffer()
  float* param(const std::string& name);          // backend pointer into param_buffer()
  float* grad(const std::string& name);

  // Draws the initial weights from the seed (host RNG, then one upload).
  void init_weights(uint64_t seed);

  // tokens, targets: host arrays of B×T ids. targets may be null (logits only).
  // Returns the loss: mean cross-entropy over the B×T positions plus the MoE layers' aux
  // losses (0 when targets is null). last_lm_loss() / last_aux_loss() split it.
  float forward(const int32_t* tokens, const int32_t* targets, int B, int T);
  float last_lm_loss() const { return last_lm_loss_; }
  float last_aux_loss() const { return last_aux_loss_; }

  // MoE: which MoE layers (0-based among the MoE layers, in depth order) route by
  // competition in the NEXT forward() only; forward() then resets to none (so validation
  // and sampling never compete).
  void set_competition(const std::vector<bool>& per_moe_layer);
  int num_moe_layers() const { return static_cast<int>(moe_index_.size()); }
  const std::vector<int>& moe_block_index() const { return moe_index_; }  // block of each MoE layer
  const std::vector<MoeLayerStats>& moe_stats() const { return moe_stats_; }  // of the last forward
  const ModelMoe& moe() const { return moe_; }
  size_t moe_activation_bytes() const;  // what the MoE layers keep for their backward
  // Backward of (loss_scale × mean loss) of the last forward(); ACCUMULATES into the grads
  // (gradient accumulation = several forward/backward pairs, then one optimizer step).
  // `ready`, when given (the last micro-step's backward), is told each range of
  // grad_ready_order() as soon as the backward no longer writes it.
  void backward(float loss_scale = 1.0f, GradReadyListener* ready = nullptr);
  // The flat buffer cut into the ranges backward() finalises, in the order it does: lnf, then
  // for each block from the last: its experts (this rank's, MoE blocks only) and its replicated
  // tensors, then the embeddings (wte last: the tied LM head and the token embedding both
  // write its gradient). Together they cover [0, total_elements()) once, alignment gaps
  // included.
  std::vector<ParamRange> grad_ready_order() const;
  void zero_grad();

  // The last forward's logits (B,T,Vp), copied to the host (valid until backward()).
  std::vector<float> logits_host() const;
  // The last forward's per-position losses (B·T), on the host.
  std::vector<float> losses_host() const;

  // FLOPs of one forward+backward per token (6·N plus attention), for MFU and GFLOP/s.
  // MoE layers count their active parameters (router + top_k routed experts + shared).
  double flops_per_token(int T) const;
  size_t num_parameters() const { return canonical_.count_elements(); }  // whole model
  size_t num_active_parameters() const;  // per token

 private:
  struct Acts;  // activation tensor handles
  int moe_layer_number(int block) const;  // index among the MoE layers
  // The range of gradient group g of the flat buffer (see grad_ready_order): 0 = embeddings,
  // 1 + l = block l's replicated tensors, 1 + L = lnf, 2 + L + l = block l's experts.
  enum : int { kEmbeddingGroup = 0 };
  int block_group(int l) const { return 1 + l; }
  int lnf_group() const { return 1 + shape_.n_layer; }
  int expert_group(int l) const { return 2 + shape_.n_layer + l; }
  int grad_group_of(const std::string& tensor) const;
  void build_grad_groups();
  void build_param_table(TensorTable& table, bool canonical) const;
  void build_act_table(int B, int T);

  Backend& be_;
  ModelShape shape_;
  ModelInit init_;
  ModelMoe moe_;
  std::vector<std::unique_ptr<MoeLayer>> moe_layers_;  // per block; null for a dense MLP block
  std::vector<int> moe_index_;                         // block index of each MoE layer
  std::vector<bool> compete_next_;                     // per MoE layer, for the next forward
  std::vector<MoeLayerStats> moe_stats_;
  float last_lm_loss_ = 0.0f, last_aux_loss_ = 0.0f;
  int maxB_, maxT_;
  int B_ = 0, T_ = 0;  // shape of the last forward
  bool have_targets_ = false;
  TensorTable params_;
  TensorTable canonical_;
  size_t expert_region_begin_ = 0;
  std::vector<ParamRange> grad_groups_;  // by group index (empty: a dense block's experts)
  TensorTable acts_;
  float* params_mem_ = nullptr;
  float* grads_mem_ = nullptr;
  float* acts_mem_ = nullptr;
  float* dacts_mem_ = nullptr;  // gradient scratch: two (B,T,C) residual grads + one block's worth
  int32_t* tokens_dev_ = nullptr;
  int32_t* targets_dev_ = nullptr;
  std::vector<size_t> act_ids_;  // filled by build_act_table, read through Acts
  std::unique_ptr<Acts> a_;
};

}  // namespace competelm
