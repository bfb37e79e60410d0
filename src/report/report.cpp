#include "xfer/report/report.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <map>
#include <sstream>

#include "xfer/core/error.h"
#include "xfer/core/fs.h"
#include "xfer/eval/transfer.h"

namespace fs = std::filesystem;

namespace xfer::report {
namespace {

const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};

using eval::xml_escape;

std::string num(double v, int precision = 3) {
  if (!std::isfinite(v)) return "n/a";
  std::ostringstream os;
  os << std::fixed << std::setprecision(precision) << v;
  return os.str();
}

std::string pct(double v) { return num(100 * v, 1) + "%"; }

double jnum(const Json& j) { return j.is_number() ? j.get<double>() : std::nan(""); }

// Plot frame: maps data to pixels inside margins.
struct Frame {
  double x0, x1, y0, y1;  // data range
  int w = 560, h = 320, left = 60, right = 20, top = 36, bottom = 48;
  bool log_x = false;
  double px(double x) const {
    const double a = log_x ? std::log10(x) : x, lo = log_x ? std::log10(x0) : x0, hi = log_x ? std::log10(x1) : x1;
    return left + (hi > lo ? (a - lo) / (hi - lo) : 0.5) * (w - left - right);
  }
  double py(double y) const { return top + (y1 > y0 ? (y1 - y) / (y1 - y0) : 0.5) * (h - top - bottom); }
};

std::string frame_svg(const Frame& f, const std::string& title, const std::string& xl, const std::string& yl,
                      const std::vector<double>& xticks, bool percent_y) {
  std::ostringstream os;
  os << "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" width=\"" << f.w << "\" height=\"" << f.h
     << "\" viewBox=\"0 0 " << f.w << " " << f.h << "\" font-family=\"sans-serif\" font-size=\"11\">"
     << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>"
     << "<text x=\"" << f.w / 2 << "\" y=\"16\" text-anchor=\"middle\" font-size=\"13\" font-weight=\"bold\">"
     << xml_escape(title) << "</text>";
  for (int i = 0; i <= 4; ++i) {
    const double v = f.y0 + (f.y1 - f.y0) * i / 4.0;
    const double y = f.py(v);
    os << "<line x1=\"" << f.left << "\" x2=\"" << f.w - f.right << "\" y1=\"" << y << "\" y2=\"" << y
       << "\" stroke=\"#ddd\"/><text x=\"" << f.left - 6 << "\" y=\"" << y + 4 << "\" text-anchor=\"end\">"
       << (percent_y ? num(100 * v, 0) + "%" : num(v, 2)) << "</text>";
  }
  for (double t : xticks) {
    const double x = f.px(t);
    os << "<line x1=\"" << x << "\" x2=\"" << x << "\" y1=\"" << f.h - f.bottom << "\" y2=\"" << f.h - f.bottom + 4
       << "\" stroke=\"black\"/><text x=\"" << x << "\" y=\"" << f.h - f.bottom + 16 << "\" text-anchor=\"middle\">"
       << num(t, t == std::floor(t) ? 0 : 2) << "</text>";
  }
  os << "<line x1=\"" << f.left << "\" x2=\"" << f.w - f.right << "\" y1=\"" << f.h - f.bottom << "\" y2=\""
     << f.h - f.bottom << "\" stroke=\"black\"/><line x1=\"" << f.left << "\" x2=\"" << f.left << "\" y1=\"" << f.top
     << "\" y2=\"" << f.h - f.bottom << "\" stroke=\"black\"/>"
     << "<text x=\"" << (f.left + f.w - f.right) / 2 << "\" y=\"" << f.h - 8 << "\" text-anchor=\"middle\">"
     << xml_escape(xl) << "</text><text transform=\"translate(14," << (f.top + f.h - f.bottom) / 2
     << ") rotate(-90)\" text-anchor=\"middle\">" << xml_escape(yl) << "</text>";
  return os.str();
}

}  // namespace

