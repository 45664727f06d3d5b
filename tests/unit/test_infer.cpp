// Inference with a saved model: the KV-cache decoder against the full forward pass (dense and
// MoE), generation with and without the cache, sampling rules, UTF-8 streaming.
#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "backend/backend.hpp"
#include "core/error.hpp"
#include "core/rng.hpp"
#include "infer/generate.hpp"
#include "infer/kv_decoder.hpp"
#include "infer/sampling.hpp"
#include "infer/utf8_stream.hpp"
#include "model/gpt2.hpp"

using namespace competelm;

namespace {

// A tiny model with weights large enough (std 0.3) that attention and routing matter: the
// logits spread over several units, so a wrong cache position or a dropped prefix shows.
struct Tiny {
  std::unique_ptr<Backend> be;
  std::unique_ptr<GPT2> model;
};

// threads = 1 where a test makes many tiny sequential passes: on a loaded machine an OpenMP
// team's barriers cost more than the work.
Tiny make_tiny(const std::vector<bool>& moe_layers, int W = 24, MoeRouter router = MoeRouter::CompeteSMoE,
               int threads = 2) {
  Tiny t;
  t.be = make_backend("cpu", threads);
  ModelShape s;
  s.n_layer = int(moe_layers.size());
  s.d_model = 32;
  s.n_head = 4;
  s.seq_len = W;
  s.vocab_size = 100;
  ModelInit init;
  init.std = 0.3f;
  ModelMoe moe;
  if (std::count(moe_layers.begin(), moe_layers.end(), true) > 0) {
    moe.layers = moe_layers;
    moe.options.n_experts = 4;
    moe.options.top_k = 2;
    moe.options.expert_hidden = 48;
    moe.options.shared_experts = 1;
    moe.options.router = router;
  }
  t.model = std::make_unique<GPT2>(*t.be, s, init, 1, W, moe);
  t.model->init_weights(11);
  return t;
}

std::vector<int32_t> random_tokens(int n, int V, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = int32_t(rng.below(uint64_t(V)));
  return t;
}

// KV decoding in a prefill chunk, a chunk longer than max_chunk, then token by token; every
// position's logits against GPT2::forward on the whole sequence.
void check_kv_matches_forward(Tiny& t) {
  GPT2& model = *t.model;
  const int W = model.shape().seq_len, Vp = model.shape().padded_vocab();
  const std::vector<int32_t> tokens = random_tokens(W, model.shape().vocab_size, 5);
  model.forward(tokens.data(), nullptr, 1, W);
  const std::vector<float> ref = model.logits_host();  // (W, Vp)
  float ref_max = 0.0f;
  for (float x : ref) ref_max = std::max(ref_max, std::fabs(x));
  REQUIRE(ref_max > 1.0f);  // the comparison below is not trivially small

  KvDecoder kv(*t.be, model, /*max_chunk=*/8);
  std::vector<float> got;
  auto take = [&](const std::vector<float>& lg) { got.insert(got.end(), lg.begin(), lg.end()); };
  take(kv.append(tokens.data(), 5, true));       // prefill
  take(kv.append(tokens.data() + 5, 11, true));  // 8 + 3 internally
  for (int p = 16; p < W; p++) take(kv.append(tokens.data() + p, 1));  // last-row logits
  REQUIRE(kv.length() == W);
  REQUIRE(got.size() == ref.size());
  for (int p = 0; p < W; p++) {
    double worst = 0.0;
    for (int v = 0; v < Vp; v++) worst = std::max(worst, double(std::fabs(got[size_t(p) * Vp + v] - ref[size_t(p) * Vp + v])));
    INFO("position " << p);
    CHECK(worst <= 1e-4);
  }
  // The cache is full: one more position is refused rather than silently wrong.
  CHECK_THROWS_AS(kv.append(tokens.data(), 1), Error);
  // After reset the same sequence gives the same logits again.
  kv.reset();
  const std::vector<float> again = kv.append(tokens.data(), W, true);
  CHECK(std::equal(again.begin(), again.end(), got.begin(), [](float a, float b) { return std::fabs(a - b) <= 1e-5f; }));
}

}  // namespace

