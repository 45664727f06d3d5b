// MoeLayer: router → top-K → dropless grouped experts → gate-weighted combine, and the
// CompeteSMoE competition path. All math on (N,E)/(N,K)/rows goes through the Backend's
// MoE ops; the experts run as one matmul pair per expert over its contiguous row range.
//
// Row buffers (R = N·K rows, sorted by expert, a stable permutation of the (token, choice)
// slots): x (R,C) gathered inputs, h (R,H) fc outputs, a (R,H) gelu(h), o (R,C) expert outputs.
//
// Competition step (spec §2, §7): experts run one at a time over all N tokens into (N,H)/(N,C)
// scratch; each output is reduced to its score (N,E column) at once, and a running per-token
// top-K copies the current winners' o and h rows into slot-ordered buffers (the gradient
// scratch, free during the forward). Afterwards those rows are gathered into the expert-sorted
// row buffers, so the backward is the router path's grouped backward plus the score terms.
// Memory: O(N·K·(C+H) + N·E + N·(2H+C)), never N·E·C. Compute: E full expert passes (E/K
// times the routed FFN) and no recompute of the winners. If competition_balance_coef > 0 the
// backward recomputes every expert (its gradient reaches every expert's output) instead of
// storing them.
//
// Loss bookkeeping (spec §4): normal steps: balance (entropy per sequence or Switch) on p_R
// + z-loss. Competition steps: distillation + diversity + competition balance + z-loss (the
// z-loss is a property of the router logits, which still run); no router balance. For
// sigmoid_topk, p_R = s / Σ_e s (s = sigmoid(g)) is the distribution used by the balance
// loss and the router-entropy statistic; the gates renormalise s over the winners.
#include "moe/moe_layer.hpp"

#include <numeric>

#include "core/error.hpp"
#include "dist/comm.hpp"

