// Overlapping the gradient reduction with the backward: the model announces each range of
// gradients the moment its backward no longer writes them, and DataParallel cuts the buffer
// into buckets of those ranges (the multi-rank reductions themselves run under mpirun:
// tests/mpi/equivalence.sh with small dist.bucket_mb).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>

#include "backend/backend.hpp"
#include "core/rng.hpp"
#include "dist/data_parallel.hpp"
#include "model/gpt2.hpp"

using namespace competelm;

namespace {

// Buckets tile each region in memory order, and every boundary inside a region sits a
// multiple of its rank count from the region's start.
void require_tiling(const std::vector<GradBucket>& buckets, const std::vector<GradRegion>& regions) {
  size_t i = 0;
  for (size_t r = 0; r < regions.size(); ++r) {
    if (regions[r].end <= regions[r].begin) continue;
    size_t at = regions[r].begin;
    while (i < buckets.size() && buckets[i].region == int(r)) {
      REQUIRE(buckets[i].begin == at);
      REQUIRE(buckets[i].end > buckets[i].begin);
      if (buckets[i].end != regions[r].end) REQUIRE((buckets[i].end - regions[r].begin) % size_t(regions[r].ranks) == 0);
      at = buckets[i].end;
      ++i;
    }
    REQUIRE(at == regions[r].end);
  }
  REQUIRE(i == buckets.size());
}

// Records each announced range's gradients at the moment of the announcement.
struct Snapshots final : GradReadyListener {
  Backend* be = nullptr;
  const float* grads = nullptr;
  std::vector<ParamRange> ranges;
  std::vector<std::vector<float>> values;
  void grads_ready(ParamRange r) override {
    ranges.push_back(r);
    values.emplace_back(r.size());
    be->download(values.back().data(), grads + r.begin, r.size() * sizeof(float));
  }
};

}  // namespace

TEST_CASE("gradient buckets: whole ready ranges in the backward's order, boundaries rounded to the ranks",
          "[dist][buckets]") {
  // Ranges finished in reverse memory order, like the backward: [60,100) first, [0,10) last.
  const std::vector<ParamRange> order{{60, 100}, {45, 60}, {30, 45}, {10, 30}, {0, 10}, {100, 164}};
  const std::vector<GradRegion> regions{{0, 100, 4}, {100, 164, 2}};

  SECTION("no bucket size: one bucket per region") {
    const auto b = plan_grad_buckets(regions, order, 0);
    require_tiling(b, regions);
    REQUIRE(b.size() == 2);
  }
  SECTION("a bucket closes once it holds bucket_elements; boundaries round up to multiples of 4") {
    const auto b = plan_grad_buckets(regions, order, 25);
    require_tiling(b, regions);
    // Raw buckets {60,100} {30,60} {0,30}; 30 rounds up to 32 (the 2 elements come from
    // [30,45), which the backward finishes before [10,30)).
    REQUIRE(b.size() == 4);
    CHECK(b[0].begin == 0);
    CHECK(b[0].end == 32);
    CHECK(b[1].end == 60);
    CHECK(b[2].end == 100);
    CHECK(b[3].region == 1);
  }
  SECTION("a tiny bucket size gives one bucket per ready range (boundaries rounded)") {
    const auto b = plan_grad_buckets(regions, order, 1);
    require_tiling(b, regions);
    REQUIRE(b.size() == 6);
    CHECK(b[1].begin == 12);  // 10 rounded up
    CHECK(b[2].begin == 32);  // 30
    CHECK(b[3].begin == 48);  // 45
    CHECK(b[4].begin == 60);
  }
  SECTION("ranges that are not adjacent never share a bucket") {
    const std::vector<ParamRange> jumpy{{0, 10}, {60, 100}, {10, 60}};
    const auto b = plan_grad_buckets({{0, 100, 1}}, jumpy, 1000);
    require_tiling(b, {{0, 100, 1}});
    REQUIRE(b.size() == 2);  // {0,10} then {10,100} (= {60,100} ∪ {10,60})
    CHECK(b[0].end == 10);
  }
  SECTION("an empty region gets no bucket; elements no range covers still belong to one") {
    const std::vector<GradRegion> one{{0, 50, 3}, {50, 50, 1}};
    const auto b = plan_grad_buckets(one, {{20, 30}}, 1);
    require_tiling(b, one);
    REQUIRE(b.size() == 3);  // [0,21) [21,30) [30,50): 20 rounds up to 21
  }
}

TEST_CASE("backward announces each gradient range once, in grad_ready_order, after its last write",
          "[dist][buckets]") {
  auto be = make_backend("cpu", 1);
  ModelShape shape;
  shape.n_layer = 3, shape.d_model = 16, shape.n_head = 2, shape.seq_len = 8, shape.vocab_size = 90;
  ModelMoe moe;
  const bool with_moe = GENERATE(false, true);
  if (with_moe) {
    moe.layers = {true, false, true};
    moe.options.n_experts = 4, moe.options.top_k = 2, moe.options.expert_hidden = 8;
  }
  const int B = 2, T = 8;
  GPT2 model(*be, shape, ModelInit{}, B, T, moe);
  model.init_weights(5);
  const std::vector<ParamRange> order = model.grad_ready_order();
  // A partition of the buffer.
  std::vector<ParamRange> sorted = order;
  std::sort(sorted.begin(), sorted.end(), [](auto& a, auto& b) { return a.begin < b.begin; });
  REQUIRE(sorted.front().begin == 0);
  for (size_t i = 1; i < sorted.size(); ++i) REQUIRE(sorted[i].begin == sorted[i - 1].end);
  REQUIRE(sorted.back().end == model.params().total_elements());
  CHECK(order.size() == size_t(2 + shape.n_layer + (with_moe ? 2 : 0)));
  CHECK(order.back().begin == 0);  // the embeddings (wte) come last

  Rng rng(11);
  std::vector<int32_t> tokens(B * T), targets(B * T);
  for (auto& t : tokens) t = int32_t(rng.next_u64() % 90);
  for (auto& t : targets) t = int32_t(rng.next_u64() % 90);
  // Two micro-steps, as gradient accumulation runs them: only the last one announces.
  Snapshots snap;
  snap.be = be.get(), snap.grads = model.grad_buffer();
  model.zero_grad();
  model.forward(tokens.data(), targets.data(), B, T);
  model.backward(0.5f);
  model.forward(targets.data(), tokens.data(), B, T);
  model.backward(0.5f, &snap);
  REQUIRE(snap.ranges.size() == order.size());
  std::vector<float> final_grads(model.params().total_elements());
  be->download(final_grads.data(), model.grad_buffer(), final_grads.size() * sizeof(float));
  for (size_t i = 0; i < order.size(); ++i) {
    REQUIRE(snap.ranges[i].begin == order[i].begin);
    REQUIRE(snap.ranges[i].end == order[i].end);
    // Nothing the backward did after the announcement changed these gradients.
    REQUIRE(std::memcmp(snap.values[i].data(), final_grads.data() + order[i].begin,
                        order[i].size() * sizeof(float)) == 0);
  }
}