TEST_CASE("KV-cache decoding gives the full forward's logits at every position (dense)", "[infer]") {
  Tiny t = make_tiny({false, false});
  check_kv_matches_forward(t);
}

TEST_CASE("KV-cache decoding gives the full forward's logits at every position (MoE)", "[infer]") {
  SECTION("a dense block and a CompeteSMoE block with a shared expert") {
    Tiny t = make_tiny({false, true});
    check_kv_matches_forward(t);
  }
  SECTION("every block MoE, normalised sigmoid router") {
    Tiny t = make_tiny({true, true}, 24, MoeRouter::SigmoidTopK);
    check_kv_matches_forward(t);
  }
}

TEST_CASE("cached_attention equals the softmax-weighted sum written out", "[infer]") {
  // (n queries from position pos0, NH heads of size hs): one query (serial path) and a chunk
  // large enough for the threaded path.
  for (auto [n, pos0, NH, hs] : {std::array<int, 4>{1, 2, 2, 3}, std::array<int, 4>{8, 100, 4, 32}}) {
    const int C = NH * hs, maxT = pos0 + n + 3;
    Rng rng(3);
    std::vector<float> qkv(size_t(n) * 3 * C), kc(size_t(NH) * maxT * hs), vc(kc.size()), out(size_t(n) * C);
    for (auto& x : qkv) x = rng.normal();
    for (auto& x : kc) x = rng.normal();
    for (auto& x : vc) x = rng.normal();
    cached_attention(out.data(), qkv.data(), kc.data(), vc.data(), pos0, n, maxT, NH, hs);
    double worst = 0;
    for (int i = 0; i < n; i++)
      for (int h = 0; h < NH; h++) {
        const int last = pos0 + i;
        std::vector<double> s(size_t(last) + 1);
        double z = 0, mx = -1e300;
        for (int t = 0; t <= last; t++) {
          double dot = 0;
          for (int d = 0; d < hs; d++) dot += double(qkv[size_t(i) * 3 * C + h * hs + d]) * kc[(size_t(h) * maxT + t) * hs + d];
          s[t] = dot / std::sqrt(double(hs));
          mx = std::max(mx, s[t]);
        }
        for (auto& x : s) z += x = std::exp(x - mx);
        for (int d = 0; d < hs; d++) {
          double o = 0;
          for (int t = 0; t <= last; t++) o += s[t] / z * vc[(size_t(h) * maxT + t) * hs + d];
          worst = std::max(worst, std::fabs(o - out[size_t(i) * C + h * hs + d]));
        }
      }
    INFO("n " << n << " pos0 " << pos0);
    CHECK(worst < 1e-5);
  }
}

TEST_CASE("generation: KV cache and recomputation give the same tokens and a seed reproduces them", "[infer]") {
  Tiny t = make_tiny({false, true}, 16, MoeRouter::CompeteSMoE, 1);
  const std::vector<uint32_t> prompt = {3, 14, 15, 92, 65};
  GenerateOptions o;
  o.max_new_tokens = 40;  // past the 16-token window: the context slides
  o.stop_token = -1;
  auto run = [&](bool kv, float temperature, uint64_t seed) {
    GenerateOptions g = o;
    g.kv_cache = kv;
    g.sampling.temperature = temperature;
    g.sampling.top_k = 40;
    g.sampling.top_p = 0.95f;
    g.seed = seed;
    return generate(*t.be, *t.model, prompt, g);
  };
  SECTION("greedy") {
    const GenerateResult a = run(true, 0.0f, 0), b = run(false, 0.0f, 0);
    REQUIRE(a.tokens.size() == 40);
    CHECK(a.slides > 0);
    CHECK(a.slides == b.slides);
    CHECK(a.tokens == b.tokens);
  }
  SECTION("sampled at temperature 1 with top-k and top-p") {
    const GenerateResult a = run(true, 1.0f, 7), b = run(false, 1.0f, 7), c = run(true, 1.0f, 7), d = run(true, 1.0f, 8);
    REQUIRE(a.tokens.size() == 40);
    CHECK(a.tokens == b.tokens);  // with and without the cache
    CHECK(a.tokens == c.tokens);  // same seed, same text
    CHECK(a.tokens != d.tokens);  // another seed, another text
    CHECK(std::set<uint32_t>(a.tokens.begin(), a.tokens.end()).size() > 5);  // really sampled
  }
  SECTION("the stop token ends generation and is not returned") {
    const GenerateResult a = run(true, 0.0f, 0);
    GenerateOptions g = o;
    g.sampling.temperature = 0.0f;
    g.stop_token = int(a.tokens[3]);
    const GenerateResult s = generate(*t.be, *t.model, prompt, g);
    CHECK(s.stopped_at_stop_token);
    const auto first = std::find(a.tokens.begin(), a.tokens.end(), a.tokens[3]) - a.tokens.begin();
    CHECK(s.tokens == std::vector<uint32_t>(a.tokens.begin(), a.tokens.begin() + first));
  }
}

