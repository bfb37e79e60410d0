#include "xfer/core/error.h"

#include <string>

#include "support/support.h"

namespace xfer {
namespace {

int checked_positive(int x) {
  XFER_CHECK(x > 0, "value ", x, " must be positive");
  return x;
}

int checked_usage(int x) {
  XFER_CHECK_USAGE(x != 3, "--flag: bad value ", x);
  return x;
}

TEST(ErrorTest, CheckPassesWhenConditionHolds) {
  EXPECT_EQ(checked_positive(5), 5);
  EXPECT_EQ(checked_usage(4), 4);
}

TEST(ErrorTest, CheckThrowsErrorWithStreamedMessage) {
  try {
    checked_positive(-7);
    FAIL() << "XFER_CHECK did not throw";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "value -7 must be positive");
    EXPECT_EQ(e.kind(), ErrorKind::kRuntime);
  }
}

TEST(ErrorTest, CheckIsCatchableAsRuntimeError) {
  EXPECT_THROW(checked_positive(0), std::runtime_error);
}

TEST(ErrorTest, CheckDoesNotEvaluateMessageWhenConditionHolds) {
  int calls = 0;
  auto count = [&calls]() {
    ++calls;
    return "msg";
  };
  XFER_CHECK(true, count());
  EXPECT_EQ(calls, 0);
  EXPECT_THROW(XFER_CHECK(false, count()), Error);
  EXPECT_EQ(calls, 1);
}

TEST(ErrorTest, CheckEvaluatesConditionOnce) {
  int evaluations = 0;
  XFER_CHECK(++evaluations == 1, "evaluated twice");
  EXPECT_EQ(evaluations, 1);
}

TEST(ErrorTest, CheckUsageThrowsUsageErrorWithKindUsage) {
  try {
    checked_usage(3);
    FAIL() << "XFER_CHECK_USAGE did not throw";
  } catch (const UsageError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUsage);
    EXPECT_STREQ(e.what(), "--flag: bad value 3");
  }
  // Also catchable as the base Error, keeping the kind.
  try {
    checked_usage(3);
    FAIL() << "XFER_CHECK_USAGE did not throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUsage);
  }
}

TEST(ErrorTest, ErrorDefaultsToRuntimeKind) {
  Error e("boom");
  EXPECT_EQ(e.kind(), ErrorKind::kRuntime);
  EXPECT_STREQ(e.what(), "boom");
  Error u("bad usage", ErrorKind::kUsage);
  EXPECT_EQ(u.kind(), ErrorKind::kUsage);
  UsageError ue("x");
  EXPECT_EQ(ue.kind(), ErrorKind::kUsage);
}

TEST(ErrorTest, StrCatConcatenatesMixedTypes) {
  EXPECT_EQ(str_cat(), "");
  EXPECT_EQ(str_cat("a"), "a");
  EXPECT_EQ(str_cat("x=", 42, ", y=", 1.5, ", c=", 'c', ", s=", std::string("str")),
            "x=42, y=1.5, c=c, s=str");
  EXPECT_EQ(str_cat(-3, int64_t{9000000000}), "-39000000000");
  EXPECT_EQ(str_cat(std::string(), "", 0), "0");
}

}  // namespace
}  // namespace xfer
