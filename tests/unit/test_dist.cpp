// The single-process pieces of multi-rank training (the mpirun tests in tests/mpi/ cover the
// collectives): AdamW over ZeRO-1 shards equals AdamW over the whole buffer, the data-parallel
// shards tile the buffer, the model's canonical (checkpoint) layout round-trips, and the
// expert-parallel configuration is validated.
#include <catch2/catch.hpp>

#include <numeric>

#include "backend/backend.hpp"
#include "config/config.hpp"
#include "core/rng.hpp"
#include "dist/data_parallel.hpp"
#include "dist/dist_context.hpp"
#include "model/gpt2.hpp"
#include "train/adamw.hpp"

using namespace competelm;

namespace {
TensorTable small_table() {
  TensorTable t;
  t.add("a.weight", {7, 5}, true);
  t.add("a.bias", {5});
  t.add("b.weight", {3, 11}, true);
  return t;
}
std::vector<float> random_vec(size_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (float& x : v) x = rng.normal();
  return v;
}
}  // namespace

TEST_CASE("AdamW over sharded ranges equals AdamW over the whole buffer", "[dist]") {
  auto be = make_backend("cpu", 1);
  const TensorTable table = small_table();
  const size_t n = table.total_elements();
  std::vector<float> p_full = random_vec(n, 1), p_shard = p_full;
  const AdamWOptions o{0.9f, 0.95f, 1e-8f, 0.1f};
  AdamW full(*be, table, o);
  // Two "ranks'" shards, cut inside tensors (a.weight at 0, b.weight at 128), one of them
  // holding two ranges (as a rank owning a replicated and an expert shard does).
  AdamW lo(*be, table, o, {{0, 20}, {140, n}}), hi(*be, table, o, {{20, 140}});
  auto in_lo = [](size_t i) { return i < 20 || i >= 140; };
  for (int step = 0; step < 3; ++step) {
    const std::vector<float> g = random_vec(n, 100 + step);
    full.step(p_full.data(), g.data(), 1e-2f, 0.5f);
    lo.step(p_shard.data(), g.data(), 1e-2f, 0.5f);
    hi.step(p_shard.data(), g.data(), 1e-2f, 0.5f);
    CHECK(lo.owned_sum_squares(g.data()) + hi.owned_sum_squares(g.data()) ==
          Approx(std::pow(global_grad_norm(*be, table, g.data()), 2)).epsilon(1e-12));
  }
  for (const TensorSpec& s : table.specs())
    for (size_t i = s.offset; i < s.offset + s.numel; ++i) REQUIRE(p_shard[i] == p_full[i]);
  // The moments round-trip through the whole-buffer layout used by checkpoints.
  std::vector<float> m_full, v_full, m_lo, v_lo, m_hi, v_hi;
  full.export_moments(m_full, v_full);
  lo.export_moments(m_lo, v_lo);
  hi.export_moments(m_hi, v_hi);
  for (size_t i = 0; i < n; ++i) {
    REQUIRE(m_full[i] == (in_lo(i) ? m_lo[i] : m_hi[i]));
    REQUIRE(v_full[i] == (in_lo(i) ? v_lo[i] : v_hi[i]));
  }
  AdamW again(*be, table, o, {{20, 140}});
  again.import_moments(m_full, v_full);
  std::vector<float> m2, v2;
  again.export_moments(m2, v2);
  for (size_t i = 0; i < n; ++i) REQUIRE(m2[i] == (in_lo(i) ? 0.0f : m_full[i]));
}

TEST_CASE("one process: data parallel owns the whole buffer and its calls change nothing", "[dist]") {
  const DistContext ctx = single_process_context();
  CHECK(ctx.info.world == 1);
  CHECK(ctx.ep_size == 1);
  DataParallel dp(ctx, 100, 164);
  REQUIRE(dp.owned().size() == 2);
  CHECK(dp.owned()[0].begin == 0);
  CHECK(dp.owned()[0].end == 100);
  CHECK(dp.owned()[1].begin == 100);
  CHECK(dp.owned()[1].end == 164);
  std::vector<float> g = random_vec(164, 3), before = g;
  dp.reduce_gradients(g.data());
  dp.gather(g.data());
  CHECK(g == before);
  CHECK(dp.sum_over_ranks(2.5) == 2.5);
}

TEST_CASE("expert parallel size must divide the ranks and the experts", "[dist][config]") {
  REQUIRE_THROWS_WITH(make_dist_context(make_self_comm(), 0, 2), Catch::Contains("dist.expert_parallel = 2") &&
                                                                      Catch::Contains("world size 1"));
  REQUIRE_THROWS_WITH(parse_config("moe:\n  n_experts: 6\ndist:\n  expert_parallel: 4\n", "x.yaml"),
                      Catch::Contains("dist.expert_parallel") && Catch::Contains("moe.n_experts"));
  REQUIRE_THROWS_WITH(parse_config("dist:\n  expert_parallel: 2\n", "x.yaml"),
                      Catch::Contains("dist.expert_parallel"));  // a dense model has no experts to split
  CHECK_NOTHROW(parse_config("moe:\n  n_experts: 8\ndist:\n  expert_parallel: 4\n", "x.yaml"));
}

TEST_CASE("MoE model: experts sit in one region after the replicated tensors; canonical layout round-trips",
          "[dist][moe]") {
  auto be = make_backend("cpu", 1);
  ModelShape shape;
  shape.n_layer = 2, shape.d_model = 16, shape.n_head = 2, shape.seq_len = 8, shape.vocab_size = 100;
  ModelMoe moe;
  moe.layers = {true, false};
  moe.options.n_experts = 4, moe.options.top_k = 2, moe.options.expert_hidden = 8;
  GPT2 model(*be, shape, ModelInit{}, 2, 8, moe);
  const TensorTable& p = model.params();
  const TensorTable& c = model.canonical_params();
  CHECK(p.count_elements() == c.count_elements());
  for (const TensorSpec& s : p.specs())
    CHECK((s.name.find(".moe.experts.") != std::string::npos) == (s.offset >= model.expert_region_begin()));
  CHECK(model.expert_region_begin() < p.total_elements());
  const std::vector<float> canon = random_vec(c.total_elements(), 9);
  const std::vector<float> local = model.from_canonical(canon);
  const std::vector<float> back = model.to_canonical(local);
  for (const TensorSpec& s : c.specs())
    for (size_t i = s.offset; i < s.offset + s.numel; ++i) REQUIRE(back[i] == canon[i]);
  // The same seed gives the same weights by name as a model built in canonical order would.
  model.init_weights(42);
  std::vector<float> w(p.total_elements());
  be->download(w.data(), model.param_buffer(), w.size() * sizeof(float));
  const std::vector<float> wc = model.to_canonical(w);
  CHECK(wc[c.at("blocks.0.moe.experts.fc.weight").offset] == w[p.at("blocks.0.moe.experts.fc.weight").offset]);
}
