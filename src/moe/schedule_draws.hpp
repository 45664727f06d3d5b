#pragma once
// What happened while drawing a competition schedule (competition_schedule.hpp): how many
// draws hit, and how many had to move or were dropped because of the per-step cap. For
// logs and tests; the table itself comes from CompetitionSchedule::build().
#include <cstdint>

#include "moe/competition_schedule.hpp"

namespace competelm {

struct ScheduleDrawStats {
  int64_t warmup_end = 0;     // first step that may compete: floor(warmup · total_steps)
  int64_t hits = 0;           // (layer, step) draws that came up "compete"
  int64_t placed = 0;         // hits placed at their own step
  int64_t moved_earlier = 0;  // hits moved to the nearest earlier step with room
  int64_t moved_later = 0;    // hits moved to the nearest later step with room
  int64_t dropped = 0;        // hits with no step left anywhere (the table is full)
};

// Re-draws the table build(opts) draws (same seed, same result) and returns the counts.
ScheduleDrawStats competition_schedule_draw_stats(const ScheduleOptions& opts);

// floor(warmup · total_steps), with warmup read as the decimal it was written as (0.7f is
// 0.69999999: taken as 0.7, so 0.7 × 10 steps = 7, not 6).
int64_t competition_warmup_end(float warmup, int total_steps);

}  // namespace competelm
