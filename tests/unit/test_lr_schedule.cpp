// Learning-rate schedules: warm-up, then cosine / linear / constant / WSD to the floor.
#include <catch2/catch.hpp>

#include "core/error.hpp"
#include "train/lr_schedule.hpp"

using competelm::LrSchedule;

namespace {
LrSchedule make(const char* kind) {
  LrSchedule s;
  s.kind = kind;
  s.peak = 1.0f;
  s.min_frac = 0.1f;
  s.warmup_steps = 10;
  s.total_steps = 110;
  s.wsd_decay_frac = 0.2f;
  return s;
}
}  // namespace

TEST_CASE("warm-up rises linearly to the peak", "[lr]") {
  for (const char* kind : {"cosine", "linear", "constant", "wsd"}) {
    const LrSchedule s = make(kind);
    INFO(kind);
    CHECK(s.at(0) == Approx(0.1f));
    CHECK(s.at(4) == Approx(0.5f));
    CHECK(s.at(9) == Approx(1.0f));
    CHECK(s.at(10) == Approx(1.0f));  // first step after warm-up: the peak
  }
}

TEST_CASE("cosine, linear and wsd decay to the floor; constant stays", "[lr]") {
  const LrSchedule cos = make("cosine"), lin = make("linear"), con = make("constant"), wsd = make("wsd");
  CHECK(cos.at(60) == Approx(0.55f));  // half-way: (peak + floor) / 2
  CHECK(cos.at(110) == Approx(0.1f));
  CHECK(lin.at(60) == Approx(0.55f));
  CHECK(lin.at(35) == Approx(1.0f - 0.9f * 0.25f));
  CHECK(lin.at(110) == Approx(0.1f));
  CHECK(con.at(100) == Approx(1.0f));
  // WSD: stable until the last 20% of the post-warm-up steps, then linear to the floor.
  CHECK(wsd.at(80) == Approx(1.0f));
  CHECK(wsd.at(90) == Approx(1.0f));
  CHECK(wsd.at(100) == Approx(0.55f));
  CHECK(wsd.at(110) == Approx(0.1f));
  for (int step = 10; step < 110; ++step) {  // monotone non-increasing after warm-up
    CHECK(cos.at(step + 1) <= cos.at(step));
    CHECK(wsd.at(step + 1) <= wsd.at(step));
  }
}

TEST_CASE("an unknown schedule is an error naming the key", "[lr]") {
  LrSchedule s = make("exponential");
  REQUIRE_THROWS_WITH(s.at(20), Catch::Contains("optim.schedule"));
}
