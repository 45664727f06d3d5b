#pragma once
// Learning-rate schedules: linear warm-up, then cosine / linear / constant / WSD
// (warm-up, stable, decay) down to a floor of lr × min_lr_frac.
#include <string>

namespace competelm {

struct LrSchedule {
  std::string kind = "cosine";  // cosine | linear | constant | wsd
  float peak = 6e-4f;
  float min_frac = 0.1f;
  int warmup_steps = 0;
  int total_steps = 1;
  float wsd_decay_frac = 0.2f;  // wsd: the last share of the steps that decays linearly

  // Learning rate for 0-based optimizer step `step`.
  float at(int step) const;
};

}  // namespace competelm