namespace competelm {
namespace {

struct ActSpec {
  std::string name;
  std::vector<int64_t> shape;
};

// Every activation / scratch tensor the layer registers, for max_tokens tokens. Index tensors
// are int32 stored in float-sized slots of the activation table.
std::vector<ActSpec> act_specs(const MoeOptions& o, int C, int N, int P) {
  const int64_t E = o.n_experts, K = o.top_k, H = o.expert_hidden, S = o.shared_experts, R = int64_t(N) * K;
  const int64_t PN = int64_t(P) * N, El = E / P;  // tokens of the expert-parallel group, local experts
  std::vector<ActSpec> v = {
      {"router.logits", {N, E}},  {"router.probs", {N, E}},   {"route.val", {N, K}},
      {"route.gate", {N, K}},     {"route.idx", {N, K}},      {"route.row_of_slot", {N, K}},
      {"route.slot_of_row", {R}}, {"route.offsets", {E + 1}}, {"rows.x", {R, C}},
      {"rows.h", {R, H}},         {"rows.a", {R, H}},         {"rows.o", {R, C}},
      // gradient scratch (also the competition forward's running top-K buffers)
      {"grad.rows", {R, C}},      {"grad.hidden", {R, H}},    {"grad.logits", {N, E}},
      {"grad.probs", {N, E}},     {"grad.gate", {N, K}},      {"grad.val", {N, K}},
  };
  if (o.router == MoeRouter::SigmoidTopK) v.push_back({"router.act", {N, E}});
  if (S > 0) {
    v.push_back({"shared.h", {S, N, H}});
    v.push_back({"shared.a", {S, N, H}});
  }
  if (o.router == MoeRouter::CompeteSMoE) {
    for (const char* name : {"compete.scores", "compete.p_c", "grad.scores", "grad.p_c"}) v.push_back({name, {N, E}});
    for (const char* name : {"compete.best", "compete.gate", "compete.idx"}) v.push_back({name, {N, K}});
    v.push_back({"compete.score_rows", {R}});
    v.push_back({"compete.h", {PN, H}});  // one expert over every token of the group
    v.push_back({"compete.a", {PN, H}});
    v.push_back({"compete.o", {PN, C}});
  }
  if (P > 1) {
    // Rows received from the group for this rank's experts (dropless: up to every row of
    // every rank), laid out by source rank, then local expert.
    v.push_back({"ep.recv_x", {int64_t(P) * R, C}});
    v.push_back({"ep.recv_h", {int64_t(P) * R, H}});
    v.push_back({"ep.recv_a", {int64_t(P) * R, H}});
    v.push_back({"ep.recv_o", {int64_t(P) * R, C}});  // outputs, then ∂L/∂o → ∂L/∂x in backward
    v.push_back({"ep.recv_dh", {int64_t(P) * R, H}});
    if (o.router == MoeRouter::CompeteSMoE) {
      v.push_back({"ep.all_x", {PN, C}});          // every token of the group (competition)
      v.push_back({"ep.all_dx", {PN, C}});
      v.push_back({"ep.local_scores", {PN, El}});  // this rank's experts' scores, all tokens
    }
  }
  return v;
}

void check_options(const MoeOptions& o) {
  if (o.n_experts < 1) fail("moe.n_experts: {} must be >= 1", o.n_experts);
  if (o.top_k < 1 || o.top_k > o.n_experts)
    fail("moe.top_k: {} must be in [1, n_experts = {}]", o.top_k, o.n_experts);
  if (o.expert_hidden < 1) fail("moe.expert_hidden: {} must be >= 1 (resolved before building the layer)", o.expert_hidden);
  if (o.shared_experts < 0) fail("moe.shared_experts: {} is negative", o.shared_experts);
}

// One two-layer expert (routed or shared): its weights and their gradients.
struct FfnWeights {
  const float *fc_w, *fc_b, *proj_w, *proj_b;  // (H,C), (H), (C,H), (C)
  float *dfc_w, *dfc_b, *dproj_w, *dproj_b;
};

// h = fc(x) (n,H), a = gelu(h), o = proj(a) (n,C) for n rows of x.
void ffn_forward(Backend& be, const FfnWeights& w, float* h, float* a, float* o, const float* x, int n, int C,
                 int H) {
  be.matmul_gelu_forward(h, a, x, w.fc_w, w.fc_b, n, C, H);  // h and a = gelu(h)
  be.matmul_forward(o, a, w.proj_w, w.proj_b, n, H, C);
}

// dx += ∂L/∂x and the weight gradients, given d_o = ∂L/∂o (n,C). dh (n,H) is scratch. The
// forward's a is overwritten with ∂L/∂h: it is no longer needed once the proj weight gradient
// is formed. dx may alias d_o (then d_o is consumed and replaced by ∂L/∂x: dx = ∂L/∂x).
// The scratch gradients are overwritten (GradMode::overwrite), never zeroed first.
void ffn_backward(Backend& be, const FfnWeights& w, float* dx, const float* d_o, const float* h, float* a,
                  const float* x, float* dh, int n, int C, int H) {
  // a := ∂L/∂h = gelu'(h) ∘ (d_o · W_proj) (the proj weight gradient reads a first; dh is scratch)
  be.matmul_backward_gelu(a, w.dproj_w, w.dproj_b, d_o, a, h, w.proj_w, n, H, C, dh);
  be.matmul_backward(dx, w.dfc_w, w.dfc_b, a, x, w.fc_w, n, C, H,
                     dx == d_o ? GradMode::overwrite : GradMode::accumulate);
}

}  // namespace

struct MoeLayer::Bound {
  // parameters and their gradients
  float *wr = nullptr, *fc_w = nullptr, *fc_b = nullptr, *proj_w = nullptr, *proj_b = nullptr;
  float *sfc_w = nullptr, *sfc_b = nullptr, *sproj_w = nullptr, *sproj_b = nullptr;
  float *dwr = nullptr, *dfc_w = nullptr, *dfc_b = nullptr, *dproj_w = nullptr, *dproj_b = nullptr;
  float *dsfc_w = nullptr, *dsfc_b = nullptr, *dsproj_w = nullptr, *dsproj_b = nullptr;
  // activations (see act_specs)
  float *logits, *probs, *act, *val, *gate;
  int32_t *idx, *row_of_slot, *slot_of_row, *offsets;
  float *x_rows, *h_rows, *a_rows, *o_rows, *sh_h = nullptr, *sh_a = nullptr;
  float *d_rows, *d_hid, *dlogits, *dprobs, *dgate, *dval;
  float *scores = nullptr, *p_c = nullptr, *dscores = nullptr, *dp_c = nullptr, *best = nullptr,
        *cgate = nullptr, *score_rows = nullptr, *cmp_h = nullptr, *cmp_a = nullptr, *cmp_o = nullptr;
  int32_t* cidx = nullptr;
  // expert parallel buffers (see act_specs)
  float *recv_x = nullptr, *recv_h = nullptr, *recv_a = nullptr, *recv_o = nullptr, *recv_dh = nullptr;
  float *all_x = nullptr, *all_dx = nullptr, *local_scores = nullptr;
  std::vector<int64_t> send_rows, recv_rows;  // (P) rows to / from each rank of the group
  std::vector<int32_t> recv_counts;           // (P, El) rows from rank s for local expert el
  // the last forward
  const float* inp = nullptr;
  int B = 0, T = 0;
  bool competed = false;
  bool ready = false;
  std::vector<int32_t> offsets_host;  // (E+1) row ranges of the routing used

