// The competition schedule (spec §5): determinism, warm-up, the per-step cap, the realised
// rate, and the versioned text form.
#include <catch2/catch.hpp>

#include <cmath>
#include <string>

#include "core/error.hpp"
#include "moe/competition_schedule.hpp"
#include "moe/schedule_draws.hpp"

using namespace competelm;

namespace {

ScheduleOptions options(int steps, int layers, float rate, float warmup, int cap, uint64_t seed) {
  ScheduleOptions o;
  o.total_steps = steps;
  o.n_moe_layers = layers;
  o.rate = rate;
  o.warmup = warmup;
  o.max_layers_per_step = cap;
  o.seed = seed;
  return o;
}

std::string parse_error(const std::string& text) {
  try {
    CompetitionSchedule::parse(text, "sched.txt");
  } catch (const Error& e) {
    return e.what();
  }
  FAIL("expected a competelm::Error for:\n" << text);
  return "";
}

int max_layers_in_a_step(const CompetitionSchedule& s) {
  int most = 0;
  for (int t = 0; t < s.total_steps(); ++t) most = std::max(most, s.layers_at(t));
  return most;
}

}  // namespace

TEST_CASE("schedule: the same seed draws the same table, another seed another", "[schedule]") {
  const auto a = CompetitionSchedule::build(options(500, 4, 0.1f, 0.05f, 2, 1337));
  const auto b = CompetitionSchedule::build(options(500, 4, 0.1f, 0.05f, 2, 1337));
  const auto c = CompetitionSchedule::build(options(500, 4, 0.1f, 0.05f, 2, 1338));
  CHECK(a == b);
  CHECK(a.serialize() == b.serialize());
  CHECK_FALSE(a == c);
  CHECK(a.total() > 100);  // 475 × 4 × 0.1 = 190 expected
  CHECK(a.total_steps() == 500);
  CHECK(a.n_layers() == 4);
}

TEST_CASE("schedule: no competition before the warm-up ends, and some right after",
          "[schedule]") {
  const auto s = CompetitionSchedule::build(options(1000, 3, 0.5f, 0.25f, 3, 7));
  for (int t = 0; t < 250; ++t) CHECK(s.layers_at(t) == 0);
  int after = 0;
  for (int t = 250; t < 260; ++t) after += s.layers_at(t);
  CHECK(after > 0);
  // Warm-up end = floor(warmup × steps), with the warmup taken as the decimal written:
  // 0.7f is 0.699999988 as a float, and 0.7 × 10 steps must still be 7.
  CHECK(competition_warmup_end(0.7f, 10) == 7);
  CHECK(competition_warmup_end(0.35f, 20) == 7);
  CHECK(competition_warmup_end(0.05f, 20) == 1);
  CHECK(competition_warmup_end(0.05f, 19) == 0);
  CHECK(competition_warmup_end(0.1f, 20) == 2);
  CHECK(competition_warmup_end(0.0f, 20) == 0);
  CHECK(competition_warmup_end(1.0f, 20) == 20);
  CHECK(competition_warmup_end(0.05f, 19073) == 953);
  // warmup 1: never competes; rate 1 with a cap fills every step after warm-up to the cap.
  CHECK(CompetitionSchedule::build(options(50, 2, 1.0f, 1.0f, 2, 3)).total() == 0);
  const auto full = CompetitionSchedule::build(options(10, 4, 1.0f, 0.7f, 2, 3));
  for (int t = 0; t < 10; ++t) CHECK(full.layers_at(t) == (t < 7 ? 0 : 2));
}

TEST_CASE("schedule: the per-step cap holds and the realised rate matches", "[schedule]") {
  // 20000 steps × 6 layers at rate 0.07, cap 2, warm-up 5%: 19000 × 6 = 114000 draws,
  // expected 7980 hits, binomial sd ≈ 86; a step draws ≥ 3 hits with p ≈ 0.0055, so about
  // 110 hits overflow and move.
  const ScheduleOptions o = options(20000, 6, 0.07f, 0.05f, 2, 1337);
  const auto s = CompetitionSchedule::build(o);
  const ScheduleDrawStats st = competition_schedule_draw_stats(o);
  CHECK(st.warmup_end == 1000);
  CHECK(max_layers_in_a_step(s) <= 2);
  for (int t = 0; t < 1000; ++t) REQUIRE(s.layers_at(t) == 0);
  const double pairs = 19000.0 * 6;
  const double realised = static_cast<double>(s.total()) / pairs;
  INFO("realised rate " << realised << ", hits " << st.hits << ", moved earlier "
                        << st.moved_earlier << ", later " << st.moved_later << ", dropped "
                        << st.dropped);
  CHECK(std::abs(realised - 0.07) < 0.003);  // ±3.5 sd
  // Every hit is accounted for, and the table holds exactly the placed ones.
  CHECK(st.placed + st.moved_earlier + st.moved_later + st.dropped == st.hits);
  CHECK(st.placed + st.moved_earlier + st.moved_later == s.total());
  CHECK(st.dropped == 0);
  CHECK(st.moved_earlier + st.moved_later > 0);
  CHECK(st.moved_earlier + st.moved_later < st.hits / 25);  // under 4 % (≈ 1.4 % expected)
}

