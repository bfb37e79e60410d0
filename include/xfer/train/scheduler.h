#pragma once
/// \file
/// Learning-rate schedules as pure functions of the step, so a resumed run
/// gets exactly the same rates.

#include <cstdint>
#include <string>

namespace xfer::train {

/// Linear warmup from 0 over `warmup_steps`, then cosine decay from base to
/// base * min_factor at total_steps; "constant" keeps base after the warmup.
struct ScheduleOptions {
  std::string kind = "cosine";  ///< cosine | constant
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  double min_factor = 0.0;
};

/// Multiplier of the base learning rate at `step` (0-based).
double lr_factor(const ScheduleOptions& options, int64_t step);

}  // namespace xfer::train