TEST_CASE("context window slides by half a window", "[infer]") {
  CHECK(context_start(16, 16, 0) == 0);
  CHECK(context_start(17, 16, 0) == 9);  // the newest 8 remain
  CHECK(context_start(20, 16, 9) == 9);
  CHECK(context_start(6, 5, 0) == 3);    // odd window: the newest 3 remain
}

TEST_CASE("sample_next: greedy and top-k and top-p restrict the choice", "[infer]") {
  const float logits[5] = {0.0f, 5.0f, 3.0f, 4.9f, -1.0f};  // p ≈ .003 .488 .066 .442 .001
  Rng rng(1);
  SamplingParams greedy;
  greedy.temperature = 0.0f;
  CHECK(sample_next(logits, 5, greedy, rng) == 1);
  const float tie[3] = {2.0f, 2.0f, 1.0f};
  CHECK(sample_next(tie, 3, greedy, rng) == 0);  // lowest id on ties
  CHECK(sample_next(logits, 1, greedy, rng) == 0);  // only the first V columns count

  auto draws = [&](SamplingParams p) {
    std::multiset<uint32_t> seen;
    Rng r(42);
    for (int i = 0; i < 400; i++) seen.insert(sample_next(logits, 5, p, r));
    return seen;
  };
  SamplingParams p;
  p.top_k = 2;
  auto s = draws(p);
  CHECK(s.count(1) + s.count(3) == 400);
  CHECK(s.count(1) > 100);
  CHECK(s.count(3) > 100);
  p = SamplingParams{};
  p.top_p = 0.4f;  // token 1 alone holds 0.488
  s = draws(p);
  CHECK(s.count(1) == 400);
  p.top_p = 0.9f;  // 1 and 3 together hold 0.93
  s = draws(p);
  CHECK(s.count(1) + s.count(3) == 400);
  p = SamplingParams{};  // everything possible at temperature 1 ...
  s = draws(p);
  CHECK(s.count(2) > 5);
  p.temperature = 0.01f;  // ... and nearly greedy when cold (5 vs 4.9 → e^10)
  s = draws(p);
  CHECK(s.count(1) > 390);
  p = SamplingParams{};
  p.top_p = 0.0f;
  CHECK_THROWS_AS(check_sampling_params(p), Error);
}

TEST_CASE("Utf8Stream never splits a multi-byte character and passes bytes through", "[infer]") {
  Utf8Stream s;
  std::string out;
  CHECK(s.push("a\xC3") == "a");
  CHECK(s.push("\xA9\xE2\x82") == "\xC3\xA9");            // é complete, € not yet
  CHECK(s.push("\xAC") == "\xE2\x82\xAC");                // €
  CHECK(s.push("\xF0\x9F") == "");
  CHECK(s.push("\x98\x80!") == "\xF0\x9F\x98\x80!");      // 😀!
  CHECK(s.push("\xFF") == "\xFF");                        // invalid bytes are not held
  CHECK(s.push("x\xE2") == "x");
  CHECK(s.finish() == "\xE2");                            // the incomplete tail at the end
  CHECK(s.finish().empty());
}
