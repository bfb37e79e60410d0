#include "xfer/core/parse.h"

#include <gtest/gtest.h>

#include "support/errors.h"
#include "xfer/core/error.h"
#include "xfer/core/json.h"

namespace xfer {
namespace {

TEST(ParseTest, IntegersAreWholeStrings) {
  EXPECT_EQ(parse_integer("42", "--steps"), 42);
  EXPECT_EQ(parse_integer("-7", "--x"), -7);
  for (const char* bad : {"", "4x", "1.5", " ", "abc", "99999999999999999999", " 4", "+4"}) {
    xfer::testing::expect_error_naming([&] { parse_integer(bad, "--steps"); }, "--steps");
  }
  try {
    parse_integer("4x", "--steps");
    FAIL();
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("'4x' is not an integer"), std::string::npos) << e.what();
  }
}

TEST(ParseTest, NumbersAreFiniteWholeStrings) {
  EXPECT_DOUBLE_EQ(parse_number("0.25", "--lr"), 0.25);
  EXPECT_DOUBLE_EQ(parse_number("1e-3", "--lr"), 1e-3);
  for (const char* bad : {"", "nan", "inf", "0.1.2", "1e", "x", "1e999", " 0.1", "+0.1", "0.1 "}) {
    EXPECT_THROW(parse_number(bad, "--lr"), UsageError) << bad;
  }
  // A subnormal is a number (stod would call it out of range).
  EXPECT_GT(parse_number("1e-310", "--lr"), 0.0);
}

TEST(ParseTest, FractionsAndLists) {
  EXPECT_DOUBLE_EQ(parse_fraction("8/255", "--eps"), 8.0 / 255.0);
  EXPECT_DOUBLE_EQ(parse_fraction("0.03", "--eps"), 0.03);
  xfer::testing::expect_error_naming([] { parse_fraction("1/0", "--eps"); }, "divides by zero");
  xfer::testing::expect_error_naming([] { parse_fraction("1e300/1e-300", "--eps"); }, "too large");
  xfer::testing::expect_error_naming([] { parse_fraction("8/", "--eps"); }, "--eps");
  xfer::testing::expect_error_naming([] { parse_fraction("a/255", "--eps"); }, "8/255");
  auto v = parse_fraction_list("0.05,8/255,0.1", "--eps");
  ASSERT_EQ(v.size(), 3u);
  EXPECT_DOUBLE_EQ(v[1], 8.0 / 255.0);
  xfer::testing::expect_error_naming([] { parse_fraction_list("0.1,,0.2", "--eps"); }, "empty value");
  EXPECT_EQ(split("a,,b", ','), (std::vector<std::string>{"a", "", "b"}));
  EXPECT_EQ(split("", ','), (std::vector<std::string>{""}));
}

TEST(ParseTest, Utf8IsCheckedAsJsonWouldCheckIt) {
  for (const std::string good : {"", "plain", "caf\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80",
                                 "\xf4\x8f\xbf\xbf", "\xed\x9f\xbf"}) {
    EXPECT_TRUE(is_utf8(good)) << good;
    EXPECT_NO_THROW(Json(good).dump()) << good;
  }
  for (const std::string bad : {"caf\xe9", "\xc3", "\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80",
                                "\xf4\x90\x80\x80", "\xf8\x88\x80\x80\x80", "\x80", "a\xe2\x82"}) {
    EXPECT_FALSE(is_utf8(bad)) << bad;
    EXPECT_THROW(Json(bad).dump(), nlohmann::json::exception) << bad;  // why it matters
  }
}

}  // namespace
}  // namespace xfer
