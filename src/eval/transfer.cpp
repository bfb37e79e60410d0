#include "xfer/eval/transfer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <map>
#include <set>
#include <sstream>

#include "xfer/core/dist.h"
#include "xfer/core/error.h"
#include "xfer/core/fs.h"
#include "xfer/core/parse.h"
#include "xfer/core/progress.h"
#include "xfer/core/runtime.h"
#include "xfer/core/sha256.h"
#include "xfer/data/spec.h"
#include "xfer/eval/metrics.h"

namespace fs = std::filesystem;

namespace xfer::eval {
namespace {

std::string source_key(const io::ModelSource& s) { return s.dir.empty() ? "ts:" + s.torchscript : "dir:" + s.dir; }

std::string base_name(const io::ModelSource& s) {
  fs::path p(s.dir.empty() ? s.torchscript : s.dir);
  if (p.filename().empty()) p = p.parent_path();  // "dir/" -> "dir"
  std::string name = p.filename().string();
  return name.empty() ? std::string("model") : name;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

std::string fmt(double v, int precision = 4) {
  if (!std::isfinite(v)) return "";
  std::ostringstream os;
  os << std::setprecision(precision) << std::fixed << v;
  return os.str();
}

std::pair<double, double> interval(int64_t k, int64_t n) {
  if (n <= 0) return {0.0, 1.0};
  return wilson_interval(k, n);
}

// Cells grouped by (attack, eps) in first-seen order.
std::vector<std::pair<std::string, double>> panels_of(const std::vector<TransferCell>& cells) {
  std::vector<std::pair<std::string, double>> panels;
  for (const auto& c : cells) {
    std::pair<std::string, double> p{c.attack, c.eps};
    if (std::find(panels.begin(), panels.end(), p) == panels.end()) panels.push_back(p);
  }
  return panels;
}

template <class F>
std::vector<std::string> unique_in_order(const std::vector<TransferCell>& cells, F field) {
  std::vector<std::string> out;
  for (const auto& c : cells) {
    const std::string& v = field(c);
    if (std::find(out.begin(), out.end(), v) == out.end()) out.push_back(v);
  }
  return out;
}

}  // namespace

io::ModelSource model_source_from_path(const std::string& path) {
  XFER_CHECK_USAGE(!path.empty(), "empty model path");
  io::ModelSource s;
  std::error_code ec;
  const auto ext = fs::path(path).extension().string();
  if (fs::is_regular_file(path, ec) && (ext == ".pt" || ext == ".pth")) {
    s.torchscript = path;
  } else {
    s.dir = path;
  }
  return s;
}

TransferSource TransferSource::parse(const std::string& text) {
  TransferSource t;
  for (const auto& part : split(text, '+')) {
    XFER_CHECK_USAGE(!part.empty(), "--sources: empty model in '", text, "' (an ensemble is A+B)");
    t.models.push_back(model_source_from_path(part));
  }
  return t;
}

void TransferOptions::validate() const {
  XFER_CHECK_USAGE(!sources.empty(), "--sources is required");
  XFER_CHECK_USAGE(!targets.empty(), "--targets is required");
  for (const auto& s : sources) {
    XFER_CHECK_USAGE(!s.models.empty(), "--sources: empty source");
    for (const auto& m : s.models) m.validate(true);
  }
  for (const auto& t : targets) t.validate(true);
  XFER_CHECK_USAGE(!data.empty(), "--data is required");
  XFER_CHECK_USAGE(!out.empty(), "--out is required");
  XFER_CHECK_USAGE(!attacks.empty(), "--attack: at least one attack");
  validate_attack_grid(attacks, eps, base, overrides);
  XFER_CHECK_USAGE(limit >= 0, "--limit must be >= 0, got ", limit);
  XFER_CHECK_USAGE(batch_size >= 1, "--batch-size must be >= 1, got ", batch_size);
  XFER_CHECK_USAGE(predictor_samples >= 1, "--predictor-samples must be >= 1, got ", predictor_samples);
  parse_device(device);
}

Json TransferCell::to_json() const {
  Json j = {{"source", source},
            {"target", target},
            {"attack", attack},
            {"eps", eps},
            {"white_box", white_box},
            {"n", n},
            {"clean_correct", clean_correct},
            {"fooled", fooled},
            {"success_rate", success_rate},
            {"success_ci95", {success_low, success_high}},
            {"misclassified", misclassified},
            {"rate_all", rate_all},
            {"rate_all_ci95", {rate_all_low, rate_all_high}},
            {"linf_mean", linf_mean},
            {"l2_mean", l2_mean},
            {"targeted", targeted}};
  if (targeted) {
    j["target_n"] = target_n;
    j["target_hits"] = target_hits;
    j["target_rate"] = target_rate;
    j["target_ci95"] = {target_low, target_high};
  }
  return j;
}

TransferCell transfer_cell(const torch::Tensor& labels, const torch::Tensor& clean_pred, const torch::Tensor& adv_pred,
                           const torch::Tensor& targets) {
  XFER_CHECK(labels.dim() == 1 && clean_pred.sizes() == labels.sizes() && adv_pred.sizes() == labels.sizes(),
             "transfer_cell: labels and predictions must be [N]");
  TransferCell c;
  auto y = labels.to(torch::kLong), cp = clean_pred.to(torch::kLong), ap = adv_pred.to(torch::kLong);
  c.n = y.size(0);
  auto correct = cp.eq(y);
  c.clean_correct = correct.sum().item<int64_t>();
  c.fooled = (correct & ap.ne(y)).sum().item<int64_t>();
  c.misclassified = ap.ne(y).sum().item<int64_t>();
  c.success_rate = c.clean_correct ? double(c.fooled) / double(c.clean_correct) : 0.0;
  std::tie(c.success_low, c.success_high) = interval(c.fooled, c.clean_correct);
  c.rate_all = c.n ? double(c.misclassified) / double(c.n) : 0.0;
  std::tie(c.rate_all_low, c.rate_all_high) = interval(c.misclassified, c.n);
  if (targets.defined()) {
    XFER_CHECK(targets.sizes() == labels.sizes(), "transfer_cell: targets must be [N]");
    c.targeted = true;
    // A sample already of its target class is no targeted success (label:K on class K).
    const auto t = targets.to(torch::kLong);
    const auto eligible = t.ne(y);
    c.target_n = eligible.sum().item<int64_t>();
    c.target_hits = (eligible & ap.eq(t)).sum().item<int64_t>();
    c.target_rate = c.target_n ? double(c.target_hits) / double(c.target_n) : 0.0;
    std::tie(c.target_low, c.target_high) = interval(c.target_hits, c.target_n);
  }
  return c;
}

TransferCell::Rate TransferCell::headline() const {
  if (targeted) return {target_rate, target_low, target_high, target_hits, target_n};
  return {success_rate, success_low, success_high, fooled, clean_correct};
}

std::string transfer_csv(const std::vector<TransferCell>& cells, const Json& pairs) {
  std::ostringstream os;
  os << "source,target,attack,eps,white_box,n,clean_correct,fooled,success_rate,success_ci_low,"
        "success_ci_high,misclassified,rate_all,rate_all_ci_low,rate_all_ci_high,targeted,target_n,"
        "target_hits,target_rate,target_ci_low,target_ci_high,linf_mean,l2_mean";
  for (const auto& p : predictor_names()) os << "," << p;
  os << "\n";
  for (const auto& c : cells) {
    os << csv_field(c.source) << "," << csv_field(c.target) << "," << csv_field(c.attack) << ","
       << fmt(c.eps, 6) << "," << (c.white_box ? 1 : 0) << "," << c.n << "," << c.clean_correct << ","
       << c.fooled << "," << fmt(c.success_rate, 6) << "," << fmt(c.success_low, 6) << ","
       << fmt(c.success_high, 6) << "," << c.misclassified << "," << fmt(c.rate_all, 6) << ","
       << fmt(c.rate_all_low, 6) << "," << fmt(c.rate_all_high, 6) << "," << (c.targeted ? 1 : 0) << ",";
    if (c.targeted) {
      os << c.target_n << "," << c.target_hits << "," << fmt(c.target_rate, 6) << ","
         << fmt(c.target_low, 6) << "," << fmt(c.target_high, 6);
    } else {
      os << ",,,,";
    }
    os << "," << fmt(c.linf_mean, 6) << "," << fmt(c.l2_mean, 6);
    const auto it = pairs.find(c.source + "\t" + c.target);
    for (const auto& p : predictor_names()) {
      os << ",";
      if (it != pairs.end() && it->contains(p) && (*it)[p].is_number()) os << fmt((*it)[p].get<double>(), 6);
    }
    os << "\n";
  }
  return os.str();
}

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string transfer_heatmap_svg(const std::vector<TransferCell>& cells) {
  const auto sources = unique_in_order(cells, [](const TransferCell& c) -> const std::string& { return c.source; });
  const auto targets = unique_in_order(cells, [](const TransferCell& c) -> const std::string& { return c.target; });
  const auto panels = panels_of(cells);
  size_t longest = 4;
  for (const auto& s : sources) longest = std::max(longest, std::min<size_t>(s.size(), 28));
  const int cw = 78, ch = 30, left = int(longest) * 7 + 16, label_h = 70, title_h = 26, gap = 24;
  const int panel_h = title_h + label_h + ch * int(sources.size()) + gap;
  const int width = left + cw * int(std::max<size_t>(targets.size(), 1)) + 20;
  const int height = panel_h * int(panels.size()) + 30;
  auto trunc = [](const std::string& s) { return s.size() <= 28 ? s : s.substr(0, 27) + "~"; };
  std::ostringstream os;
  os << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
     << "\" viewBox=\"0 0 " << width << " " << height << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
     << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
     << "<text x=\"8\" y=\"18\" font-size=\"13\">Transfer success rate (rows: source, columns: target; "
        "outlined: white-box)</text>\n";
  int y0 = 30;
  for (const auto& [attack, eps] : panels) {
    os << "<text x=\"8\" y=\"" << y0 + 18 << "\" font-weight=\"bold\">" << xml_escape(attack) << ", eps "
       << fmt(eps, 4) << "</text>\n";
    const int grid_y = y0 + title_h + label_h;
    for (size_t t = 0; t < targets.size(); ++t) {
      const int x = left + int(t) * cw + cw / 2;
      os << "<text transform=\"translate(" << x << "," << grid_y - 6 << ") rotate(-35)\">"
         << "<title>" << xml_escape(targets[t]) << "</title>" << xml_escape(trunc(targets[t])) << "</text>\n";
    }
    for (size_t s = 0; s < sources.size(); ++s) {
      const int y = grid_y + int(s) * ch;
      os << "<text x=\"" << left - 8 << "\" y=\"" << y + ch / 2 + 4 << "\" text-anchor=\"end\"><title>"
         << xml_escape(sources[s]) << "</title>" << xml_escape(trunc(sources[s])) << "</text>\n";
      for (size_t t = 0; t < targets.size(); ++t) {
        const int x = left + int(t) * cw;
        const TransferCell* cell = nullptr;
        for (const auto& c : cells) {
          if (c.attack == attack && c.eps == eps && c.source == sources[s] && c.target == targets[t]) cell = &c;
        }
        if (!cell) {
          os << "<rect x=\"" << x << "\" y=\"" << y << "\" width=\"" << cw << "\" height=\"" << ch
             << "\" fill=\"#eeeeee\" stroke=\"white\"/>\n";
          continue;
        }
        const auto h = cell->headline();
        const double r = std::clamp(h.rate, 0.0, 1.0);
        // White -> dark red.
        const int red = int(std::lround(255 - r * (255 - 165))), green = int(std::lround(255 - r * (255 - 15))),
                  blue = int(std::lround(255 - r * (255 - 21)));
        os << "<rect x=\"" << x << "\" y=\"" << y << "\" width=\"" << cw << "\" height=\"" << ch
           << "\" fill=\"rgb(" << red << "," << green << "," << blue << ")\" stroke=\""
           << (cell->white_box ? "black" : "white") << "\" stroke-width=\""
           << (cell->white_box ? 2 : 1) << "\"><title>" << xml_escape(sources[s]) << " -> "
           << xml_escape(targets[t]) << ": " << fmt(h.rate, 3) << " (95% CI " << fmt(h.low, 3)
           << "-" << fmt(h.high, 3) << ", n " << h.n << ")</title></rect>\n";
        os << "<text x=\"" << x + cw / 2 << "\" y=\"" << y + ch / 2 + 4
           << "\" text-anchor=\"middle\" fill=\"" << (r > 0.6 ? "white" : "black") << "\">"
           << fmt(100 * h.rate, 1) << "%</text>\n";
      }
    }
    y0 += panel_h;
  }
  os << "</svg>\n";
  return os.str();
}

std::vector<NamedModel> load_named_models(const std::vector<io::ModelSource>& sources, const data::Dataset& ds,
                                          const std::string& spec, bool check_classes) {
  std::vector<NamedModel> out;
  std::map<std::string, int> seen;
  for (const auto& src : sources) {
    io::ModelSource s = src;
    if (s.dir.empty() && s.input_shape.empty()) s.input_shape = {ds.channels(), ds.height(), ds.width()};
    NamedModel m;
    m.loaded = io::load_model_source(s);
    io::check_model_for_data(m.loaded, ds, spec, check_classes);
    m.loaded.model->eval();
    std::string name = base_name(src);
    const int k = ++seen[name];
    if (k > 1) name += "#" + std::to_string(k);
    m.name = name;
    out.push_back(std::move(m));
  }
  return out;
}

std::string adversarial_cache_key(const std::vector<std::string>& ids,
                                  const std::string& data_sha256, const Json& resolved_options,
                                  int64_t batch_size) {
  const Json key = {{"format", "xfer-adv/1"},        {"surrogates", ids},
                    {"data", data_sha256},           {"options", resolved_options},
                    {"batch_size", batch_size},      {"xfer_version", version()},
                    {"revision", results_revision()}};
  return sha256_hex(key.dump()).substr(0, 32);
}

attack::AdversarialSet craft_or_reuse(const CraftContext& ctx, const std::vector<const NamedModel*>& surrogates,
                                      const std::string& attack_name, double eps, bool* cached) {
  XFER_CHECK(ctx.data != nullptr, "craft_or_reuse: no data");
  XFER_CHECK(!surrogates.empty(), "craft_or_reuse: no surrogate");
  const data::Dataset& ds = *ctx.data;
  attack::AttackSetOptions so;
  so.data = ctx.spec;
  so.attack = attack_name;
  so.base = ctx.base;
  so.overrides = attack::overrides_for(attack_name, ctx.overrides);  // fgsm stays one step
  so.overrides["eps"] = eps;
  so.batch_size = ctx.batch_size;
  so.device = ctx.device;
  const Json resolved = so.resolved().to_json();
  std::vector<std::string> ids;
  std::vector<io::LoadedModel> loaded;
  for (const auto* m : surrogates) {
    ids.push_back(m->loaded.card.id);
    loaded.push_back(m->loaded);
  }
  const std::string data_sha = ds.content_hash();
  const fs::path dir =
      fs::path(ctx.cache_dir) / adversarial_cache_key(ids, data_sha, resolved, ctx.batch_size);
  std::error_code ec;
  if (fs::is_directory(dir, ec)) {
    try {
      auto set = attack::load_adversarial_set(dir.string());
      std::vector<std::string> have;
      for (const auto& s : set.info.at("surrogates")) have.push_back(s.at("id").get<std::string>());
      if (have == ids && set.info.at("options") == resolved &&
          set.info.value("batch_size", int64_t{-1}) == ctx.batch_size &&
          set.info.at("data").at("sha256").get<std::string>() == data_sha &&
          set.index.equal(ds.index)) {
        if (cached) *cached = true;
        return set;
      }
    } catch (const std::exception&) {
      // A set that does not load or match is crafted again below.
    }
    so.overwrite = Overwrite::kYes;
  }
  fs::create_directories(ctx.cache_dir, ec);
  XFER_CHECK(!ec, ctx.cache_dir, ": cannot create the adversarial set cache: ", ec.message());
  so.out = dir.string();
  attack::run_attack_set(so, loaded, ds);
  if (cached) *cached = false;
  return attack::load_adversarial_set(dir.string());
}

torch::Tensor predict_classes(models::ClassifierImpl& model, const torch::Tensor& images, int64_t batch_size,
                              torch::Device device) {
  return predict_logits(model, images, batch_size, device).argmax(1);
}

void validate_attack_grid(const std::vector<std::string>& attacks, const std::vector<double>& eps,
                          const attack::AttackOptions& base, const Json& overrides) {
  XFER_CHECK_USAGE(!eps.empty(), "--eps: at least one budget");
  XFER_CHECK_USAGE(!overrides.contains("eps"), "eps is set per budget (--eps), not as an override");
  // A flag that every attack of the suite fixes would be dropped for all of
  // them: refuse it as `xfer attack` does (--attack fgsm --steps 10).
  bool all_fix = !attacks.empty();
  for (const auto& a : attacks) all_fix = all_fix && !attack::fixed_settings(a).empty();
  if (all_fix) {
    for (const auto& a : attacks) attack::check_fixed_settings(a, overrides);
  }
  for (const auto& a : attacks) {
    for (double e : eps) {
      auto o = attack::resolve(a, base, overrides);
      o.eps(e);
      o.validate();
    }
  }
}

std::pair<torch::Tensor, torch::Tensor> predictor_samples(const data::Dataset& ds,
                                                          const torch::Tensor& images, int64_t n) {
  const auto pick = data::balanced_positions(ds.labels, n);
  return {images.index_select(0, pick), ds.labels.index_select(0, pick)};
}

void check_label_space(const io::LoadedModel& model, const data::Dataset& ds, const std::string& spec,
                       const std::string& why) {
  if (io::label_space_matches(model, ds)) return;
  std::string have, want;
  for (const auto& n : model.config.class_names) have += (have.empty() ? "" : ", ") + n;
  for (const auto& n : ds.class_names) want += (want.empty() ? "" : ", ") + n;
  throw Error(str_cat(model.path, ": predicts the classes [", have, "], not those of ", spec, " [", want,
                      "]: ", why));
}

void check_label_space(const NamedModel& target, const data::Dataset& ds, const std::string& spec) {
  check_label_space(target.loaded, ds, spec, "success on a target needs the data's labels");
}

void prepare_results_dir(const std::string& dir, const std::string& marker, bool adv_marks) {
  std::error_code ec;
  const fs::path p(dir);
  if (!fs::exists(p, ec)) {
    const fs::path parent = p.has_parent_path() ? p.parent_path() : fs::path(".");
    XFER_CHECK(fs::is_directory(parent, ec), dir, ": the parent folder ", parent.string(),
               fs::exists(parent, ec) ? " is not a folder" : " does not exist");
    if (!dist::is_main()) return;  // rank 0 creates it; the others only check
    fs::create_directory(p, ec);
    XFER_CHECK(!ec, dir, ": cannot create: ", ec.message());
    return;
  }
  XFER_CHECK(fs::is_directory(p, ec), dir, ": exists and is not a directory");
  const bool empty = fs::is_empty(p, ec);
  XFER_CHECK(empty || fs::exists(p / marker, ec) || (adv_marks && fs::is_directory(p / "adv", ec)),
             dir, ": exists and is not an earlier output of this command (no ", marker,
             "); choose a new --out");
}

TransferResult run_transfer(const TransferOptions& o) {
  o.validate();
  const auto t0 = std::chrono::steady_clock::now();
  prepare_results_dir(o.out, "matrix.json");
  const torch::Device device = parse_device(o.device);
  data::Dataset ds = data::load(o.data);
  ds = data::limit_balanced(ds, o.limit);
  XFER_CHECK(ds.size() > 0, o.data, ": no samples");

  // Every model once, in order of first appearance (targets first: their names win).
  std::vector<io::ModelSource> unique;
  std::map<std::string, size_t> index_of;
  auto add = [&](const io::ModelSource& s) {
    const auto k = source_key(s);
    if (!index_of.count(k)) {
      index_of[k] = unique.size();
      unique.push_back(s);
    }
    return index_of[k];
  };
  std::vector<size_t> target_idx;
  for (const auto& t : o.targets) target_idx.push_back(add(t));
  std::vector<std::vector<size_t>> source_idx;
  for (const auto& s : o.sources) {
    source_idx.emplace_back();
    for (const auto& m : s.models) source_idx.back().push_back(add(m));
  }
  // Sources need only the data's image shape: a feature attack needs no
  // classes (a self-supervised base, a base of other classes).
  auto models = load_named_models(unique, ds, o.data, false);
  for (auto& m : models) m.loaded.model->to(device);
  for (size_t t : target_idx) {
    io::check_model_for_data(models[t].loaded, ds, o.data, true);
    check_label_space(models[t], ds, o.data);
  }
  // A source whose classes are not the data's (a base pre-trained on other
  // classes) has no meaningful label loss: only label-free attacks run on it.
  std::vector<bool> labels_match;
  for (size_t s = 0; s < source_idx.size(); ++s) {
    bool ok = !o.sources[s].label_free;
    for (size_t i : source_idx[s]) ok = ok && io::label_space_matches(models[i].loaded, ds);
    labels_match.push_back(ok);
  }
  Json skipped = Json::array();

  const auto images = ds.float_images();
  std::vector<torch::Tensor> clean_pred;
  Json targets_json = Json::array();
  for (size_t t : target_idx) {
    clean_pred.push_back(predict_classes(*models[t].loaded.model, images, o.batch_size, device));
    const int64_t correct = clean_pred.back().eq(ds.labels).sum().item<int64_t>();
    const auto ci = wilson_interval(correct, ds.size());
    targets_json.push_back({{"name", models[t].name},
                            {"id", models[t].loaded.card.id},
                            {"path", models[t].loaded.path},
                            {"arch", models[t].loaded.config.arch},
                            {"clean_accuracy", double(correct) / double(ds.size())},
                            {"clean_ci95", {ci.first, ci.second}},
                            {"clean_correct", correct},
                            {"n", ds.size()}});
  }
  std::vector<std::string> source_names;
  Json sources_json = Json::array();
  for (const auto& idx : source_idx) {
    std::string name;
    Json ms = Json::array();
    for (size_t i : idx) {
      name += (name.empty() ? "" : "+") + models[i].name;
      ms.push_back({{"name", models[i].name}, {"id", models[i].loaded.card.id}, {"path", models[i].loaded.path},
                    {"arch", models[i].loaded.config.arch}});
    }
    source_names.push_back(name);
    sources_json.push_back({{"name", name}, {"models", ms}});
  }

  CraftContext ctx;
  ctx.data = &ds;
  ctx.spec = o.data;
  ctx.cache_dir = o.cache.empty() ? (fs::path(o.out) / "adv").string() : o.cache;
  ctx.base = o.base;
  ctx.overrides = o.overrides;
  ctx.batch_size = o.batch_size;
  ctx.device = o.device;

  TransferResult r;
  double craft_seconds = 0;
  for (size_t s = 0; s < source_idx.size(); ++s) {
    std::vector<const NamedModel*> surrogates;
    for (size_t i : source_idx[s]) surrogates.push_back(&models[i]);
    for (const auto& a : o.attacks) {
      if (!labels_match[s] && !attack::options_for(a, o.base).feature()) {
        skipped.push_back({{"source", source_names[s]},
                           {"attack", a},
                           {"reason", o.sources[s].label_free
                                          ? "the source is marked label-free: only label-free attacks "
                                            "(feature) apply"
                                          : "the source predicts other classes than the data: only "
                                            "label-free attacks (feature) apply"}});
        continue;
      }
      for (double e : o.eps) {
        bool cached = false;
        const auto tc = std::chrono::steady_clock::now();
        auto set = craft_or_reuse(ctx, surrogates, a, e, &cached);
        craft_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - tc).count();
        ++(cached ? r.sets_cached : r.sets_crafted);
        // attack.json already holds the set's norms.
        const double linf = set.info.at("norms").at("linf_mean").get<double>();
        const double l2 = set.info.at("norms").at("l2_mean").get<double>();
        for (size_t t = 0; t < target_idx.size(); ++t) {
          auto& target = models[target_idx[t]];
          auto adv_pred = predict_classes(*target.loaded.model, set.images, o.batch_size, device);
          TransferCell c = transfer_cell(ds.labels, clean_pred[t], adv_pred, set.targets);
          c.source = source_names[s];
          c.target = target.name;
          c.attack = a;
          c.eps = e;
          c.white_box = source_idx[s].size() == 1 && models[source_idx[s][0]].loaded.card.id == target.loaded.card.id;
          c.linf_mean = linf;
          c.l2_mean = l2;
          r.cells.push_back(c);
        }
      }
    }
  }

