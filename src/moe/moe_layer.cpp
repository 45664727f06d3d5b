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

namespace competelm {
namespace {

struct ActSpec {
  std::string name;
  std::vector<int64_t> shape;
};

// Every activation / scratch tensor the layer registers, for max_tokens tokens. Index tensors
// are int32 stored in float-sized slots of the activation table.
std::vector<ActSpec> act_specs(const MoeOptions& o, int C, int N) {
  const int64_t E = o.n_experts, K = o.top_k, H = o.expert_hidden, S = o.shared_experts, R = int64_t(N) * K;
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
    v.push_back({"compete.h", {N, H}});
    v.push_back({"compete.a", {N, H}});
    v.push_back({"compete.o", {N, C}});
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
  be.matmul_forward(h, x, w.fc_w, w.fc_b, n, C, H);
  be.gelu_forward(a, h, size_t(n) * H);
  be.matmul_forward(o, a, w.proj_w, w.proj_b, n, H, C);
}

// dx += ∂L/∂x and the weight gradients, given d_o = ∂L/∂o (n,C). dh (n,H) is scratch. The
// forward's a is overwritten with ∂L/∂h: it is no longer needed once the proj weight gradient
// is formed. dx may alias d_o (then d_o is consumed and replaced by ∂L/∂x).
void ffn_backward(Backend& be, const FfnWeights& w, float* dx, const float* d_o, const float* h, float* a,
                  const float* x, float* dh, int n, int C, int H) {
  be.zero(dh, sizeof(float) * size_t(n) * H);
  be.matmul_backward(dh, w.dproj_w, w.dproj_b, d_o, a, w.proj_w, n, H, C);  // ∂L/∂a
  be.zero(a, sizeof(float) * size_t(n) * H);
  be.gelu_backward(a, h, dh, size_t(n) * H);  // a := ∂L/∂h
  if (dx == d_o) be.zero(dx, sizeof(float) * size_t(n) * C);
  be.matmul_backward(dx, w.dfc_w, w.dfc_b, a, x, w.fc_w, n, C, H);
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

MoeLayer::MoeLayer(Backend& backend, const MoeOptions& opts, int C, int max_tokens)
    : be_(backend), opts_(opts), C_(C), max_tokens_(max_tokens), b_(std::make_shared<Bound>()) {
  check_options(opts_);
}

void MoeLayer::add_params(TensorTable& params, const std::string& prefix, const MoeOptions& o, int C,
                          bool decay_matrices) {
  check_options(o);
  const int64_t E = o.n_experts, H = o.expert_hidden, S = o.shared_experts;
  params.add(prefix + "router.weight", {E, C}, decay_matrices);
  params.add(prefix + "experts.fc.weight", {E, H, C}, decay_matrices);
  params.add(prefix + "experts.fc.bias", {E, H});
  params.add(prefix + "experts.proj.weight", {E, C, H}, decay_matrices);
  params.add(prefix + "experts.proj.bias", {E, C});
  if (S > 0) {
    params.add(prefix + "shared.fc.weight", {S, H, C}, decay_matrices);
    params.add(prefix + "shared.fc.bias", {S, H});
    params.add(prefix + "shared.proj.weight", {S, C, H}, decay_matrices);
    params.add(prefix + "shared.proj.bias", {S, C});
  }
}

void MoeLayer::add_acts(TensorTable& acts, const std::string& prefix, const MoeOptions& o, int C, int max_tokens) {
  check_options(o);
  for (ActSpec& s : act_specs(o, C, max_tokens)) acts.add(prefix + s.name, std::move(s.shape));
}

size_t MoeLayer::activation_bytes() const {
  size_t n = 0;
  for (const ActSpec& s : act_specs(opts_, C_, max_tokens_))
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
  if (competing) {
    // Every expert on every token, one expert at a time; the running top-K keeps the winners'
    // o rows in d_rows and h rows in d_hid, slot-ordered (n·K + k).
    for (int e = 0; e < E; e++) {
      ffn_forward(be_, b.expert(e, C, H), b.cmp_h, b.cmp_a, b.cmp_o, inp, N, C, H);
      be_.moe_expert_score(b.scores + e, E, b.cmp_o, N, C, l2);
      be_.moe_compete_insert(b.cidx, b.best, b.d_rows, b.d_hid, b.scores + e, E, b.cmp_o, b.cmp_h, e, N, K, C, H);
    }
    be_.moe_gate_forward(b.cgate, b.best, N, K, /*softmax=*/l2);
    used_idx = b.cidx, used_gate = b.cgate;
  }

  // Group the slots by expert: offsets (host copy for the per-expert GEMM ranges).
  be_.moe_permute(b.offsets, b.row_of_slot, b.slot_of_row, used_idx, N, E, K);
  be_.download(b.offsets_host.data(), b.offsets, sizeof(int32_t) * (static_cast<size_t>(E) + 1));
  be_.moe_gather_rows(b.x_rows, inp, b.slot_of_row, K, R, C);  // (R,C)
  if (competing) {
    be_.moe_gather_rows(b.h_rows, b.d_hid, b.slot_of_row, 1, R, H);
    be_.gelu_forward(b.a_rows, b.h_rows, static_cast<size_t>(R) * H);
    be_.moe_gather_rows(b.o_rows, b.d_rows, b.slot_of_row, 1, R, C);
  } else {
    for (int e = 0; e < E; e++) {
      const int r0 = b.offsets_host[e], n = b.offsets_host[e + 1] - r0;
      if (n == 0) continue;
      ffn_forward(be_, b.expert(e, C, H), b.h_rows + size_t(r0) * H, b.a_rows + size_t(r0) * H,
                  b.o_rows + size_t(r0) * C, b.x_rows + size_t(r0) * C, n, C, H);
    }
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
      for (int e = 0; e < E; e++) {
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

  // Grouped expert backward over each expert's row range; d_rows[range] is reused for ∂L/∂x
  // once the range's ∂L/∂o has been consumed.
  for (int e = 0; e < E; e++) {
    const int r0 = b.offsets_host[e], n = b.offsets_host[e + 1] - r0;
    if (n == 0) continue;
    float* d_o = b.d_rows + size_t(r0) * C;  // ∂L/∂o of the range, then its ∂L/∂x
    ffn_backward(be_, b.expert(e, C, H), d_o, d_o, b.h_rows + size_t(r0) * H, b.a_rows + size_t(r0) * H,
                 b.x_rows + size_t(r0) * C, b.d_hid + size_t(r0) * H, n, C, H);
  }
  be_.moe_scatter_rows(dinp, b.d_rows, b.row_of_slot, N, K, C);

  // Shared experts (d_hid's first N rows are scratch now).
  for (int s = 0; s < S; s++)
    ffn_backward(be_, b.shared(s, C, H), dinp, dout, b.sh_h + size_t(s) * N * H,
                 b.sh_a + size_t(s) * N * H, inp, b.d_hid, N, C, H);

  // Router: dW_r += dgᵀ x, dinp += dg · W_r.
  be_.matmul_backward(dinp, b.dwr, nullptr, b.dlogits, inp, b.wr, N, C, E);
}

}  // namespace competelm
