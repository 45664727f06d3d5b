#pragma once
// A Mixture-of-Experts FFN layer: router, top-K, tokens grouped by expert, one GEMM pair per
// expert over its tokens, gate-weighted combine — and, on scheduled competition steps,
// CompeteSMoE routing by the experts' own responses with router distillation, diversity and
// affinity-balance losses. Dropless: every token reaches exactly K experts.
//
// Parameters (under a prefix such as "blocks.3.moe.", in the model's parameter table):
//   router.weight        (E, C)     no bias
//   experts.fc.weight    (E, H, C)  experts.fc.bias   (E, H)
//   experts.proj.weight  (E, C, H)  experts.proj.bias (E, C)
//   shared.fc.weight     (S, H, C)  shared.fc.bias    (S, H)     (only when S > 0)
//   shared.proj.weight   (S, C, H)  shared.proj.bias  (S, C)
// Expert e is FFN_e(x) = proj_e(gelu(fc_e(x))), the same shape as the dense MLP.
// Under expert parallelism (P > 1) the experts.* tensors hold this rank's E/P experts only;
// add_expert_params registers them separately so the model can keep them in one region.
// Activations the backward pass needs live in the model's activation table (add_acts).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.hpp"
#include "core/tensor_table.hpp"
#include "moe/expert_parallel.hpp"
#include "moe/moe_options.hpp"

namespace competelm {

// Host-side statistics of the last forward (spec §6), cheap to fill.
struct MoeLayerStats {
  bool competed = false;
  std::vector<int64_t> tokens_per_expert;  // (E) routed token counts (the routing actually used)
  double router_entropy = 0.0;   // mean over tokens of H(p_R), nats
  double overlap = -1.0;         // competition steps: mean |idx_R ∩ idx_C| / K, else -1
  // Unscaled loss terms (each a mean inside the layer); 0 when not active this step.
  double balance = 0.0, z_loss = 0.0, distill = 0.0, diversity = 0.0, competition_balance = 0.0;
  double aux_loss = 0.0;         // Σ coef · term: what this layer adds to the loss
};

class MoeLayer {
 public:
  MoeLayer(Backend& backend, const MoeOptions& opts, int C, int max_tokens, const ExpertParallel& ep = {});

  // Router and shared experts (replicated on every rank); with_experts also registers all E
  // routed experts right after the router (the single-copy, checkpoint layout).
  static void add_params(TensorTable& params, const std::string& prefix, const MoeOptions& opts, int C,
                         bool decay_matrices = true, bool with_experts = true);
  // The routed experts: experts.{fc,proj}.{weight,bias} with n_local experts on dim 0.
  static void add_expert_params(TensorTable& params, const std::string& prefix, const MoeOptions& opts, int C,
                                int n_local, bool decay_matrices = true);
  // True for the tensors add_expert_params registers (by name).
  static bool is_expert_param(const std::string& name);
  static void add_acts(TensorTable& acts, const std::string& prefix, const MoeOptions& opts, int C,
                       int max_tokens, int ep_size = 1);
  // Binds to the model's buffers; tensors are looked up by prefix + name.
  void bind(const TensorTable& params, float* param_buf, float* grad_buf, const TensorTable& acts,
            float* act_buf, const std::string& prefix);

  // out (B,T,C) = MoE(inp (B,T,C)). compete: route by competition on this call (training
  // only; ignored unless the router is competesmoe). Fills stats (if not null).
  void forward(float* out, const float* inp, int B, int T, bool compete, MoeLayerStats* stats);
  // dinp += ∂L/∂inp and parameter grads += ∂L/∂θ, for L = Σ dout·out + aux_scale · aux_loss
  // of the last forward.
  void backward(float* dinp, const float* dout, float aux_scale);

  // Bytes of activations this layer keeps for its backward at max_tokens (memory report).
  size_t activation_bytes() const;
  const MoeOptions& options() const { return opts_; }

 private:
  // The experts over the expert-sorted rows of the current routing (x_rows → o_rows), and
  // their backward (d_rows: ∂L/∂o in, ∂L/∂x out). Local loop, or dispatch to the owners.
  void experts_forward();
  void experts_backward();
  std::vector<int64_t> row_bytes(const std::vector<int64_t>& rows) const;  // rows of C floats → bytes
  // Competition scores of every expert for every token under expert parallelism (N,E).
  void compete_scores_ep(const float* inp, int N);
  // Affinity-balance backward under expert parallelism: dinp += Σ_e ∂(score_e)/∂x · dscores.
  void competition_balance_backward_ep(float* dinp, int N);

  Backend& be_;
  MoeOptions opts_;
  int C_, max_tokens_;
  ExpertParallel ep_;
  // Implementation-defined state (bound pointers, last B/T, routing of the last forward).
  struct Bound;
  std::shared_ptr<Bound> b_;
};

}  // namespace competelm