TEST_CASE("schedule: cap 1 with a high rate still honours the cap", "[schedule]") {
  // rate 0.6 over 4 layers: 2.4 hits per step for 1 slot: every step after warm-up fills,
  // then the rest has nowhere to go and is dropped.
  const ScheduleOptions o = options(400, 4, 0.6f, 0.1f, 1, 99);
  const auto s = CompetitionSchedule::build(o);
  const ScheduleDrawStats st = competition_schedule_draw_stats(o);
  CHECK(max_layers_in_a_step(s) == 1);
  for (int t = 0; t < 40; ++t) CHECK(s.layers_at(t) == 0);
  for (int t = 40; t < 400; ++t) CHECK(s.layers_at(t) == 1);
  CHECK(s.total() == 360);
  CHECK(st.dropped > 0);
  CHECK(st.placed + st.moved_earlier + st.moved_later == 360);
  CHECK(st.placed + st.moved_earlier + st.moved_later + st.dropped == st.hits);

  // A cap of 1 with a moderate rate: overflow fills earlier holes first.
  const ScheduleOptions m = options(2000, 3, 0.2f, 0.0f, 1, 5);
  const auto sm = CompetitionSchedule::build(m);
  const ScheduleDrawStats sst = competition_schedule_draw_stats(m);
  CHECK(max_layers_in_a_step(sm) == 1);
  CHECK(sst.moved_earlier > 0);
  CHECK(sst.moved_earlier > sst.moved_later);
  CHECK(sm.total() == sst.hits - sst.dropped);
}

TEST_CASE("schedule: a moved hit never lands on a pair that already competes", "[schedule]") {
  // One layer, cap 1: a second hit can never share a step; with rate 1 and a long warm-up
  // every step after it competes once and nothing is double-counted.
  const ScheduleOptions o = options(30, 1, 1.0f, 0.5f, 1, 11);
  const auto s = CompetitionSchedule::build(o);
  CHECK(s.total() == 15);
  CHECK(competition_schedule_draw_stats(o).dropped == 0);
  // Cap above the layer count: a layer cannot compete twice in one step, so a step holds at
  // most n_layers however many hits move (cap 5 over 2 layers at rate 1: exactly 2 each).
  const ScheduleOptions wide = options(40, 2, 1.0f, 0.0f, 5, 11);
  const auto w = CompetitionSchedule::build(wide);
  CHECK(max_layers_in_a_step(w) == 2);
  CHECK(w.total() == 80);
  CHECK(competition_schedule_draw_stats(wide).hits == 80);
}

TEST_CASE("schedule: zero MoE layers or rate 0 give an empty table", "[schedule]") {
  const auto none = CompetitionSchedule::build(options(100, 0, 0.5f, 0.0f, 2, 1));
  CHECK(none.total() == 0);
  CHECK(none.n_layers() == 0);
  CHECK(none.total_steps() == 100);
  CHECK_FALSE(none.competes(50, 0));
  CHECK(none.layers_at(50) == 0);
  CHECK(CompetitionSchedule::parse(none.serialize(), "x") == none);
  CHECK(CompetitionSchedule::build(options(100, 3, 0.0f, 0.0f, 2, 1)).total() == 0);
  // Out of the table: never competes.
  const auto s = CompetitionSchedule::build(options(10, 2, 1.0f, 0.0f, 2, 1));
  CHECK(s.competes(9, 1));
  CHECK_FALSE(s.competes(10, 0));
  CHECK_FALSE(s.competes(-1, 0));
  CHECK_FALSE(s.competes(0, 2));
  // Invalid options are refused.
  CHECK_THROWS_AS(CompetitionSchedule::build(options(10, 2, 1.5f, 0.0f, 2, 1)), Error);
  CHECK_THROWS_AS(CompetitionSchedule::build(options(10, 2, 0.5f, 0.0f, 0, 1)), Error);
  CHECK_THROWS_AS(CompetitionSchedule::build(options(10, -1, 0.5f, 0.0f, 1, 1)), Error);
}