  FfnWeights expert(int e, int C, int H) const {
    const size_t m = size_t(H) * C;
    return {fc_w + e * m, fc_b + size_t(e) * H, proj_w + e * m, proj_b + size_t(e) * C,
            dfc_w + e * m, dfc_b + size_t(e) * H, dproj_w + e * m, dproj_b + size_t(e) * C};
  }
  FfnWeights shared(int s, int C, int H) const {
    const size_t m = size_t(H) * C;
    return {sfc_w + s * m, sfc_b + size_t(s) * H, sproj_w + s * m, sproj_b + size_t(s) * C,
            dsfc_w + s * m, dsfc_b + size_t(s) * H, dsproj_w + s * m, dsproj_b + size_t(s) * C};
  }
};

MoeLayer::MoeLayer(Backend& backend, const MoeOptions& opts, int C, int max_tokens, const ExpertParallel& ep)
    : be_(backend), opts_(opts), C_(C), max_tokens_(max_tokens), ep_(ep), b_(std::make_shared<Bound>()) {
  check_options(opts_);
  if (ep_.size < 1 || opts_.n_experts % ep_.size != 0)
    fail("MoE layer: expert parallel size {} does not divide moe.n_experts = {}", ep_.size, opts_.n_experts);
  if (ep_.active() && !ep_.comm) fail("MoE layer: expert parallel size {} without a communicator", ep_.size);
  if (ep_.active() && !ep_.dcomm) {
    if (!be_.memory_is_host())
      fail("MoE layer: expert parallel size {} on the {} backend without a device-memory communicator", ep_.size,
           be_.name());
    ep_.dcomm = ep_.comm;  // host memory: one communicator serves both
  }
}

void MoeLayer::add_params(TensorTable& params, const std::string& prefix, const MoeOptions& o, int C,
                          bool decay_matrices, bool with_experts) {
  check_options(o);
  const int64_t E = o.n_experts, H = o.expert_hidden, S = o.shared_experts;
  params.add(prefix + "router.weight", {E, C}, decay_matrices);
  if (with_experts) add_expert_params(params, prefix, o, C, o.n_experts, decay_matrices);
  if (S > 0) {
    params.add(prefix + "shared.fc.weight", {S, H, C}, decay_matrices);
    params.add(prefix + "shared.fc.bias", {S, H});
    params.add(prefix + "shared.proj.weight", {S, C, H}, decay_matrices);
    params.add(prefix + "shared.proj.bias", {S, C});
  }
}

void MoeLayer::add_expert_params(TensorTable& params, const std::string& prefix, const MoeOptions& o, int C,
                                 int n_local, bool decay_matrices) {
  check_options(o);
  const int64_t El = n_local, H = o.expert_hidden;
  params.add(prefix + "experts.fc.weight", {El, H, C}, decay_matrices);
  params.add(prefix + "experts.fc.bias", {El, H});
  params.add(prefix + "experts.proj.weight", {El, C, H}, decay_matrices);
  params.add(prefix + "experts.proj.bias", {El, C});
}

bool MoeLayer::is_expert_param(const std::string& name) { return name.find(".moe.experts.") != std::string::npos; }

void MoeLayer::add_acts(TensorTable& acts, const std::string& prefix, const MoeOptions& o, int C, int max_tokens,
                        int ep_size) {
  check_options(o);
  for (ActSpec& s : act_specs(o, C, max_tokens, ep_size)) acts.add(prefix + s.name, std::move(s.shape));
}

size_t MoeLayer::activation_bytes() const {
  size_t n = 0;
  for (const ActSpec& s : act_specs(opts_, C_, max_tokens_, ep_.size))
    n += static_cast<size_t>(std::accumulate(s.shape.begin(), s.shape.end(), int64_t{1}, std::multiplies<>()));
  return n * sizeof(float);
}

void MoeLayer::bind(const TensorTable& params, float* param_buf, float* grad_buf, const TensorTable& acts,
                    float* act_buf, const std::string& prefix) {
  Bound& b = *b_;
  auto par = [&](const char* n) { return param_buf + params.at(prefix + n).offset; };
  auto grd = [&](const char* n) { return grad_buf + params.at(prefix + n).offset; };
  auto act = [&](const char* n) { return act_buf + acts.at(prefix + n).offset; };
  auto iact = [&](const char* n) { return reinterpret_cast<int32_t*>(act(n)); };
  b.wr = par("router.weight"), b.dwr = grd("router.weight");
  b.fc_w = par("experts.fc.weight"), b.dfc_w = grd("experts.fc.weight");
  b.fc_b = par("experts.fc.bias"), b.dfc_b = grd("experts.fc.bias");
  b.proj_w = par("experts.proj.weight"), b.dproj_w = grd("experts.proj.weight");
  b.proj_b = par("experts.proj.bias"), b.dproj_b = grd("experts.proj.bias");
  if (opts_.shared_experts > 0) {
    b.sfc_w = par("shared.fc.weight"), b.dsfc_w = grd("shared.fc.weight");
    b.sfc_b = par("shared.fc.bias"), b.dsfc_b = grd("shared.fc.bias");
    b.sproj_w = par("shared.proj.weight"), b.dsproj_w = grd("shared.proj.weight");
    b.sproj_b = par("shared.proj.bias"), b.dsproj_b = grd("shared.proj.bias");
    b.sh_h = act("shared.h"), b.sh_a = act("shared.a");
  }
  b.logits = act("router.logits"), b.probs = act("router.probs");
  b.act = opts_.router == MoeRouter::SigmoidTopK ? act("router.act") : b.probs;  // softmax: act = p_R
  b.val = act("route.val"), b.gate = act("route.gate"), b.idx = iact("route.idx");
  b.row_of_slot = iact("route.row_of_slot"), b.slot_of_row = iact("route.slot_of_row");
  b.offsets = iact("route.offsets");
  b.x_rows = act("rows.x"), b.h_rows = act("rows.h"), b.a_rows = act("rows.a"), b.o_rows = act("rows.o");
  b.d_rows = act("grad.rows"), b.d_hid = act("grad.hidden"), b.dlogits = act("grad.logits");
  b.dprobs = act("grad.probs"), b.dgate = act("grad.gate"), b.dval = act("grad.val");
  if (opts_.router == MoeRouter::CompeteSMoE) {
    b.scores = act("compete.scores"), b.p_c = act("compete.p_c");
    b.dscores = act("grad.scores"), b.dp_c = act("grad.p_c");
    b.best = act("compete.best"), b.cgate = act("compete.gate"), b.cidx = iact("compete.idx");
    b.score_rows = act("compete.score_rows");
    b.cmp_h = act("compete.h"), b.cmp_a = act("compete.a"), b.cmp_o = act("compete.o");
  }
  if (ep_.active()) {
    b.recv_x = act("ep.recv_x"), b.recv_h = act("ep.recv_h"), b.recv_a = act("ep.recv_a");
    b.recv_o = act("ep.recv_o"), b.recv_dh = act("ep.recv_dh");
    if (opts_.router == MoeRouter::CompeteSMoE)
      b.all_x = act("ep.all_x"), b.all_dx = act("ep.all_dx"), b.local_scores = act("ep.local_scores");
  }
  b.offsets_host.assign(static_cast<size_t>(opts_.n_experts) + 1, 0);
  b.ready = false;
}

// ---- forward -------------------------------------------------------------------------------

void MoeLayer::forward(float* out, const float* inp, int B, int T, bool compete, MoeLayerStats* stats) {
  Bound& b = *b_;
  if (!b.wr) fail("MoeLayer::forward called before bind()");
  const int N = B * T, C = C_, E = opts_.n_experts, K = opts_.top_k, H = opts_.expert_hidden;
  const int S = opts_.shared_experts, R = N * K;
  if (N > max_tokens_) fail("MoE layer: {} tokens exceed the {} it was sized for", N, max_tokens_);
  const bool sig = opts_.router == MoeRouter::SigmoidTopK;
  const bool competing = compete && opts_.router == MoeRouter::CompeteSMoE;
  const bool l2 = opts_.score == CompetitionScore::L2;
  b.inp = inp, b.B = B, b.T = T, b.competed = competing, b.ready = true;
  MoeLayerStats st;
  st.competed = competing;

  // Router (every step): g = x·W_rᵀ, p_R, top-K of the router and its renormalised gates.
  be_.matmul_forward(b.logits, inp, b.wr, nullptr, N, C, E);  // (N,E)
  be_.moe_router_forward(b.act, b.probs, b.logits, N, E, sig);
  be_.moe_topk(b.idx, b.val, b.act, N, E, K);
  be_.moe_gate_forward(b.gate, b.val, N, K, /*softmax=*/false);
  st.router_entropy = be_.moe_mean_entropy(b.probs, N, E);

  const int32_t* used_idx = b.idx;
  const float* used_gate = b.gate;
  if (competing && !ep_.active()) {
    // Every expert on every token, one expert at a time; the running top-K keeps the winners'
    // o rows in d_rows and h rows in d_hid, slot-ordered (n·K + k).
    for (int e = 0; e < E; e++) {
      ffn_forward(be_, b.expert(e, C, H), b.cmp_h, b.cmp_a, b.cmp_o, inp, N, C, H);
      be_.moe_expert_score(b.scores + e, E, b.cmp_o, N, C, l2);
      be_.moe_compete_insert(b.cidx, b.best, b.d_rows, b.d_hid, b.scores + e, E, b.cmp_o, b.cmp_h, e, N, K, C, H);
    }
  } else if (competing) {
    // Expert parallel: each rank scores its experts on every token of the group; the token's
    // home rank gathers all E scores and picks the winners, which then run as routed rows.
    compete_scores_ep(inp, N);
    be_.moe_topk(b.cidx, b.best, b.scores, N, E, K);
  }
  if (competing) {
    be_.moe_gate_forward(b.cgate, b.best, N, K, /*softmax=*/l2);
    used_idx = b.cidx, used_gate = b.cgate;
  }

  // Group the slots by expert: offsets (host copy for the per-expert GEMM ranges).
  be_.moe_permute(b.offsets, b.row_of_slot, b.slot_of_row, used_idx, N, E, K);
  be_.download(b.offsets_host.data(), b.offsets, sizeof(int32_t) * (static_cast<size_t>(E) + 1));
  be_.moe_gather_rows(b.x_rows, inp, b.slot_of_row, K, R, C);  // (R,C)
  if (competing && !ep_.active()) {
    be_.moe_gather_rows(b.h_rows, b.d_hid, b.slot_of_row, 1, R, H);
    be_.gelu_forward(b.a_rows, b.h_rows, static_cast<size_t>(R) * H);
    be_.moe_gather_rows(b.o_rows, b.d_rows, b.slot_of_row, 1, R, C);
  } else {
    experts_forward();
  }
  be_.moe_combine_forward(out, b.o_rows, used_gate, b.row_of_slot, N, K, C);  // (N,C)

  // Shared experts: weight 1, every token. The (N,C) product goes through d_rows (scratch).
  for (int s = 0; s < S; s++) {
    ffn_forward(be_, b.shared(s, C, H), b.sh_h + size_t(s) * N * H, b.sh_a + size_t(s) * N * H, b.d_rows, inp, N,
                C, H);
    be_.accumulate(out, b.d_rows, size_t(N) * C);
  }

  // Loss terms (values only; their gradients are added in backward()).
  if (competing) {
    st.distill = be_.moe_distill_loss(nullptr, b.probs, b.scores, b.cidx, N, E, K, opts_.distill_theta,
                                      opts_.distill_topk_target, 0.0f);
    st.diversity = be_.moe_diversity_loss(nullptr, b.o_rows, b.row_of_slot, N, K, C, 0.0f);
    be_.moe_softmax_forward(b.p_c, b.scores, N, E);  // p_C, kept for the affinity balance
    st.competition_balance = be_.moe_entropy_balance(nullptr, b.p_c, B, T, E, 0.0f);
    st.overlap = be_.moe_topk_overlap(b.idx, b.cidx, N, K);
  } else {
    st.balance = opts_.balance == BalanceLoss::Entropy ? be_.moe_entropy_balance(nullptr, b.probs, B, T, E, 0.0f)
                                                       : be_.moe_switch_balance(nullptr, b.probs, b.idx, N, E, K, 0.0f);
  }
  if (opts_.z_loss_coef > 0) st.z_loss = be_.moe_z_loss(nullptr, b.logits, N, E, 0.0f);
  st.aux_loss = opts_.balance_coef * st.balance + opts_.z_loss_coef * st.z_loss + opts_.router_coef * st.distill +
                opts_.diversity_coef * st.diversity + opts_.competition_balance_coef * st.competition_balance;
  st.tokens_per_expert.resize(static_cast<size_t>(E));
  for (int e = 0; e < E; e++) st.tokens_per_expert[e] = b.offsets_host[e + 1] - b.offsets_host[e];
  if (stats) *stats = std::move(st);
}

// ---- backward ------------------------------------------------------------------------------

void MoeLayer::backward(float* dinp, const float* dout, float aux_scale) {
  Bound& b = *b_;
  if (!b.ready) fail("MoeLayer::backward called without a preceding forward (or twice for one forward)");
  b.ready = false;  // the backward consumes some activations (a rows become ∂L/∂h)
  const int B = b.B, T = b.T, N = B * T, C = C_, E = opts_.n_experts, K = opts_.top_k, H = opts_.expert_hidden;
  const int S = opts_.shared_experts, R = N * K;
  const bool sig = opts_.router == MoeRouter::SigmoidTopK;
  const bool l2 = opts_.score == CompetitionScore::L2;
  const float* inp = b.inp;
  be_.zero(b.dprobs, sizeof(float) * size_t(N) * E);

  if (b.competed) {
    // Affinity balance on p_C (not detached): its gradient reaches every expert's score and
    // output, so every expert is recomputed here (experts one at a time, nothing stored).
    // Runs first: it uses d_rows / d_hid as (N,·) scratch before they hold the row gradients.
    const float cb = aux_scale * opts_.competition_balance_coef;
    if (cb != 0.0f) {
      be_.zero(b.dp_c, sizeof(float) * size_t(N) * E);
      be_.moe_entropy_balance(b.dp_c, b.p_c, B, T, E, cb);
      be_.zero(b.dscores, sizeof(float) * size_t(N) * E);
      be_.moe_softmax_backward(b.dscores, b.dp_c, b.p_c, N, E);  // ∂/∂s (N,E)
      if (ep_.active()) competition_balance_backward_ep(dinp, N);
      for (int e = 0; !ep_.active() && e < E; e++) {
        ffn_forward(be_, b.expert(e, C, H), b.cmp_h, b.cmp_a, b.cmp_o, inp, N, C, H);
        be_.zero(b.d_rows, sizeof(float) * size_t(N) * C);
        be_.moe_expert_score_backward(b.d_rows, b.dscores + e, E, b.cmp_o, N, C, l2);
        ffn_backward(be_, b.expert(e, C, H), dinp, b.d_rows, b.cmp_h, b.cmp_a, inp, b.d_hid, N, C, H);
      }
    }
    // LM loss through the combine: into the winners' rows and, through w_C, their scores.
    be_.moe_combine_backward(b.d_rows, b.dgate, dout, b.o_rows, b.cgate, b.row_of_slot, N, K, C);
    be_.moe_diversity_loss(b.d_rows, b.o_rows, b.row_of_slot, N, K, C, aux_scale * opts_.diversity_coef);
    be_.moe_gate_backward(b.dval, b.dgate, b.cgate, b.best, N, K, /*softmax=*/l2);  // ∂L/∂s at the winners
    be_.moe_gather_rows(b.score_rows, b.dval, b.slot_of_row, 1, R, 1);               // per sorted row
    be_.moe_expert_score_backward(b.d_rows, b.score_rows, 1, b.o_rows, R, C, l2);
    // The router learns only from distillation (and the z-loss) on a competition step.
    be_.moe_distill_loss(b.dprobs, b.probs, b.scores, b.cidx, N, E, K, opts_.distill_theta,
                         opts_.distill_topk_target, aux_scale * opts_.router_coef);
    be_.moe_router_backward(b.dlogits, nullptr, b.idx, b.dprobs, b.act, b.probs, N, E, K, sig);
  } else {
    be_.moe_combine_backward(b.d_rows, b.dgate, dout, b.o_rows, b.gate, b.row_of_slot, N, K, C);
    be_.moe_gate_backward(b.dval, b.dgate, b.gate, b.val, N, K, /*softmax=*/false);
    const float bc = aux_scale * opts_.balance_coef;
    if (bc != 0.0f) {
      if (opts_.balance == BalanceLoss::Entropy)
        be_.moe_entropy_balance(b.dprobs, b.probs, B, T, E, bc);
      else
        be_.moe_switch_balance(b.dprobs, b.probs, b.idx, N, E, K, bc);
    }
    be_.moe_router_backward(b.dlogits, b.dval, b.idx, b.dprobs, b.act, b.probs, N, E, K, sig);
  }
  const float zc = aux_scale * opts_.z_loss_coef;
  if (zc != 0.0f) be_.moe_z_loss(b.dlogits, b.logits, N, E, zc);

  experts_backward();  // d_rows: ∂L/∂o → ∂L/∂x
  be_.moe_scatter_rows(dinp, b.d_rows, b.row_of_slot, N, K, C);

  // Shared experts (d_hid's first N rows are scratch now).
  for (int s = 0; s < S; s++)
    ffn_backward(be_, b.shared(s, C, H), dinp, dout, b.sh_h + size_t(s) * N * H,
                 b.sh_a + size_t(s) * N * H, inp, b.d_hid, N, C, H);

  // Router: dW_r += dgᵀ x, dinp += dg · W_r.
  be_.matmul_backward(dinp, b.dwr, nullptr, b.dlogits, inp, b.wr, N, C, E, GradMode::accumulate);
}

// ---- the experts over the sorted rows: local, or dispatched to their ranks -----------------
//
// Either way the work is a list of segments — (local expert, first row, rows) — over one set
// of row buffers: the layer's own sorted rows (all experts local), or the rows received from
// the expert-parallel group (laid out by source rank, then local expert).

namespace {
struct Segment {
  int expert, r0, n;
};
struct RowBuffers {
  float *x, *h, *a, *o, *dh;  // (rows,C), (rows,H), (rows,H), (rows,C), (rows,H) scratch
};
}  // namespace

// The segments of this rank's experts over the rows they get: local counts (offsets) or
// the group's (recv_counts), skipping empty ones.
static std::vector<Segment> expert_segments(const std::vector<int32_t>& counts_by_source_expert, int n_experts) {
  std::vector<Segment> segs;
  int r0 = 0;
  for (size_t i = 0; i < counts_by_source_expert.size(); ++i) {
    const int n = counts_by_source_expert[i];
    if (n > 0) segs.push_back({int(i % size_t(n_experts)), r0, n});
    r0 += n;
  }
  return segs;
}

void MoeLayer::experts_forward() {
  Bound& b = *b_;
  const int C = C_, E = opts_.n_experts, H = opts_.expert_hidden;
  std::vector<int32_t> counts(static_cast<size_t>(E));  // rows per (global) expert
  for (int e = 0; e < E; e++) counts[e] = b.offsets_host[e + 1] - b.offsets_host[e];
  RowBuffers rows{b.x_rows, b.h_rows, b.a_rows, b.o_rows, b.d_hid};
  int El = E;
  if (ep_.active()) {
    // Rows are sorted by global expert, so the rows for rank p's experts are one contiguous
    // range: exchange per-expert counts, then send each rank its rows.
    const int P = ep_.size;
    El = E / P;
    b.recv_counts.assign(size_t(P) * El, 0);  // (P, El)
    ep_.comm->alltoall(counts.data(), b.recv_counts.data(), sizeof(int32_t) * El);
    b.send_rows.assign(P, 0);
    b.recv_rows.assign(P, 0);
    for (int p = 0; p < P; p++)
      for (int el = 0; el < El; el++) {
        b.send_rows[p] += counts[size_t(p) * El + el];
        b.recv_rows[p] += b.recv_counts[size_t(p) * El + el];
      }
    ep_.dcomm->alltoallv(b.x_rows, row_bytes(b.send_rows), b.recv_x, row_bytes(b.recv_rows));
    rows = {b.recv_x, b.recv_h, b.recv_a, b.recv_o, b.recv_dh};
    counts = b.recv_counts;
  }
  for (const Segment& g : expert_segments(counts, El))
    ffn_forward(be_, b.expert(g.expert, C, H), rows.h + size_t(g.r0) * H, rows.a + size_t(g.r0) * H,
                rows.o + size_t(g.r0) * C, rows.x + size_t(g.r0) * C, g.n, C, H);
  // The outputs go back into place, in the order the rows were sent.
  if (ep_.active()) ep_.dcomm->alltoallv(b.recv_o, row_bytes(b.recv_rows), b.o_rows, row_bytes(b.send_rows));
}

void MoeLayer::experts_backward() {
  Bound& b = *b_;
  const int C = C_, E = opts_.n_experts, H = opts_.expert_hidden;
  std::vector<int32_t> counts(static_cast<size_t>(E));
  for (int e = 0; e < E; e++) counts[e] = b.offsets_host[e + 1] - b.offsets_host[e];
  RowBuffers rows{b.x_rows, b.h_rows, b.a_rows, b.d_rows, b.d_hid};  // o: ∂L/∂o in, ∂L/∂x out
  int El = E;
  if (ep_.active()) {
    // The forward's exchange in reverse: ∂L/∂o rows go to the experts' ranks (into recv_o,
    // whose outputs are no longer needed), become ∂L/∂x there, and come back into d_rows.
    El = E / ep_.size;
    ep_.dcomm->alltoallv(b.d_rows, row_bytes(b.send_rows), b.recv_o, row_bytes(b.recv_rows));
    rows = {b.recv_x, b.recv_h, b.recv_a, b.recv_o, b.recv_dh};
    counts = b.recv_counts;
  }
  // Each segment's ∂L/∂o is consumed and replaced in place by its ∂L/∂x.
  for (const Segment& g : expert_segments(counts, El)) {
    float* d_o = rows.o + size_t(g.r0) * C;
    ffn_backward(be_, b.expert(g.expert, C, H), d_o, d_o, rows.h + size_t(g.r0) * H, rows.a + size_t(g.r0) * H,
                 rows.x + size_t(g.r0) * C, rows.dh + size_t(g.r0) * H, g.n, C, H);
  }
  if (ep_.active()) ep_.dcomm->alltoallv(b.recv_o, row_bytes(b.recv_rows), b.d_rows, row_bytes(b.send_rows));
}

std::vector<int64_t> MoeLayer::row_bytes(const std::vector<int64_t>& rows) const {
  std::vector<int64_t> v(rows.size());
  for (size_t i = 0; i < rows.size(); i++) v[i] = rows[i] * C_ * int64_t(sizeof(float));
  return v;
}

void MoeLayer::compete_scores_ep(const float* inp, int N) {
  Bound& b = *b_;
  const int C = C_, E = opts_.n_experts, H = opts_.expert_hidden, P = ep_.size, El = E / P, PN = P * N;
  const bool l2 = opts_.score == CompetitionScore::L2;
  ep_.dcomm->allgather(inp, b.all_x, sizeof(float) * size_t(N) * C);  // (P·N, C)
  for (int el = 0; el < El; el++) {
    ffn_forward(be_, b.expert(el, C, H), b.cmp_h, b.cmp_a, b.cmp_o, b.all_x, PN, C, H);
    be_.moe_expert_score(b.local_scores + el, El, b.cmp_o, PN, C, l2);  // column el of (P·N, El)
  }
  // Block s of local_scores (rows s·N…) goes to rank s; block p received holds rank p's
  // experts for this rank's tokens: scores[n][p·El + el] = recv[p][n][el].
  // The (P·N, El) block is small: it comes down once and is exchanged over the host
  // communicator (its counterpart under NCCL, a device all-to-all, would still come down here
  // for the reorder below).
  std::vector<float> local(size_t(PN) * El), recv(size_t(N) * E), scores(size_t(N) * E);
  be_.download(local.data(), b.local_scores, local.size() * sizeof(float));
  ep_.comm->alltoall(local.data(), recv.data(), sizeof(float) * size_t(N) * El);
  for (int p = 0; p < P; p++)
    for (int n = 0; n < N; n++)
      for (int el = 0; el < El; el++)
        scores[size_t(n) * E + p * El + el] = recv[(size_t(p) * N + n) * El + el];
  be_.upload(b.scores, scores.data(), scores.size() * sizeof(float));
}

void MoeLayer::competition_balance_backward_ep(float* dinp, int N) {
  Bound& b = *b_;
  const int C = C_, E = opts_.n_experts, H = opts_.expert_hidden, P = ep_.size, El = E / P, PN = P * N;
  const bool l2 = opts_.score == CompetitionScore::L2;
  // ∂L/∂scores (N,E) of this rank's tokens → per owner rank p the (N, El) block of its experts.
  std::vector<float> ds(size_t(N) * E), send(size_t(N) * E), recv(size_t(N) * E);
  be_.download(ds.data(), b.dscores, ds.size() * sizeof(float));
  for (int p = 0; p < P; p++)
    for (int n = 0; n < N; n++)
      for (int el = 0; el < El; el++)
        send[(size_t(p) * N + n) * El + el] = ds[size_t(n) * E + p * El + el];
  ep_.comm->alltoall(send.data(), recv.data(), sizeof(float) * size_t(N) * El);  // host: (P·N, El), all tokens
  float* dscores_local = b.local_scores;  // the forward's scores are no longer needed
  be_.upload(dscores_local, recv.data(), recv.size() * sizeof(float));
  // Every local expert recomputed over every token of the group (nothing stored), its score
  // gradient pushed through it; ∂L/∂x of all group tokens summed, each rank keeps its block.
  be_.zero(b.all_dx, sizeof(float) * size_t(PN) * C);
  float* d_o = b.recv_o;  // (P·N, C) scratch: the forward outputs it held are consumed
  for (int el = 0; el < El; el++) {
    ffn_forward(be_, b.expert(el, C, H), b.cmp_h, b.cmp_a, b.cmp_o, b.all_x, PN, C, H);
    be_.zero(d_o, sizeof(float) * size_t(PN) * C);
    be_.moe_expert_score_backward(d_o, dscores_local + el, El, b.cmp_o, PN, C, l2);
    ffn_backward(be_, b.expert(el, C, H), b.all_dx, d_o, b.cmp_h, b.cmp_a, b.all_x, b.recv_dh, PN, C, H);
  }
  float* mine = b.cmp_o;  // (N, C)
  ep_.dcomm->reduce_scatter_sum(b.all_dx, mine, size_t(N) * C);
  be_.accumulate(dinp, mine, size_t(N) * C);
}

}  // namespace competelm
