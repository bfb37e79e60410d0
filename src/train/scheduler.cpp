#include "xfer/train/scheduler.h"

#include <algorithm>
#include <cmath>

#include "xfer/core/error.h"

namespace xfer::train {

double lr_factor(const ScheduleOptions& o, int64_t step) {
  XFER_CHECK(o.kind == "cosine" || o.kind == "constant",
             "schedule: expected cosine or constant, got '", o.kind, "'");
  XFER_CHECK(o.total_steps >= 1, "schedule: total_steps must be >= 1");
  if (o.warmup_steps > 0 && step < o.warmup_steps) {
    // Step 0 gets a small non-zero rate so the first update is not wasted.
    return double(step + 1) / double(o.warmup_steps + 1);
  }
  if (o.kind == "constant") return 1.0;
  int64_t decay_steps = std::max<int64_t>(1, o.total_steps - o.warmup_steps);
  double t = std::clamp(double(step - o.warmup_steps) / double(decay_steps), 0.0, 1.0);
  double cosine = 0.5 * (1.0 + std::cos(M_PI * t));
  return o.min_factor + (1.0 - o.min_factor) * cosine;
}

}  // namespace xfer::train
