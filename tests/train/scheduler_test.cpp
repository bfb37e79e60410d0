#include "xfer/train/scheduler.h"

#include <cmath>

#include "support/support.h"
#include "xfer/core/error.h"

namespace xfer::train {
namespace {

TEST(SchedulerTest, WarmupRisesLinearlyThenCosineFalls) {
  ScheduleOptions o;
  o.warmup_steps = 10;
  o.total_steps = 110;
  for (int64_t s = 1; s < 10; ++s) EXPECT_GT(lr_factor(o, s), lr_factor(o, s - 1));
  EXPECT_NEAR(lr_factor(o, 4), 5.0 / 11.0, 1e-12);
  EXPECT_NEAR(lr_factor(o, 10), 1.0, 1e-12);
  EXPECT_NEAR(lr_factor(o, 60), 0.5, 1e-12);  // half way through the decay
  EXPECT_NEAR(lr_factor(o, 110), 0.0, 1e-12);
  for (int64_t s = 11; s <= 110; ++s) EXPECT_LE(lr_factor(o, s), lr_factor(o, s - 1) + 1e-15);
}

TEST(SchedulerTest, MinFactorAndConstant) {
  ScheduleOptions o;
  o.total_steps = 100;
  o.min_factor = 0.1;
  EXPECT_NEAR(lr_factor(o, 100), 0.1, 1e-12);
  EXPECT_NEAR(lr_factor(o, 0), 1.0, 1e-12);
  o.kind = "constant";
  o.warmup_steps = 5;
  EXPECT_LT(lr_factor(o, 0), 1.0);
  EXPECT_EQ(lr_factor(o, 50), 1.0);
}

TEST(SchedulerTest, BadOptionsThrow) {
  ScheduleOptions o;
  o.kind = "step";
  EXPECT_THROW(lr_factor(o, 0), Error);
  o.kind = "cosine";
  o.total_steps = 0;
  EXPECT_THROW(lr_factor(o, 0), Error);
}

}  // namespace
}  // namespace xfer::train
