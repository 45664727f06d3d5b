#include "model/gpt2.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.hpp"
#include "core/rng.hpp"
#include "dist/comm.hpp"

namespace competelm {

// Handles into the activation table. Per-layer tensors are indexed [l].
struct GPT2::Acts {
  size_t encoded;                       // (B, T, C)   token + position embedding
  std::vector<size_t> ln1, ln1_mean, ln1_rstd;   // (B,T,C), (B,T), (B,T)
  std::vector<size_t> qkv;              // (B, T, 3C)
  std::vector<size_t> atty;             // (B, T, C)   attention output before the projection
  std::vector<size_t> att;              // what the attention backward needs: (B, NH, T, T) weights on
                                        // the CPU, (B, NH, T) softmax statistics with flash attention
  std::vector<size_t> residual2;        // (B, T, C)   x + attn(ln1(x))
  std::vector<size_t> ln2, ln2_mean, ln2_rstd;
  std::vector<size_t> fch;              // (B, T, 4C)  fc output, before GELU
  std::vector<size_t> fch_gelu;         // (B, T, 4C)
  std::vector<size_t> residual3;        // (B, T, C)   block output
  size_t lnf, lnf_mean, lnf_rstd;       // (B,T,C), (B,T), (B,T)
  size_t logits;                        // (B, T, Vp)  overwritten by dlogits in backward
  size_t losses;                        // (B, T)
  // Gradient scratch (a second buffer with its own table, same handles style).
  size_t d_residual;                    // (B, T, C)   gradient flowing down the residual stream
  size_t d_ln;                          // (B, T, C)
  size_t d_qkv;                         // (B, T, 3C)
  size_t d_atty;                        // (B, T, C)
  size_t d_fch, d_fch_gelu;             // (B, T, 4C)
  size_t d_att_scratch;                 // Backend::attention_scratch_elements
};

int ModelMoe::count() const {
  int n = 0;
  for (bool b : layers) n += b;
  return n;
}

namespace {
std::string block_prefix(int l) { return "blocks." + std::to_string(l) + "."; }
}  // namespace

GPT2::GPT2(Backend& backend, const ModelShape& shape, const ModelInit& init, int B, int T, const ModelMoe& moe)
    : be_(backend), shape_(shape), init_(init), moe_(moe), maxB_(B), maxT_(T), a_(std::make_unique<Acts>()) {
  if (shape.d_model % shape.n_head != 0)
    fail("model.d_model ({}) must be divisible by model.n_head ({})", shape.d_model, shape.n_head);
  if (T > shape.seq_len) fail("batch T={} exceeds model.seq_len={}", T, shape.seq_len);
  if (!moe_.layers.empty() && int(moe_.layers.size()) != shape.n_layer)
    fail("MoE layer mask has {} entries but the model has {} layers", moe_.layers.size(), shape.n_layer);
  moe_.layers.resize(shape.n_layer, false);
  for (int l = 0; l < shape.n_layer; ++l)
    if (moe_.layers[l]) moe_index_.push_back(l);
  if (moe_.ep.active() && !moe_index_.empty() && moe_.options.n_experts % moe_.ep.size != 0)
    fail("expert parallel size {} does not divide moe.n_experts = {}", moe_.ep.size, moe_.options.n_experts);
  build_param_table(params_, /*canonical=*/false);
  build_param_table(canonical_, /*canonical=*/true);
  expert_region_begin_ = params_.total_elements();
  for (const TensorSpec& s : params_.specs())
    if (MoeLayer::is_expert_param(s.name)) expert_region_begin_ = std::min(expert_region_begin_, s.offset);
  build_grad_groups();
  build_act_table(B, T);
  params_mem_ = static_cast<float*>(be_.alloc(params_.total_elements() * sizeof(float)));
  grads_mem_ = static_cast<float*>(be_.alloc(params_.total_elements() * sizeof(float)));
  acts_mem_ = static_cast<float*>(be_.alloc(acts_.total_elements() * sizeof(float)));
  tokens_dev_ = static_cast<int32_t*>(be_.alloc(size_t(B) * T * sizeof(int32_t)));
  targets_dev_ = static_cast<int32_t*>(be_.alloc(size_t(B) * T * sizeof(int32_t)));
  moe_layers_.resize(shape.n_layer);
  for (int l : moe_index_) {
    moe_layers_[l] = std::make_unique<MoeLayer>(be_, moe_.options, shape.d_model, B * T, moe_.ep);
    moe_layers_[l]->bind(params_, params_mem_, grads_mem_, acts_, acts_mem_, block_prefix(l) + "moe.");
  }
  compete_next_.assign(moe_index_.size(), false);
  moe_stats_.resize(moe_index_.size());
}

GPT2::~GPT2() {
  be_.dealloc(params_mem_);
  be_.dealloc(grads_mem_);
  be_.dealloc(acts_mem_);
  be_.dealloc(tokens_dev_);
  be_.dealloc(targets_dev_);
}

void GPT2::build_param_table(TensorTable& table, bool canonical) const {
  const int64_t C = shape_.d_model, Vp = shape_.padded_vocab(), maxT = shape_.seq_len;
  const bool emb = init_.decay_embeddings, norm = init_.decay_norms;
  table.add("wte", {Vp, C}, emb);
  table.add("wpe", {maxT, C}, emb);
  for (int l = 0; l < shape_.n_layer; ++l) {
    const std::string p = "blocks." + std::to_string(l) + ".";
    table.add(p + "ln1.weight", {C}, norm);
    table.add(p + "ln1.bias", {C});
    table.add(p + "attn.qkv.weight", {3 * C, C}, true);
    table.add(p + "attn.qkv.bias", {3 * C});
    table.add(p + "attn.proj.weight", {C, C}, true);
    table.add(p + "attn.proj.bias", {C});
    table.add(p + "ln2.weight", {C}, norm);
    table.add(p + "ln2.bias", {C});
    if (moe_.layers[l]) {
      MoeLayer::add_params(table, p + "moe.", moe_.options, int(C), true, /*with_experts=*/canonical);
      continue;
    }
    table.add(p + "mlp.fc.weight", {4 * C, C}, true);
    table.add(p + "mlp.fc.bias", {4 * C});
    table.add(p + "mlp.proj.weight", {C, 4 * C}, true);
    table.add(p + "mlp.proj.bias", {C});
  }
  table.add("lnf.weight", {C}, norm);
  table.add("lnf.bias", {C});
  if (canonical) return;
  // The routed experts this rank holds, last: one contiguous region, reduced among the ranks
  // holding the same experts (the rest among all ranks).
  for (int l : moe_index_)
    MoeLayer::add_expert_params(table, block_prefix(l) + "moe.", moe_.options, int(C),
                                moe_.ep.local_experts(moe_.options.n_experts));
}

int GPT2::grad_group_of(const std::string& tensor) const {
  if (tensor == "wte" || tensor == "wpe") return kEmbeddingGroup;
  if (tensor.rfind("lnf.", 0) == 0) return lnf_group();
  CLM_ASSERT(tensor.rfind("blocks.", 0) == 0);
  const int l = std::stoi(tensor.substr(7));
  return MoeLayer::is_expert_param(tensor) ? expert_group(l) : block_group(l);
}

void GPT2::build_grad_groups() {
  // Each group's tensors are consecutive in the buffer (build_param_table's order); a group
  // runs to where the next one starts, so that the alignment gaps are covered too.
  grad_groups_.assign(size_t(2 + 2 * shape_.n_layer), ParamRange{});
  const std::vector<TensorSpec>& specs = params_.specs();
  for (size_t i = 0; i < specs.size(); ++i) {
    const int g = grad_group_of(specs[i].name);
    const size_t end = i + 1 < specs.size() ? specs[i + 1].offset : params_.total_elements();
    ParamRange& r = grad_groups_[size_t(g)];
    if (r.size() == 0) r.begin = specs[i].offset;
    CLM_ASSERT(r.end == 0 || r.end == specs[i].offset);  // contiguous
    r.end = end;
  }
}

std::vector<ParamRange> GPT2::grad_ready_order() const {
  std::vector<ParamRange> order{grad_groups_[size_t(lnf_group())]};
  for (int l = shape_.n_layer - 1; l >= 0; --l) {
    if (moe_.layers[l] && grad_groups_[size_t(expert_group(l))].size() > 0)
      order.push_back(grad_groups_[size_t(expert_group(l))]);
    order.push_back(grad_groups_[size_t(block_group(l))]);
  }
  order.push_back(grad_groups_[kEmbeddingGroup]);
  return order;
}

size_t GPT2::canonical_offset(const TensorSpec& s) const {
  return MoeLayer::is_expert_param(s.name) ? size_t(moe_.ep.rank) * s.numel : 0;
}

std::vector<float> GPT2::from_canonical(const std::vector<float>& canonical) const {
  CLM_ASSERT(canonical.size() == canonical_.total_elements());
  std::vector<float> local(params_.total_elements(), 0.0f);
  for (const TensorSpec& s : params_.specs()) {
    const float* src = canonical.data() + canonical_.at(s.name).offset + canonical_offset(s);
    std::copy(src, src + s.numel, local.data() + s.offset);
  }
  return local;
}

std::vector<float> GPT2::to_canonical(const std::vector<float>& local) const {
  CLM_ASSERT(local.size() == params_.total_elements());
  std::vector<float> canonical(canonical_.total_elements(), 0.0f);
  const ExpertParallel& ep = moe_.ep;
  const size_t region = params_.total_elements() - expert_region_begin_;
  // Under expert parallelism every rank of the group contributes its experts' region.
  std::vector<float> regions(region * size_t(ep.size));
  if (ep.active() && region > 0)
    ep.comm->allgather(local.data() + expert_region_begin_, regions.data(), region * sizeof(float));
  for (const TensorSpec& s : params_.specs()) {
    float* dst = canonical.data() + canonical_.at(s.name).offset;
    if (!MoeLayer::is_expert_param(s.name) || !ep.active()) {
      std::copy(local.data() + s.offset, local.data() + s.offset + s.numel, dst);
      continue;
    }
    for (int p = 0; p < ep.size; ++p) {
      const float* src = regions.data() + size_t(p) * region + (s.offset - expert_region_begin_);
      std::copy(src, src + s.numel, dst + size_t(p) * s.numel);
    }
  }
  return canonical;
}

void GPT2::build_act_table(int B, int T) {
  const int64_t C = shape_.d_model, NH = shape_.n_head, Vp = shape_.padded_vocab();
  const int64_t BT = int64_t(B) * T;
  Acts& a = *a_;
  a.encoded = acts_.add("encoded", {B, T, C});
  for (int l = 0; l < shape_.n_layer; ++l) {
    const std::string p = std::to_string(l) + ".";
    a.ln1.push_back(acts_.add(p + "ln1", {B, T, C}));
    a.ln1_mean.push_back(acts_.add(p + "ln1_mean", {BT}));
    a.ln1_rstd.push_back(acts_.add(p + "ln1_rstd", {BT}));
    a.qkv.push_back(acts_.add(p + "qkv", {B, T, 3 * C}));
    a.atty.push_back(acts_.add(p + "atty", {B, T, C}));
    a.att.push_back(acts_.add(p + "att", {int64_t(be_.attention_state_elements(B, int(NH), T))}));
    a.residual2.push_back(acts_.add(p + "residual2", {B, T, C}));
    a.ln2.push_back(acts_.add(p + "ln2", {B, T, C}));
    a.ln2_mean.push_back(acts_.add(p + "ln2_mean", {BT}));
    a.ln2_rstd.push_back(acts_.add(p + "ln2_rstd", {BT}));
    if (moe_.layers[l]) {
      // Same prefix as the parameters: MoeLayer::bind() looks both up with one prefix.
      MoeLayer::add_acts(acts_, block_prefix(l) + "moe.", moe_.options, int(C), int(BT), moe_.ep.size);
      a.fch.push_back(SIZE_MAX);  // no dense MLP in this block
      a.fch_gelu.push_back(SIZE_MAX);
    } else {
      a.fch.push_back(acts_.add(p + "fch", {B, T, 4 * C}));
      a.fch_gelu.push_back(acts_.add(p + "fch_gelu", {B, T, 4 * C}));
    }
    a.residual3.push_back(acts_.add(p + "residual3", {B, T, C}));
  }
  a.lnf = acts_.add("lnf", {B, T, C});
  a.lnf_mean = acts_.add("lnf_mean", {BT});
  a.lnf_rstd = acts_.add("lnf_rstd", {BT});
  a.logits = acts_.add("logits", {B, T, Vp});
  a.losses = acts_.add("losses", {BT});
  a.d_residual = acts_.add("d_residual", {B, T, C});
  a.d_ln = acts_.add("d_ln", {B, T, C});
  a.d_qkv = acts_.add("d_qkv", {B, T, 3 * C});
  a.d_atty = acts_.add("d_atty", {B, T, C});
  a.d_fch = acts_.add("d_fch", {B, T, 4 * C});
  a.d_fch_gelu = acts_.add("d_fch_gelu", {B, T, 4 * C});
  a.d_att_scratch = acts_.add("d_att_scratch", {int64_t(be_.attention_scratch_elements(B, int(NH), T))});
}

float* GPT2::param(const std::string& name) { return params_mem_ + params_.at(name).offset; }
float* GPT2::grad(const std::string& name) { return grads_mem_ + params_.at(name).offset; }

void GPT2::init_weights(uint64_t seed) {
  // Drawn for the whole model in canonical order, so every rank layout and expert-parallel
  // size starts from the same weights; then this rank's share is taken.
  std::vector<float> host(canonical_.total_elements(), 0.0f);
  Rng rng(seed);
  const float resid_std =
      init_.scale_residual ? init_.std / std::sqrt(2.0f * shape_.n_layer) : init_.std;
  for (const TensorSpec& s : canonical_.specs()) {
    float* p = host.data() + s.offset;
    const bool is_bias = s.name.ends_with(".bias");
    const bool is_norm = s.name.ends_with(".weight") &&
                         (s.name.starts_with("lnf.") || s.name.find(".ln1.") != std::string::npos ||
                          s.name.find(".ln2.") != std::string::npos);
    if (is_bias) continue;  // zeros
    if (is_norm) {
      std::fill(p, p + s.numel, 1.0f);
      continue;
    }
    // Projections back into the residual stream (attention, MLP, experts) get the scaled std.
    const bool residual_proj = s.name.ends_with(".proj.weight");
    const float sd = residual_proj ? resid_std : init_.std;
    for (size_t i = 0; i < s.numel; ++i) p[i] = sd * rng.normal();
  }
  const std::vector<float> local = from_canonical(host);
  be_.upload(params_mem_, local.data(), local.size() * sizeof(float));
}

void GPT2::zero_grad() { be_.zero(grads_mem_, params_.total_elements() * sizeof(float)); }

float GPT2::forward(const int32_t* tokens, const int32_t* targets, int B, int T) {
  if (B > maxB_ || T > maxT_) fail("forward: batch ({}, {}) exceeds allocated ({}, {})", B, T, maxB_, maxT_);
  const int C = shape_.d_model, NH = shape_.n_head, L = shape_.n_layer;
  const int V = shape_.vocab_size, Vp = shape_.padded_vocab();
  const int N = B * T;
  for (int i = 0; i < N; ++i)
    if (tokens[i] < 0 || tokens[i] >= V) fail("token id {} at position {} is outside the vocabulary [0, {})", tokens[i], i, V);
  B_ = B;
  T_ = T;
  be_.upload(tokens_dev_, tokens, size_t(N) * sizeof(int32_t));
  have_targets_ = targets != nullptr;
  if (have_targets_) be_.upload(targets_dev_, targets, size_t(N) * sizeof(int32_t));

  const Acts& a = *a_;
  auto act = [&](size_t h) { return acts_mem_ + acts_[h].offset; };
  auto w = [&](const std::string& n) { return param(n); };

  double aux = 0.0;  // Σ over MoE layers of their aux losses
  be_.encoder_forward(act(a.encoded), tokens_dev_, w("wte"), w("wpe"), B, T, C);  // (B, T, C)
  // Each residual add is fused into the layernorm that reads its sum (one pass over (N, C)):
  // the attention branch's into ln2, the FFN branch's into the next block's ln1 (or lnf). So
  // a block starts with its ln1 already computed; block 0's has no add before it.
  if (L > 0)
    be_.layernorm_forward(act(a.ln1[0]), act(a.ln1_mean[0]), act(a.ln1_rstd[0]), act(a.encoded),
                          w("blocks.0.ln1.weight"), w("blocks.0.ln1.bias"), N, C);     // (B, T, C)
  else
    be_.layernorm_forward(act(a.lnf), act(a.lnf_mean), act(a.lnf_rstd), act(a.encoded), w("lnf.weight"),
                          w("lnf.bias"), N, C);                                        // (B, T, C)
  float* residual = act(a.encoded);  // x, the block's input
  for (int l = 0; l < L; ++l) {
    const std::string p = "blocks." + std::to_string(l) + ".";
    // x + attn(ln1(x))   (ln1(x) computed by the previous block's fused add, or above)
    be_.matmul_forward(act(a.qkv[l]), act(a.ln1[l]), w(p + "attn.qkv.weight"),
                       w(p + "attn.qkv.bias"), N, C, 3 * C);                           // (B, T, 3C)
    be_.attention_forward(act(a.atty[l]), act(a.att[l]), act(a.qkv[l]), B, T, C, NH);  // (B, T, C)
    be_.matmul_forward(act(a.residual2[l]), act(a.atty[l]), w(p + "attn.proj.weight"),
                       w(p + "attn.proj.bias"), N, C, C);                              // (B, T, C)
    // residual2 += x, and ln2(residual2)
    be_.residual_layernorm_forward(act(a.residual2[l]), residual, act(a.ln2[l]), act(a.ln2_mean[l]),
                                   act(a.ln2_rstd[l]), w(p + "ln2.weight"), w(p + "ln2.bias"), N,
                                   C);                                                 // (B, T, C)
    // x + mlp(ln2(x))
    if (MoeLayer* moe = moe_layers_[l].get()) {
      const int m = moe_layer_number(l);
      moe->forward(act(a.residual3[l]), act(a.ln2[l]), B, T, compete_next_[m], &moe_stats_[m]);  // (B, T, C)
      aux += moe_stats_[m].aux_loss;
    } else {
      be_.matmul_gelu_forward(act(a.fch[l]), act(a.fch_gelu[l]), act(a.ln2[l]), w(p + "mlp.fc.weight"),
                              w(p + "mlp.fc.bias"), N, C, 4 * C);                      // (B, T, 4C) x2
      be_.matmul_forward(act(a.residual3[l]), act(a.fch_gelu[l]), w(p + "mlp.proj.weight"),
                         w(p + "mlp.proj.bias"), N, 4 * C, C);                         // (B, T, C)
    }
    // residual3 += residual2 (the block's output), and the norm that reads it: the next
    // block's ln1, or lnf after the last block
    if (l + 1 < L) {
      const std::string pn = "blocks." + std::to_string(l + 1) + ".";
      be_.residual_layernorm_forward(act(a.residual3[l]), act(a.residual2[l]), act(a.ln1[l + 1]),
                                     act(a.ln1_mean[l + 1]), act(a.ln1_rstd[l + 1]), w(pn + "ln1.weight"),
                                     w(pn + "ln1.bias"), N, C);                        // (B, T, C)
    } else {
      be_.residual_layernorm_forward(act(a.residual3[l]), act(a.residual2[l]), act(a.lnf), act(a.lnf_mean),
                                     act(a.lnf_rstd), w("lnf.weight"), w("lnf.bias"), N, C);  // (B, T, C)
    }
    residual = act(a.residual3[l]);
  }
  be_.matmul_forward(act(a.logits), act(a.lnf), w("wte"), nullptr, N, C, Vp);          // (B, T, Vp)
  std::fill(compete_next_.begin(), compete_next_.end(), false);  // competition is per forward
  last_aux_loss_ = static_cast<float>(aux);
  if (!have_targets_) {
    last_lm_loss_ = 0.0f;
    return 0.0f;
  }
  be_.crossentropy_forward(act(a.losses), act(a.logits), targets_dev_, N, V, Vp);     // (B, T)
  std::vector<float> losses(N);
  be_.download(losses.data(), act(a.losses), losses.size() * sizeof(float));
  double sum = 0.0;
  for (float x : losses) sum += x;
  last_lm_loss_ = static_cast<float>(sum / N);
  return static_cast<float>(sum / N + aux);
}

void GPT2::set_competition(const std::vector<bool>& per_moe_layer) {
  if (per_moe_layer.size() != moe_index_.size())
    fail("set_competition: {} flags for {} MoE layers", per_moe_layer.size(), moe_index_.size());
  compete_next_ = per_moe_layer;
}

int GPT2::moe_layer_number(int block) const {
  for (size_t m = 0; m < moe_index_.size(); ++m)
    if (moe_index_[m] == block) return static_cast<int>(m);
  CLM_ASSERT(false);
  return -1;
}

void GPT2::backward(float loss_scale, GradReadyListener* ready) {
  if (!have_targets_) fail("backward() needs a forward() with targets");
  const int B = B_, T = T_;
  const int C = shape_.d_model, NH = shape_.n_head, L = shape_.n_layer;
  const int V = shape_.vocab_size, Vp = shape_.padded_vocab();
  const int N = B * T;
  const Acts& a = *a_;
  auto act = [&](size_t h) { return acts_mem_ + acts_[h].offset; };
  auto bytes = [&](size_t h) { return acts_[h].numel * sizeof(float); };
  auto w = [&](const std::string& n) { return param(n); };
  auto g = [&](const std::string& n) { return grad(n); };
  auto done = [&](int group) {  // no op below writes this group's gradients again
    const ParamRange r = grad_groups_[size_t(group)];
    if (ready && r.size() > 0) ready->grads_ready(r);
  };

  // d(mean loss)/d logits, in place: the logits buffer becomes dlogits.
  float* dlogits = act(a.logits);
  be_.crossentropy_backward(dlogits, act(a.logits), act(a.losses), targets_dev_, loss_scale / N, N,
                            V, Vp);  // (B, T, Vp)
  float* dres = act(a.d_residual);  // (B, T, C) gradient w.r.t. the current residual stream
  // Activation gradients that one op produces whole are overwritten (GradMode::overwrite), not
  // zeroed and accumulated into; dres collects several contributions and is zeroed once.
  constexpr GradMode kSet = GradMode::overwrite;
  be_.matmul_backward(act(a.d_ln), g("wte"), nullptr, dlogits, act(a.lnf), w("wte"), N, C, Vp, kSet);
  be_.zero(dres, bytes(a.d_residual));
  const float* last_residual = L > 0 ? act(a.residual3[L - 1]) : act(a.encoded);
  be_.layernorm_backward(dres, g("lnf.weight"), g("lnf.bias"), act(a.d_ln), last_residual,
                         w("lnf.weight"), act(a.lnf_mean), act(a.lnf_rstd), N, C);
  done(lnf_group());

  for (int l = L - 1; l >= 0; --l) {
    const std::string p = "blocks." + std::to_string(l) + ".";
    const float* residual_in = l > 0 ? act(a.residual3[l - 1]) : act(a.encoded);
    // dres is d(residual3[l]). FFN branch: residual3 = residual2 + FFN(ln2(residual2)), where FFN
    // is the dense MLP proj(gelu(fc(.))) or the MoE layer (whose aux losses are part of the loss).
    if (MoeLayer* moe = moe_layers_[l].get()) {
      be_.zero(act(a.d_ln), bytes(a.d_ln));  // the MoE layer accumulates several branches into it
      moe->backward(act(a.d_ln), dres, loss_scale);
      done(expert_group(l));
    } else {
      // d_fch = gelu'(fch) ∘ (dres · W_proj); d_fch_gelu is the unfused path's scratch.
      be_.matmul_backward_gelu(act(a.d_fch), g(p + "mlp.proj.weight"), g(p + "mlp.proj.bias"), dres,
                               act(a.fch_gelu[l]), act(a.fch[l]), w(p + "mlp.proj.weight"), N, 4 * C, C,
                               act(a.d_fch_gelu));
      be_.matmul_backward(act(a.d_ln), g(p + "mlp.fc.weight"), g(p + "mlp.fc.bias"), act(a.d_fch),
                          act(a.ln2[l]), w(p + "mlp.fc.weight"), N, C, 4 * C, kSet);
    }
    be_.layernorm_backward(dres, g(p + "ln2.weight"), g(p + "ln2.bias"), act(a.d_ln),
                           act(a.residual2[l]), w(p + "ln2.weight"), act(a.ln2_mean[l]),
                           act(a.ln2_rstd[l]), N, C);
    // dres is now d(residual2[l]). Attention branch: residual2 = x + proj(attn(qkv(ln1(x)))).
    be_.matmul_backward(act(a.d_atty), g(p + "attn.proj.weight"), g(p + "attn.proj.bias"), dres,
                        act(a.atty[l]), w(p + "attn.proj.weight"), N, C, C, kSet);
    be_.zero(act(a.d_qkv), bytes(a.d_qkv));
    be_.attention_backward(act(a.d_qkv), act(a.d_att_scratch), act(a.d_atty), act(a.atty[l]),
                           act(a.qkv[l]), act(a.att[l]), B, T, C, NH);
    be_.matmul_backward(act(a.d_ln), g(p + "attn.qkv.weight"), g(p + "attn.qkv.bias"), act(a.d_qkv),
                        act(a.ln1[l]), w(p + "attn.qkv.weight"), N, C, 3 * C, kSet);
    be_.layernorm_backward(dres, g(p + "ln1.weight"), g(p + "ln1.bias"), act(a.d_ln), residual_in,
                           w(p + "ln1.weight"), act(a.ln1_mean[l]), act(a.ln1_rstd[l]), N, C);
    done(block_group(l));
    // dres is now d(residual3[l-1]) = d(block input).
  }
  be_.encoder_backward(g("wte"), g("wpe"), dres, tokens_dev_, B, T, C);
  done(kEmbeddingGroup);
  have_targets_ = false;  // the logits buffer now holds dlogits
}

std::vector<float> GPT2::logits_host() const {
  const TensorSpec& s = acts_[a_->logits];
  std::vector<float> out(size_t(B_) * T_ * shape_.padded_vocab());
  be_.download(out.data(), acts_mem_ + s.offset, out.size() * sizeof(float));
  return out;
}

std::vector<float> GPT2::losses_host() const {
  const TensorSpec& s = acts_[a_->losses];
  std::vector<float> out(size_t(B_) * T_);
  be_.download(out.data(), acts_mem_ + s.offset, out.size() * sizeof(float));
  return out;
}

double GPT2::flops_per_token(int T) const {
  // 6 FLOPs per matmul parameter per token (2 forward, 4 backward) — every parameter but the
  // position embedding takes part in a matmul (wte through the tied LM head) — plus the
  // attention scores and weighted sum: 2·2·T·C per layer forward (full, not halved for the
  // causal mask, as in PaLM/nanoGPT's MFU), ×3 for forward + backward.
  const double n_matmul = double(num_active_parameters() - params_.at("wpe").numel);
  return 6.0 * n_matmul + 12.0 * shape_.n_layer * shape_.d_model * double(T);
}

size_t GPT2::moe_activation_bytes() const {
  size_t bytes = 0;
  for (const auto& layer : moe_layers_)
    if (layer) bytes += layer->activation_bytes();
  return bytes;
}

size_t GPT2::num_active_parameters() const {
  // A token passes through the router, top_k of the E routed experts, and the shared experts.
  size_t n = num_parameters();
  if (moe_index_.empty()) return n;
  const MoeOptions& o = moe_.options;
  const size_t C = shape_.d_model, H = o.expert_hidden;
  const size_t per_expert = H * C + H + C * H + C;
  n -= moe_index_.size() * size_t(o.n_experts - o.top_k) * per_expert;
  return n;
}

}  // namespace competelm
