#include "train/lr_schedule.hpp"

#include <algorithm>
#include <cmath>

#include "core/error.hpp"

namespace competelm {

float LrSchedule::at(int step) const {
  const float floor = peak * min_frac;
  if (step < warmup_steps) return peak * float(step + 1) / float(warmup_steps);
  if (kind == "constant") return peak;
  const int decay_steps = std::max(1, total_steps - warmup_steps);
  const float progress = std::clamp(float(step - warmup_steps) / float(decay_steps), 0.0f, 1.0f);
  if (kind == "cosine") return floor + 0.5f * (peak - floor) * (1.0f + std::cos(float(M_PI) * progress));
  if (kind == "linear") return peak - (peak - floor) * progress;
  if (kind == "wsd") {
    // Stable at the peak, then a linear decay over the last wsd_decay_frac of all steps.
    const float decay_start = 1.0f - std::clamp(wsd_decay_frac, 0.0f, 1.0f);
    if (progress <= decay_start) return peak;
    const float p = (progress - decay_start) / std::max(1e-6f, 1.0f - decay_start);
    return peak - (peak - floor) * std::min(p, 1.0f);
  }
  fail("optim.schedule: unknown schedule '{}' (expected cosine, linear, constant or wsd)", kind);
}

}  // namespace competelm