  // Predictors on clean data, for every (single-model source, target) pair.
  Json pairs = Json::object();
  Json pairs_list = Json::array();
  Json correlations = Json::array();
  double predictor_seconds = 0;
  if (o.predictors) {
    const auto tp = std::chrono::steady_clock::now();
    // Named, not structured bindings: a lambda below captures them (C++17).
    const auto samples = predictor_samples(ds, images, o.predictor_samples);
    const torch::Tensor& px = samples.first;
    const torch::Tensor& py = samples.second;
    const int64_t k = px.size(0);
    std::map<size_t, ModelProbe> probes;
    auto probe = [&](size_t i) -> const ModelProbe& {
      auto it = probes.find(i);
      if (it == probes.end()) {
        it = probes
                 .emplace(i, probe_model(*models[i].loaded.model, px, py, o.batch_size, device,
                                         io::label_space_matches(models[i].loaded, ds)))
                 .first;
      }
      return it->second;
    };
    for (size_t s = 0; s < source_idx.size(); ++s) {
      if (source_idx[s].size() != 1) continue;
      for (size_t t = 0; t < target_idx.size(); ++t) {
        const auto p =
            pair_predictors(probe(source_idx[s][0]), probe(target_idx[t]), labels_match[s]);
        Json j = p.to_json();
        pairs[source_names[s] + "\t" + models[target_idx[t]].name] = j;
        j["source"] = source_names[s];
        j["target"] = models[target_idx[t]].name;
        j["samples"] = k;
        j["target_features"] = probe(target_idx[t]).features_are_logits ? "logits" : "penultimate";
        pairs_list.push_back(j);
      }
    }
    for (const auto& [attack, eps] : panels_of(r.cells)) {
      std::vector<double> rates;
      std::map<std::string, std::vector<double>> values;
      for (const auto& c : r.cells) {
        if (c.attack != attack || c.eps != eps || c.white_box) continue;
        const auto it = pairs.find(c.source + "\t" + c.target);
        if (it == pairs.end()) continue;
        // A rate over no sample (a target that gets every clean image wrong) is
        // not a measured 0: spearman drops it as it drops a missing predictor.
        const auto h = c.headline();
        rates.push_back(h.n > 0 ? h.rate : std::nan(""));
        for (const auto& name : predictor_names()) {
          const auto& v = (*it)[name];
          values[name].push_back(v.is_number() ? v.get<double>() : std::nan(""));
        }
      }
      Json corr = {{"attack", attack}, {"eps", eps}, {"pairs", rates.size()}};
      for (const auto& name : predictor_names()) {
        const double rho = spearman(values[name], rates);
        corr["spearman_" + name] = std::isfinite(rho) ? Json(rho) : Json(nullptr);
        corr["pairs_" + name] = spearman_pairs(values[name], rates);
      }
      correlations.push_back(corr);
    }
    predictor_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - tp).count();
  }

  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  Json cells = Json::array();
  for (const auto& c : r.cells) cells.push_back(c.to_json());
  // What each attack ran with (eps is per budget): the overrides alone do not
  // say which steps, step size or seed a preset chose.
  Json resolved = Json::object();
  for (const auto& a : o.attacks) {
    Json j = attack::resolve(a, o.base, o.overrides).to_json();
    j.erase("eps");
    resolved[a] = j;
  }
  r.matrix = {{"format", "xfer-transfer/1"},
              {"data", {{"spec", o.data}, {"sha256", ds.content_hash()}, {"samples", ds.size()}}},
              {"sources", sources_json},
              {"targets", targets_json},
              {"attacks", o.attacks},
              {"eps", o.eps},
              {"overrides", o.overrides},
              {"options", resolved},
              {"success_definition",
               "untargeted: misclassified after the attack among the samples the target classifies "
               "correctly when clean (rate_all: over all samples); targeted: classified as the target "
               "label; 95% Wilson intervals"},
              {"cells", cells},
              {"skipped", skipped},
              {"predictors",
               {{"definitions",
                 {{"gradient_alignment", "mean cosine of the input gradients of the two models' losses "
                                         "(Demontis et al. 2019)"},
                  {"cka", "linear CKA of penultimate features (Kornblith et al. 2019)"},
                  {"agreement", "fraction of clean samples with the same predicted class"}}},
                {"pairs", pairs_list},
                {"spearman_vs_success", correlations}}},
              {"timing",
               {{"seconds", r.seconds},
                {"craft_seconds", craft_seconds},
                {"predictor_seconds", predictor_seconds},
                {"sets_crafted", r.sets_crafted},
                {"sets_cached", r.sets_cached},
                {"threads", torch::get_num_threads()}}},
              {"cache", ctx.cache_dir},
              {"xfer_version", version()},
              {"created", utc_timestamp()}};
  if (dist::is_main()) {
    write_json((fs::path(o.out) / "matrix.json").string(), r.matrix);
    write_file_atomic((fs::path(o.out) / "matrix.csv").string(), transfer_csv(r.cells, pairs));
    write_file_atomic((fs::path(o.out) / "heatmap.svg").string(), transfer_heatmap_svg(r.cells));
  }
  return r;
}

