#include "infer/kv_decoder.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/error.hpp"

namespace competelm {

void cached_attention(float* out, const float* qkv, const float* k_cache, const float* v_cache, int pos0, int n,
                      int max_T, int NH, int hs) {
  const int C = NH * hs, C3 = 3 * C;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  // Threads only when there is enough work: a single-token step of a small model is a few
  // microseconds, less than waking a thread team.
  const double work = double(n) * NH * (pos0 + n) * hs;
#pragma omp parallel if (work > 65536.0)
  {
    std::vector<float> w(static_cast<size_t>(pos0) + n);  // attention weights of one query
#pragma omp for collapse(2) schedule(static)
    for (int i = 0; i < n; i++) {
      for (int h = 0; h < NH; h++) {
        const int last = pos0 + i;  // causal: positions 0 .. last
        const float* q = qkv + static_cast<size_t>(i) * C3 + static_cast<size_t>(h) * hs;
        const float* K = k_cache + static_cast<size_t>(h) * max_T * hs;  // (max_T, hs)
        const float* V = v_cache + static_cast<size_t>(h) * max_T * hs;
        float maxv = -INFINITY;
        for (int t = 0; t <= last; t++) {
          const float* k = K + static_cast<size_t>(t) * hs;
          float dot = 0.0f;
          for (int d = 0; d < hs; d++) dot += q[d] * k[d];
          w[t] = dot * scale;
          maxv = std::max(maxv, w[t]);
        }
        float sum = 0.0f;
        for (int t = 0; t <= last; t++) sum += w[t] = std::exp(w[t] - maxv);
        const float inv = 1.0f / sum;
        float* o = out + static_cast<size_t>(i) * C + static_cast<size_t>(h) * hs;
        std::fill(o, o + hs, 0.0f);
        for (int t = 0; t <= last; t++) {
          const float a = w[t] * inv;
          const float* v = V + static_cast<size_t>(t) * hs;
          for (int d = 0; d < hs; d++) o[d] += a * v[d];
        }
      }
    }
  }
}

namespace {
std::string block_prefix(int l) { return "blocks." + std::to_string(l) + "."; }
}  // namespace

KvDecoder::KvDecoder(Backend& backend, GPT2& model, int max_chunk) : be_(backend), model_(model) {
  const ModelShape& s = model.shape();
  L_ = s.n_layer, C_ = s.d_model, NH_ = s.n_head, hs_ = s.d_model / s.n_head;
  Vp_ = s.padded_vocab(), V_ = s.vocab_size, max_T_ = s.seq_len;
  max_chunk_ = max_chunk > 0 ? std::min(max_chunk, max_T_) : max_T_;
  const int64_t N = max_chunk_, C = C_;
  x_ = acts_.add("x", {N, C});  // the residual stream
  ln_ = acts_.add("ln", {N, C});
  mean_ = acts_.add("ln_mean", {N});
  rstd_ = acts_.add("ln_rstd", {N});
  qkv_ = acts_.add("qkv", {N, 3 * C});
  atty_ = acts_.add("atty", {N, C});
  tmp_ = acts_.add("branch", {N, C});  // a block's attention or FFN output before the residual add
  fch_ = acts_.add("fch", {N, 4 * C});
  fch_gelu_ = acts_.add("fch_gelu", {N, 4 * C});
  logits_ = acts_.add("logits", {N, Vp_});
  const ModelMoe& moe = model.moe();
  moe_.resize(L_);
  for (int l = 0; l < L_; l++)
    if (l < int(moe.layers.size()) && moe.layers[l])
      MoeLayer::add_acts(acts_, block_prefix(l) + "moe.", moe.options, C_, max_chunk_);
  acts_mem_ = static_cast<float*>(be_.alloc(acts_.total_elements() * sizeof(float)));
  tokens_dev_ = static_cast<int32_t*>(be_.alloc(size_t(max_chunk_) * sizeof(int32_t)));
  // Forward only: the layers never write gradients. A model built without a gradient buffer
  // gets the parameter buffer in its place (bind() only forms pointers into it).
  float* grads = model.grad_buffer() ? model.grad_buffer() : model.param_buffer();
  for (int l = 0; l < L_; l++) {
    if (!(l < int(moe.layers.size()) && moe.layers[l])) continue;
    moe_[l] = std::make_unique<MoeLayer>(be_, moe.options, C_, max_chunk_);
    moe_[l]->bind(model.params(), model.param_buffer(), grads, acts_, acts_mem_, block_prefix(l) + "moe.");
  }
  const size_t cache = size_t(NH_) * max_T_ * hs_;
  k_cache_.assign(L_, std::vector<float>(cache, 0.0f));
  v_cache_.assign(L_, std::vector<float>(cache, 0.0f));
  qkv_host_.resize(size_t(max_chunk_) * 3 * C_);
  atty_host_.resize(size_t(max_chunk_) * C_);
}

KvDecoder::~KvDecoder() {
  be_.dealloc(acts_mem_);
  be_.dealloc(tokens_dev_);
}

const std::vector<float>& KvDecoder::append(const int32_t* tokens, int n, bool all_logits) {
  if (n < 1) fail("KvDecoder::append: no tokens");
  if (length_ + n > max_T_)
    fail("KvDecoder: {} cached + {} new positions exceed the model's context window (model.seq_len = {})",
         length_, n, max_T_);
  for (int i = 0; i < n; i++)
    if (tokens[i] < 0 || tokens[i] >= V_)
      fail("token id {} at position {} is outside the vocabulary [0, {})", tokens[i], length_ + i, V_);
  std::vector<float> all;
  if (all_logits) all.reserve(size_t(n) * Vp_);
  for (int done = 0; done < n;) {
    const int m = std::min(max_chunk_, n - done);
    forward_chunk(tokens + done, m, all_logits);
    if (all_logits) all.insert(all.end(), logits_host_.begin(), logits_host_.end());
    done += m;
  }
  if (all_logits) logits_host_ = std::move(all);
  return logits_host_;
}

void KvDecoder::forward_chunk(const int32_t* tokens, int n, bool all_logits) {
  const int C = C_, pos0 = length_;
  auto act = [&](size_t h) { return acts_mem_ + acts_[h].offset; };
  auto w = [&](const std::string& name) { return model_.param(name); };
  float* x = act(x_);
  be_.upload(tokens_dev_, tokens, size_t(n) * sizeof(int32_t));
  // Positions pos0.. : the encoder adds wpe rows 0.., so hand it wpe from row pos0 on.
  be_.encoder_forward(x, tokens_dev_, w("wte"), w("wpe") + size_t(pos0) * C, 1, n, C);  // (n, C)
  // Each block's closing residual add is fused into the layernorm that reads x next (the next
  // block's ln1, or lnf), as in GPT2::forward.
  if (L_ > 0) be_.layernorm_forward(act(ln_), act(mean_), act(rstd_), x, w(block_prefix(0) + "ln1.weight"),
                                    w(block_prefix(0) + "ln1.bias"), n, C);
  for (int l = 0; l < L_; l++) {
    const std::string p = block_prefix(l);
    // x += attn(ln1(x)), attending over the cache (ln_ holds ln1(x))
    be_.matmul_forward(act(qkv_), act(ln_), w(p + "attn.qkv.weight"), w(p + "attn.qkv.bias"), n, C, 3 * C);  // (n, 3C)
    be_.download(qkv_host_.data(), act(qkv_), size_t(n) * 3 * C * sizeof(float));
    float* kc = k_cache_[l].data();
    float* vc = v_cache_[l].data();
    for (int i = 0; i < n; i++)
      for (int h = 0; h < NH_; h++) {
        const float* row = qkv_host_.data() + size_t(i) * 3 * C + size_t(h) * hs_;
        const size_t at = (size_t(h) * max_T_ + pos0 + i) * hs_;
        std::copy(row + C, row + C + hs_, kc + at);          // k
        std::copy(row + 2 * C, row + 2 * C + hs_, vc + at);  // v
      }
    cached_attention(atty_host_.data(), qkv_host_.data(), kc, vc, pos0, n, max_T_, NH_, hs_);  // (n, C)
    be_.upload(act(atty_), atty_host_.data(), size_t(n) * C * sizeof(float));
    be_.matmul_forward(act(tmp_), act(atty_), w(p + "attn.proj.weight"), w(p + "attn.proj.bias"), n, C, C);
    // x += proj, then ln2(x)
    be_.residual_layernorm_forward(x, act(tmp_), act(ln_), act(mean_), act(rstd_), w(p + "ln2.weight"),
                                   w(p + "ln2.bias"), n, C);
    // x += ffn(ln2(x))
    if (MoeLayer* moe = moe_[l].get()) {
      moe->forward(act(tmp_), act(ln_), 1, n, /*compete=*/false, nullptr);  // (n, C)
    } else {
      be_.matmul_gelu_forward(act(fch_), act(fch_gelu_), act(ln_), w(p + "mlp.fc.weight"), w(p + "mlp.fc.bias"), n,
                              C, 4 * C);  // (n, 4C) both
      be_.matmul_forward(act(tmp_), act(fch_gelu_), w(p + "mlp.proj.weight"), w(p + "mlp.proj.bias"), n, 4 * C, C);
    }
    // x += ffn, then the next block's ln1(x) or lnf(x)
    const std::string next = l + 1 < L_ ? block_prefix(l + 1) + "ln1." : std::string("lnf.");
    be_.residual_layernorm_forward(x, act(tmp_), act(ln_), act(mean_), act(rstd_), w(next + "weight"),
                                   w(next + "bias"), n, C);
  }
  if (L_ == 0) be_.layernorm_forward(act(ln_), act(mean_), act(rstd_), x, w("lnf.weight"), w("lnf.bias"), n, C);
  // LM head (tied to wte): every row, or only the last one when that is all the caller needs.
  const int rows = all_logits ? n : 1;
  const float* head_in = act(ln_) + size_t(n - rows) * C;
  be_.matmul_forward(act(logits_), head_in, w("wte"), nullptr, rows, C, Vp_);  // (rows, Vp)
  logits_host_.resize(size_t(rows) * Vp_);
  be_.download(logits_host_.data(), act(logits_), logits_host_.size() * sizeof(float));
  length_ += n;
}

}  // namespace competelm
