#pragma once
/// \file
/// Renders a study's results.json into one self-contained report.html (inline
/// SVG charts, embedded PNG previews, tables, the computed findings) that
/// opens offline in any browser. It runs nothing: every number comes from
/// results.json.

#include <string>
#include <vector>

#include "xfer/core/json.h"

namespace xfer::report {

/// One line of a line chart: (x, y, error) points.
struct Series {
  std::string name;
  std::vector<double> x, y, err;
};

/// Line chart with error bars; log_x for shot counts. A complete <svg>.
std::string line_chart_svg(const std::string& title, const std::string& x_label, const std::string& y_label,
                           const std::vector<Series>& series, bool log_x);

/// One bar of a bar chart with its 95% interval (whisker).
struct Bar {
  std::string group, name;
  double value = 0, low = 0, high = 0;
};
/// Grouped bars with CI whiskers, values in [0, 1] shown as %.
std::string bar_chart_svg(const std::string& title, const std::vector<Bar>& bars);

/// Scatter plot of (x, y) with a title line (e.g. the Spearman rho).
std::string scatter_svg(const std::string& title, const std::string& x_label, const std::string& y_label,
                        const std::vector<double>& x, const std::vector<double>& y);

/// Standard base64 (RFC 4648) of bytes, for data: URIs.
std::string base64(const std::string& bytes);

/// The report of a study directory's results.json (adversarial previews are
/// read from the directory when present).
std::string render_report(const Json& results, const std::string& study_dir);

/// `xfer report DIR`: reads DIR/results.json, writes DIR/report.html atomically;
/// returns its path.
std::string write_report(const std::string& study_dir);

}  // namespace xfer::report