std::string base64(const std::string& in) {
  static const char* t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    out += t[v >> 18];
    out += t[(v >> 12) & 63];
    out += t[(v >> 6) & 63];
    out += t[v & 63];
  }
  if (i + 1 == in.size()) {
    const uint32_t v = uint8_t(in[i]) << 16;
    out += t[v >> 18];
    out += t[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    const uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
    out += t[v >> 18];
    out += t[(v >> 12) & 63];
    out += t[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

std::string line_chart_svg(const std::string& title, const std::string& x_label, const std::string& y_label,
                           const std::vector<Series>& series, bool log_x) {
  Frame f;
  f.log_x = log_x;
  f.x0 = 1e300;
  f.x1 = -1e300;
  f.y0 = 1e300;
  f.y1 = -1e300;
  std::vector<double> xticks;
  for (const auto& s : series) {
    for (size_t i = 0; i < s.x.size(); ++i) {
      f.x0 = std::min(f.x0, s.x[i]);
      f.x1 = std::max(f.x1, s.x[i]);
      const double e = i < s.err.size() ? s.err[i] : 0;
      f.y0 = std::min(f.y0, s.y[i] - e);
      f.y1 = std::max(f.y1, s.y[i] + e);
      if (std::find(xticks.begin(), xticks.end(), s.x[i]) == xticks.end()) xticks.push_back(s.x[i]);
    }
  }
  if (xticks.empty()) {
    f.x0 = 1;
    f.x1 = 10;
    f.y0 = 0;
    f.y1 = 1;
  }
  f.y0 = std::max(0.0, std::floor(f.y0 * 20) / 20);
  f.y1 = std::min(1.0, std::ceil(f.y1 * 20) / 20);
  if (f.y1 <= f.y0) f.y1 = f.y0 + 0.05;
  if (f.x1 <= f.x0) f.x1 = f.x0 + 1;
  f.w = 640;
  f.right = 150;
  std::ostringstream os;
  os << frame_svg(f, title, x_label, y_label, xticks, true);
  for (size_t k = 0; k < series.size(); ++k) {
    const auto& s = series[k];
    const char* color = kColors[k % 8];
    os << "<g class=\"series\"><polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\"2\" points=\"";
    for (size_t i = 0; i < s.x.size(); ++i) os << f.px(s.x[i]) << "," << f.py(s.y[i]) << " ";
    os << "\"/>";
    for (size_t i = 0; i < s.x.size(); ++i) {
      const double e = i < s.err.size() ? s.err[i] : 0;
      const double x = f.px(s.x[i]);
      if (e > 0) {
        os << "<line x1=\"" << x << "\" x2=\"" << x << "\" y1=\"" << f.py(s.y[i] - e) << "\" y2=\"" << f.py(s.y[i] + e)
           << "\" stroke=\"" << color << "\"/>";
      }
      os << "<circle cx=\"" << x << "\" cy=\"" << f.py(s.y[i]) << "\" r=\"3\" fill=\"" << color << "\"><title>"
         << xml_escape(s.name) << ": " << pct(s.y[i]) << " at " << num(s.x[i], 0) << "</title></circle>";
    }
    os << "<text x=\"" << f.w - f.right + 10 << "\" y=\"" << f.top + 14 * int(k) + 4 << "\" fill=\"" << color << "\">"
       << xml_escape(s.name) << "</text></g>";
  }
  os << "</svg>";
  return os.str();
}

std::string bar_chart_svg(const std::string& title, const std::vector<Bar>& bars) {
  Frame f;
  f.x0 = 0;
  f.x1 = 1;
  f.y0 = 0;
  f.y1 = 1;
  std::vector<std::string> groups, names;
  for (const auto& b : bars) {
    if (std::find(groups.begin(), groups.end(), b.group) == groups.end()) groups.push_back(b.group);
    if (std::find(names.begin(), names.end(), b.name) == names.end()) names.push_back(b.name);
  }
  f.w = std::max(420, 60 + 24 * int(bars.size()) + 20 * int(groups.size()) + 150);
  f.right = 150;
  f.bottom = 70;
  std::ostringstream os;
  os << frame_svg(f, title, "", "success rate", {}, true);
  const double slot = double(f.w - f.left - f.right) / std::max<size_t>(groups.size(), 1);
  const double bw = std::min(28.0, slot / (names.size() + 1));
  for (size_t g = 0; g < groups.size(); ++g) {
    const double gx = f.left + slot * g;
    size_t k = 0;
    for (const auto& b : bars) {
      if (b.group != groups[g]) continue;
      const size_t ni = std::find(names.begin(), names.end(), b.name) - names.begin();
      const double x = gx + bw * 0.5 + bw * double(k++);
      const double y = f.py(std::clamp(b.value, 0.0, 1.0));
      os << "<rect class=\"bar\" x=\"" << x << "\" y=\"" << y << "\" width=\"" << bw * 0.9 << "\" height=\""
         << f.py(0) - y << "\" fill=\"" << kColors[ni % 8] << "\"><title>" << xml_escape(b.group) << ", " << xml_escape(b.name)
         << ": " << pct(b.value) << " (95% CI " << pct(b.low) << "-" << pct(b.high) << ")</title></rect>";
      const double cx = x + bw * 0.45;
      os << "<line class=\"whisker\" x1=\"" << cx << "\" x2=\"" << cx << "\" y1=\"" << f.py(b.low) << "\" y2=\""
         << f.py(b.high) << "\" stroke=\"black\"/><line x1=\"" << cx - 4 << "\" x2=\"" << cx + 4 << "\" y1=\""
         << f.py(b.low) << "\" y2=\"" << f.py(b.low) << "\" stroke=\"black\"/><line x1=\"" << cx - 4 << "\" x2=\""
         << cx + 4 << "\" y1=\"" << f.py(b.high) << "\" y2=\"" << f.py(b.high) << "\" stroke=\"black\"/>";
    }
    os << "<text transform=\"translate(" << gx + slot / 2 << "," << f.h - f.bottom + 14
       << ") rotate(20)\" font-size=\"10\">" << xml_escape(groups[g]) << "</text>";
  }
  for (size_t n = 0; n < names.size(); ++n) {
    os << "<text x=\"" << f.w - f.right + 10 << "\" y=\"" << f.top + 14 * int(n) + 4 << "\" fill=\"" << kColors[n % 8]
       << "\">" << xml_escape(names[n]) << "</text>";
  }
  os << "</svg>";
  return os.str();
}

std::string scatter_svg(const std::string& title, const std::string& x_label, const std::string& y_label,
                        const std::vector<double>& x, const std::vector<double>& y) {
  Frame f;
  f.w = 360;
  f.h = 300;
  f.x0 = 1e300;
  f.x1 = -1e300;
  for (size_t i = 0; i < x.size(); ++i) {
    if (!std::isfinite(x[i])) continue;
    f.x0 = std::min(f.x0, x[i]);
    f.x1 = std::max(f.x1, x[i]);
  }
  if (f.x0 > f.x1) {
    f.x0 = 0;
    f.x1 = 1;
  }
  if (f.x1 - f.x0 < 1e-9) f.x1 = f.x0 + 1;
  f.y0 = 0;
  f.y1 = 1;
  std::vector<double> ticks;
  for (int i = 0; i <= 4; ++i) ticks.push_back(f.x0 + (f.x1 - f.x0) * i / 4.0);
  std::ostringstream os;
  os << frame_svg(f, title, x_label, y_label, ticks, true);
  for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
    if (!std::isfinite(x[i]) || !std::isfinite(y[i])) continue;
    os << "<circle class=\"point\" cx=\"" << f.px(x[i]) << "\" cy=\"" << f.py(y[i]) << "\" r=\"3.5\" fill=\"#1f77b4\" "
       << "fill-opacity=\"0.7\"><title>" << num(x[i]) << ", " << pct(y[i]) << "</title></circle>";
  }
  os << "</svg>";
  return os.str();
}

std::string render_report(const Json& r, const std::string& dir) {
  XFER_CHECK(r.is_object() && r.value("format", "") == "xfer-study/1", "results.json: not an xfer study (format xfer-study/1)");
  std::ostringstream h;
  const auto& prov = r.at("provenance");
  h << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>xfer study report</title><style>"
       "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
       "table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;"
       "text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
       "section{margin-bottom:2.5em}.charts{display:flex;flex-wrap:wrap;gap:12px}img{image-rendering:pixelated}"
       ".scroll{overflow-x:auto;max-width:100%}table.labels{table-layout:fixed;font-size:11px;margin:2px 0}table.labels td{text-align:center;padding:1px;"
       "overflow:hidden;white-space:nowrap}td.fooled{background:#fbd5d5;color:#900}"
       "</style></head><body>\n<h1>xfer study report</h1>\n";
  h << "<p>xfer " << xml_escape(prov.at("xfer_version").get<std::string>()) << ", LibTorch "
    << xml_escape(prov.at("libtorch_version").get<std::string>()) << ", " << xml_escape(prov.at("created").get<std::string>())
    << ", preset <b>" << xml_escape(r.at("config").at("preset").get<std::string>()) << "</b>; test data <code>"
    << xml_escape(prov.at("data").at("test").at("spec").get<std::string>()) << "</code> ("
    << prov.at("data").at("test").at("samples").get<int64_t>() << " samples, sha256 "
    << xml_escape(prov.at("data").at("test").at("sha256").get<std::string>().substr(0, 16)) << "...).</p>\n";

  // Findings.
  h << "<section id=\"findings\"><h2>Findings</h2><ul>";
  std::istringstream fin(r.value("findings", std::string()));
  for (std::string line; std::getline(fin, line);) {
    if (line.rfind("- ", 0) == 0) line = line.substr(2);
    if (!line.empty()) h << "<li>" << xml_escape(line) << "</li>";
  }
  h << "</ul></section>\n";

  // Data efficiency.
  std::map<std::string, Series> by_method;
  std::vector<std::string> order;
  for (const auto& e : r.at("data_efficiency")) {
    const auto m = e.at("method").get<std::string>();
    if (!by_method.count(m)) order.push_back(m);
    auto& s = by_method[m];
    s.name = m;
    s.x.push_back(double(e.at("shots").get<int64_t>()));
    s.y.push_back(e.at("mean_accuracy").get<double>());
    s.err.push_back(jnum(e.at("std_accuracy")));  // null with one seed
  }
  std::vector<Series> series;
  for (const auto& m : order) series.push_back(by_method[m]);
  h << "<section id=\"data-efficiency\"><h2>Data efficiency: transfer vs scratch</h2>"
    << line_chart_svg("Test accuracy vs labels per class (mean, +- std over seeds)", "labels per class",
                      "test accuracy", series, true)
    << "<table><tr><th>method</th><th>shots</th><th>mean accuracy</th><th>std</th><th>seeds</th><th>mean wall (s)</th></tr>";
  for (const auto& e : r.at("data_efficiency")) {
    h << "<tr><td>" << xml_escape(e.at("method").get<std::string>()) << "</td><td>" << e.at("shots")
      << "</td><td>" << pct(e.at("mean_accuracy").get<double>()) << "</td><td>"
      << pct(jnum(e.at("std_accuracy"))) << "</td><td>" << e.at("seeds") << "</td><td>"
      << num(e.at("mean_wall_seconds").get<double>(), 1) << "</td></tr>";
  }
  h << "</table></section>\n";

  // Transfer heatmaps: rows are the attackers, columns the victims.
  std::vector<eval::TransferCell> cells;
  std::map<std::string, std::string> attacker_of, victim_of;
  for (const auto& c : r.at("transfer").at("cells")) {
    eval::TransferCell t;
    t.source = "attacker " + c.at("attacker").get<std::string>();
    t.target = c.at("victim").get<std::string>();
    t.attack = c.at("attack").get<std::string>();
    t.eps = c.at("eps").get<double>();
    t.white_box = c.at("white_box").get<bool>();
    t.success_rate = c.at("success_rate").get<double>();
    t.success_low = c.at("success_ci95")[0].get<double>();
    t.success_high = c.at("success_ci95")[1].get<double>();
    t.clean_correct = c.at("clean_correct").get<int64_t>();
    cells.push_back(t);
    attacker_of[c.at("source").get<std::string>()] = t.source;
    victim_of[c.at("target").get<std::string>()] = t.target;
  }
  h << "<section id=\"transfer\"><h2>Transfer: attackers A, B, C against every victim</h2>"
    << "<p>A holds only the public base (feature attack on its backbone); B fine-tuned its own surrogate from the "
       "public base; C trained an independent surrogate. Cells: success rate on the victim's correctly classified "
       "samples.</p>"
    << "<div class=\"scroll\">" << eval::transfer_heatmap_svg(cells) << "</div></section>\n";

  // Lineage effect.
  std::vector<Bar> bars;
  h << "<section id=\"lineage\"><h2>Lineage effect</h2>";
  for (const auto& row : r.at("lineage_effect")) {
    const std::string group = str_cat(row.at("attacker").get<std::string>(), " ", row.at("attack").get<std::string>(),
                                      " ", num(row.at("eps").get<double>(), 2));
    for (const char* g : {"descendants", "unrelated"}) {
      const auto& x = row.at(g);
      // (No victim, or no correctly classified sample: no rate to draw.)
      if (x.at("victims").get<int64_t>() == 0 || !x.at("success").is_number()) continue;
      bars.push_back({group, g, x.at("success").get<double>(), x.at("ci95")[0].get<double>(),
                      x.at("ci95")[1].get<double>()});
    }
  }
  h << bar_chart_svg("Success on descendants of the public base vs unrelated victims (95% CI)", bars)
    << "<table><tr><th>attacker, attack, eps</th><th>group</th><th>victims</th><th>fooled / correct</th>"
       "<th>success</th><th>95% CI</th></tr>";
  for (const auto& b : bars) {
    h << "<tr><td>" << xml_escape(b.group) << "</td><td>" << b.name << "</td>";
    for (const auto& row : r.at("lineage_effect")) {
      const std::string group = str_cat(row.at("attacker").get<std::string>(), " ",
                                        row.at("attack").get<std::string>(), " ", num(row.at("eps").get<double>(), 2));
      if (group != b.group) continue;
      const auto& x = row.at(b.name);
      h << "<td>" << x.at("victims") << "</td><td>" << x.at("fooled") << " / " << x.at("clean_correct") << "</td>";
    }
    h << "<td>" << pct(b.value) << "</td><td>" << pct(b.low) << "-" << pct(b.high) << "</td></tr>";
  }
  h << "</table></section>\n";

  // Predictors vs measured transfer, for the first label attack (else the first).
  const auto& pred = r.at("transfer").at("predictors");
  std::string attack;
  double eps = 0;
  for (const auto& c : pred.at("spearman_vs_success")) {
    if (attack.empty() || attack == "feature") {
      attack = c.at("attack").get<std::string>();
      eps = c.at("eps").get<double>();
    }
  }
  h << "<section id=\"predictors\"><h2>Predictors of transfer</h2><div class=\"charts\">";
  for (const char* p : {"gradient_alignment", "cka", "agreement"}) {
    std::vector<double> xs, ys;
    for (const auto& pair : pred.at("pairs")) {
      for (const auto& c : r.at("transfer").at("cells")) {
        if (c.at("source") == pair.at("source") && c.at("target") == pair.at("target") && c.at("attack") == attack &&
            c.at("eps").get<double>() == eps && !c.at("white_box").get<bool>()) {
          xs.push_back(jnum(pair.at(p)));
          ys.push_back(c.at("success_rate").get<double>());
        }
      }
    }
    double rho = std::nan("");
    for (const auto& c : pred.at("spearman_vs_success")) {
      if (c.at("attack") == attack && c.at("eps").get<double>() == eps) rho = jnum(c.at(std::string("spearman_") + p));
    }
    // The x axis names the predictor; the title stays short enough for the chart.
    h << scatter_svg(str_cat(attack, ": Spearman rho ", num(rho, 2)), p, "success", xs, ys);
  }
  h << "</div><table><tr><th>attack</th><th>eps</th><th>pairs</th><th>gradient alignment</th><th>CKA</th>"
       "<th>agreement</th></tr>";
  for (const auto& c : pred.at("spearman_vs_success")) {
    h << "<tr><td>" << xml_escape(c.at("attack").get<std::string>()) << "</td><td>"
      << num(c.at("eps").get<double>(), 3) << "</td><td>" << c.at("pairs") << "</td>";
    for (const char* p : {"gradient_alignment", "cka", "agreement"}) {
      h << "<td>" << num(jnum(c.at(std::string("spearman_") + p)));
      // Over fewer pairs where the predictor does not apply to some (results.json before 2026-12-07
      // lacks the count).
      const std::string count = std::string("pairs_") + p;
      if (c.contains(count) && c.at(count) != c.at("pairs"))
        h << " (" << c.at(count).get<int64_t>() << " pairs)";
      h << "</td>";
    }
    h << "</tr>";
  }
  h << "</table></section>\n";

  // Hardening.
  h << "<section id=\"hardening\"><h2>Hardening by adversarial fine-tuning</h2>";
  for (const auto& hd : r.at("hardening")) {
    h << "<p><b>" << xml_escape(hd.at("hardened").get<std::string>()) << "</b> ("
      << xml_escape(hd.at("recipe").get<std::string>()) << ") vs <b>"
      << xml_escape(hd.at("plain").get<std::string>()) << "</b>: clean accuracy "
      << pct(hd.at("plain_accuracy").get<double>()) << " -> "
      << pct(hd.at("hardened_accuracy").get<double>())
      << ".</p><table><tr><th>attacker</th><th>attack</th><th>eps</th><th>plain</th><th>95% CI</th>"
         "<th>hardened</th><th>95% CI</th></tr>";
    auto ci = [](const Json& t, const char* key) {
      if (!t.contains(key)) return std::string("n/a");
      return pct(jnum(t.at(key)[0])) + "-" + pct(jnum(t.at(key)[1]));
    };
    for (const auto& t : hd.at("transfer")) {
      h << "<tr><td>" << xml_escape(t.at("attacker").get<std::string>()) << "</td><td>"
        << xml_escape(t.at("attack").get<std::string>()) << "</td><td>"
        << num(t.at("eps").get<double>(), 3) << "</td><td>" << pct(jnum(t.at("plain_success")))
        << "</td><td>" << ci(t, "plain_ci95") << "</td><td>" << pct(jnum(t.at("hardened_success")))
        << "</td><td>" << ci(t, "hardened_ci95") << "</td></tr>";
    }
    h << "</table>";
  }
  h << "</section>\n";

  // Adversarial examples: the preview grids of the attackers' sets.
  h << "<section id=\"examples\"><h2>Adversarial examples</h2><p>Rows: clean, perturbation (grey = 0), "
       "adversarial. Under each grid: the true class, then what a descendant victim predicts on the clean and on "
       "the adversarial image (red: fooled).</p><div class=\"charts\">";
  for (const auto& ex : r.value("examples", Json::array())) {
    const fs::path png = fs::path(dir) / ex.at("preview").get<std::string>();
    std::error_code ec;
    if (!fs::is_regular_file(png, ec)) continue;
    h << "<figure><img alt=\"adversarial examples\" width=\"" << 3 * 180 << "\" src=\"data:image/png;base64,"
      << base64(read_file(png.string())) << "\"><figcaption>attacker " << xml_escape(ex.at("attacker").get<std::string>())
      << ", " << xml_escape(ex.at("attack").get<std::string>()) << ", eps " << num(ex.at("eps").get<double>(), 3);
    if (ex.contains("samples") && ex.contains("victim")) {
      const auto& samples = ex.at("samples");
      h << "; victim " << xml_escape(ex.at("victim").get<std::string>()) << "<table class=\"labels\" style=\"width:"
        << 3 * 180 << "px\">";
      const std::pair<const char*, const char*> rows[] = {{"label", "true"}, {"clean", "clean"}, {"adversarial", "adv"}};
      for (const auto& [key, title] : rows) {
        h << "<tr>";
        for (const auto& sm : samples) {
          const bool fooled = std::string(key) == "adversarial" && sm.at(key) != sm.at("label");
          h << "<td" << (fooled ? " class=\"fooled\"" : "") << " title=\"" << title << "\">"
            << xml_escape(sm.at(key).get<std::string>()) << "</td>";
        }
        h << "</tr>";
      }
      h << "</table>";
    }
    h << "</figcaption></figure>";
  }
  h << "</div></section>\n";

  // Models.
  h << "<section id=\"models\"><h2>Models</h2><table><tr><th>label</th><th>role</th><th>arch</th><th>method</th>"
       "<th>shots</th><th>seed</th><th>test accuracy</th><th>wall (s)</th><th>id</th></tr>";
  for (const auto& m : r.at("models")) {
    h << "<tr><td>" << xml_escape(m.at("label").get<std::string>()) << "</td><td>" << xml_escape(m.at("role").get<std::string>())
      << "</td><td>" << xml_escape(m.at("arch").get<std::string>()) << "</td><td>" << xml_escape(m.at("method").get<std::string>())
      << "</td><td>" << m.at("shots") << "</td><td>" << m.at("seed") << "</td><td>"
      << (m.at("test_accuracy").is_number() ? pct(m.at("test_accuracy").get<double>()) : std::string("-"))
      << "</td><td>" << num(m.at("wall_seconds").get<double>(), 1) << "</td><td><code>"
      << xml_escape(m.at("id").get<std::string>().substr(0, 12)) << "</code></td></tr>";
  }
  h << "</table></section>\n</body></html>\n";
  return h.str();
}

std::string write_report(const std::string& study_dir) {
  const std::string results = (fs::path(study_dir) / "results.json").string();
  const std::string html = (fs::path(study_dir) / "report.html").string();
  // The other commands' folders have their own summaries: say so rather than "no such file".
  std::error_code ec;
  if (!fs::exists(results, ec)) {
    for (const auto& [file, what] :
         {std::pair<const char*, const char*>{"audit.json",
                                              "an xfer audit folder (its report is summary.md)"},
          {"matrix.json", "an xfer transfer folder (its heatmap is heatmap.svg)"}}) {
      XFER_CHECK(!fs::exists(fs::path(study_dir) / file, ec), study_dir, ": ", what,
                 "; xfer report renders a study's results.json");
    }
  }
  const Json r = read_json(results);
  std::string page;
  try {
    page = render_report(r, study_dir);
  } catch (const nlohmann::json::exception& e) {
    // A hand-edited or older results.json: one line naming the file, not a raw json error.
    throw Error(str_cat(results, ": not the results of this xfer version (", e.what(), ")"));
  } catch (const Error& e) {
    throw Error(str_cat(results, ": ", e.what()));
  }
  write_file_atomic(html, page);
  return html;
}

}  // namespace xfer::report