std::string transfer_text(const TransferResult& r) {
  std::ostringstream os;
  const auto targets = unique_in_order(r.cells, [](const TransferCell& c) -> const std::string& { return c.target; });
  const auto sources = unique_in_order(r.cells, [](const TransferCell& c) -> const std::string& { return c.source; });
  size_t w = 6;
  for (const auto& s : sources) w = std::max(w, s.size());
  for (const auto& [attack, eps] : panels_of(r.cells)) {
    bool targeted = false;
    for (const auto& c : r.cells)
      targeted = targeted || (c.attack == attack && c.eps == eps && c.targeted);
    os << attack << ", eps " << fmt(eps, 4)
       << (targeted
               ? ": targeted success rate (classified as the target; samples not already of it)"
               : ": success rate on clean-correct samples")
       << " (* white-box)\n";
    os << std::string(w + 2, ' ');
    for (const auto& t : targets) os << std::setw(14) << (t.size() > 13 ? t.substr(0, 12) + "~" : t);
    os << "\n";
    for (const auto& s : sources) {
      os << "  " << std::left << std::setw(int(w)) << s << std::right;
      for (const auto& t : targets) {
        std::string v = "-";
        for (const auto& c : r.cells) {
          if (c.attack == attack && c.eps == eps && c.source == s && c.target == t) {
            v = fmt(c.headline().rate, 3) + (c.white_box ? "*" : "");
          }
        }
        os << std::setw(14) << v;
      }
      os << "\n";
    }
  }
  const auto& corr = r.matrix.at("predictors").at("spearman_vs_success");
  for (const auto& c : corr) {
    os << "Spearman vs success (" << c.at("attack").get<std::string>() << ", eps " << fmt(c.at("eps").get<double>(), 4)
       << ", " << c.at("pairs").get<int64_t>() << " pairs):";
    for (const auto& name : predictor_names()) {
      const auto& v = c.at("spearman_" + name);
      os << " " << name << " " << (v.is_number() ? fmt(v.get<double>(), 3) : std::string("n/a"));
      // Fewer when the predictor does not apply to some pairs (a label-free source's).
      const int64_t n = c.at("pairs_" + name).get<int64_t>();
      if (n != c.at("pairs").get<int64_t>()) os << " (" << n << " pairs)";
    }
    os << "\n";
  }
  for (const auto& k : r.matrix.at("skipped")) {
    os << "skipped " << k.at("attack").get<std::string>() << " on " << k.at("source").get<std::string>()
       << ": " << k.at("reason").get<std::string>() << "\n";
  }
  os << "crafted " << r.sets_crafted << " adversarial sets, reused " << r.sets_cached << " from the cache; "
     << fmt(r.seconds, 1) << " s\n";
  return os.str();
}

}  // namespace xfer::eval