TEST_CASE("schedule: serialize and parse round trip in the documented form", "[schedule]") {
  const auto s = CompetitionSchedule::build(options(3000, 5, 0.07f, 0.05f, 2, 42));
  const std::string text = s.serialize();
  CHECK_THAT(text, Catch::StartsWith(fmt::format(
                       "competelm-competition-schedule v1 steps=3000 layers=5 pairs={}\n",
                       s.total())));
  const auto back = CompetitionSchedule::parse(text, "run/schedule.txt");
  CHECK(back == s);
  CHECK(back.serialize() == text);

  const std::string hand =
      "competelm-competition-schedule v1 steps=10 layers=3 pairs=3\n"
      "2: 0 2\n"
      "7: 1\n";
  const auto h = CompetitionSchedule::parse(hand, "hand.txt");
  CHECK(h.competes(2, 0));
  CHECK_FALSE(h.competes(2, 1));
  CHECK(h.competes(2, 2));
  CHECK(h.competes(7, 1));
  CHECK(h.layers_at(2) == 2);
  CHECK(h.total() == 3);
  CHECK(h.serialize() == hand);
  // No final newline is accepted too.
  CHECK(CompetitionSchedule::parse(hand.substr(0, hand.size() - 1), "h") == h);
}

TEST_CASE("schedule: corrupted text is refused naming the source and line", "[schedule]") {
  const std::string head = "competelm-competition-schedule v1 steps=10 layers=3 pairs=3\n";
  CHECK_THAT(parse_error(""), Catch::StartsWith("sched.txt:1: not a competition schedule"));
  CHECK_THAT(parse_error("hello\n"), Catch::StartsWith("sched.txt:1: not a competition schedule"));
  CHECK_THAT(parse_error("competelm-competition-schedule v2 steps=10 layers=3 pairs=0\n"),
             Catch::Contains("sched.txt:1: unsupported") && Catch::Contains("'v2'"));
  CHECK_THAT(parse_error("competelm-competition-schedule v1 steps=10 layers=3\n"),
             Catch::StartsWith("sched.txt:1: malformed header"));
  CHECK_THAT(parse_error("competelm-competition-schedule v1 steps=-1 layers=3 pairs=0\n"),
             Catch::Contains("sched.txt:1:") && Catch::Contains("'steps=-1'"));
  CHECK_THAT(parse_error("competelm-competition-schedule v1 steps=10 layerz=3 pairs=0\n"),
             Catch::Contains("'layerz=3'"));
  CHECK_THAT(parse_error(head + "2: 0 2\n7 1\n"),
             Catch::StartsWith("sched.txt:3: expected 'STEP: LAYER ...'"));
  CHECK_THAT(parse_error(head + "2: 0 2\nx: 1\n"), Catch::StartsWith("sched.txt:3: 'x' is not a step"));
  CHECK_THAT(parse_error(head + "2: 0 2\n10: 1\n"),
             Catch::StartsWith("sched.txt:3: step 10 is beyond the table (steps=10)"));
  CHECK_THAT(parse_error(head + "7: 1\n2: 0 2\n"),
             Catch::StartsWith("sched.txt:3: step 2 is not after"));
  CHECK_THAT(parse_error(head + "2: 0 2\n2: 1\n"), Catch::StartsWith("sched.txt:3: step 2 is not after"));
  CHECK_THAT(parse_error(head + "2: 0 3\n7: 1\n"),
             Catch::StartsWith("sched.txt:2: layer 3 is beyond the table (layers=3)"));
  CHECK_THAT(parse_error(head + "2: 0 0 2\n"), Catch::StartsWith("sched.txt:2: layer 0 is not after"));
  CHECK_THAT(parse_error(head + "2: 2 0\n7: 1\n"), Catch::StartsWith("sched.txt:2: layer 0 is not after"));
  CHECK_THAT(parse_error(head + "2: 0  2\n7: 1\n"), Catch::StartsWith("sched.txt:2: '' is not a layer"));
  CHECK_THAT(parse_error(head + "2:\n7: 1\n"), Catch::StartsWith("sched.txt:2: step 2 lists no layers"));
  CHECK_THAT(parse_error(head + "2: 0 2\n\n7: 1\n"), Catch::StartsWith("sched.txt:3: expected"));
  CHECK_THAT(parse_error(head + "2: 0 2\n"),  // a truncated file
             Catch::Contains("sched.txt:1: the header says pairs=3 but the table holds 2"));
  CHECK_THAT(parse_error(head + "2: 0 2\n7: 1\r\n"), Catch::StartsWith("sched.txt:3: '1\r'"));
  // A header that would allocate an absurd table.
  CHECK_THAT(parse_error("competelm-competition-schedule v1 steps=2000000000 layers=100 pairs=0\n"),
             Catch::Contains("too large"));
}
