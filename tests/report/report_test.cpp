#include "xfer/report/report.h"

#include <cmath>
#include <filesystem>

#include <gtest/gtest.h>

#include "support/errors.h"
#include "support/support.h"
#include "xfer/core/fs.h"

namespace xfer::report {
namespace {

size_t count(const std::string& s, const std::string& needle) {
  size_t n = 0;
  for (size_t p = s.find(needle); p != std::string::npos; p = s.find(needle, p + 1)) ++n;
  return n;
}

TEST(ReportTest, Base64MatchesRfc4648Vectors) {
  EXPECT_EQ(base64(""), "");
  EXPECT_EQ(base64("f"), "Zg==");
  EXPECT_EQ(base64("fo"), "Zm8=");
  EXPECT_EQ(base64("foo"), "Zm9v");
  EXPECT_EQ(base64("foob"), "Zm9vYg==");
  EXPECT_EQ(base64("fooba"), "Zm9vYmE=");
  EXPECT_EQ(base64("foobar"), "Zm9vYmFy");
  EXPECT_EQ(base64(std::string("\xff\x00\x80", 3)), "/wCA");
}

TEST(ReportTest, ChartsDrawEveryPointBarAndWhisker) {
  Series a{"full", {1, 10, 100}, {0.5, 0.8, 0.9}, {0.02, 0.01, 0.0}};
  Series b{"scratch <cnn>", {1, 10, 100}, {0.3, 0.7, 0.88}, {0, 0, 0}};
  const auto line = line_chart_svg("acc", "shots", "accuracy", {a, b}, true);
  EXPECT_EQ(line.rfind("<svg", 0), 0u);
  EXPECT_EQ(count(line, "<polyline"), 2u);
  EXPECT_EQ(count(line, "<circle"), 6u);
  EXPECT_NE(line.find("scratch &lt;cnn&gt;"), std::string::npos);
  EXPECT_EQ(line.find("<cnn>"), std::string::npos);
  // Error bars only where the error is positive.
  EXPECT_EQ(count(line, "stroke=\"#1f77b4\"/>"), 2u);
  const auto bars = bar_chart_svg("lineage", {{"A feature", "descendants", 0.4, 0.35, 0.45},
                                              {"A feature", "unrelated", 0.1, 0.07, 0.13},
                                              {"B pgd", "descendants", 0.7, 0.65, 0.75}});
  EXPECT_EQ(count(bars, "class=\"bar\""), 3u);
  EXPECT_EQ(count(bars, "class=\"whisker\""), 3u);
  EXPECT_NE(bars.find("40.0% (95% CI 35.0%-45.0%)"), std::string::npos);
  const auto sc = scatter_svg("cka", "cka", "success", {0.1, 0.5, NAN, 0.9}, {0.2, 0.4, 0.5, 0.8});
  EXPECT_EQ(count(sc, "class=\"point\""), 3u);  // the NaN point is left out
}

TEST(ReportTest, RefusesSomethingElse) {
  xfer::testing::expect_error_naming([] { render_report(Json{{"format", "other"}}, "."); }, "xfer-study/1");
  // A results.json with a missing section: one xfer error naming the file, no report written.
  xfer::testing::TempDir tmp;
  write_json(tmp.file("results.json"), Json{{"format", "xfer-study/1"}});
  xfer::testing::expect_error_containing([&] { write_report(tmp.path()); },
                                         {tmp.file("results.json"), "provenance"});
  EXPECT_FALSE(std::filesystem::exists(tmp.file("report.html")));
  // An audit's or a transfer's folder is named as such.
  xfer::testing::TempDir audit;
  write_json(audit.file("audit.json"), Json{{"format", "xfer-audit/1"}});
  xfer::testing::expect_error_containing([&] { write_report(audit.path()); },
                                         {"an xfer audit folder", "summary.md"});
  xfer::testing::TempDir matrix;
  write_json(matrix.file("matrix.json"), Json::object());
  xfer::testing::expect_error_containing([&] { write_report(matrix.path()); },
                                         {"an xfer transfer folder"});
  xfer::testing::expect_error_containing([&] { write_report(tmp.file("nowhere")); },
                                         {"results.json"});
}

}  // namespace
}  // namespace xfer::report
