#include "xfer/eval/audit.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include "xfer/core/dist.h"
#include "xfer/core/error.h"
#include "xfer/core/fs.h"
#include "xfer/core/runtime.h"
#include "xfer/data/spec.h"
#include "xfer/eval/metrics.h"
#include "xfer/eval/predictors.h"
#include "xfer/eval/transfer.h"

namespace fs = std::filesystem;

namespace xfer::eval {
namespace {

// The card of a parent, if its directory can be found: the recorded path, or
// a folder of that name beside the child (a tree of models moved together).
std::optional<std::pair<io::ModelCard, std::string>> read_parent_card(const io::ModelCard::Parent& parent,
                                                                      const std::string& child_path) {
  if (parent.path.empty()) return std::nullopt;
  std::vector<fs::path> candidates = {fs::path(parent.path)};
  if (!child_path.empty()) {
    fs::path child(child_path);
    if (child.filename().empty()) child = child.parent_path();
    candidates.push_back(child.parent_path() / fs::path(parent.path).filename());
  }
  for (const auto& dir : candidates) {
    std::error_code ec;
    const auto card_path = dir / "card.json";
    if (!fs::is_regular_file(card_path, ec)) continue;
    try {
      auto card = io::ModelCard::from_json(read_json(card_path.string()), card_path.string());
      if (card.id == parent.id) return std::make_pair(card, dir.string());
    } catch (const std::exception&) {
      // An unreadable card ends the walk like a missing one.
    }
  }
  return std::nullopt;
}

std::string pct(double v) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(1) << 100 * v << "%";
  return os.str();
}

std::string num(double v, int precision = 3) {
  if (!std::isfinite(v)) return "n/a";
  std::ostringstream os;
  os << std::fixed << std::setprecision(precision) << v;
  return os.str();
}

std::string short_id(const std::string& id) { return id.substr(0, 12); }

}  // namespace

Json Lineage::to_json() const { return {{"ids", ids}, {"paths", paths}, {"complete", complete}}; }

Lineage lineage_of(const io::LoadedModel& model, int max_depth) {
  Lineage l;
  l.ids.push_back(model.card.id);
  l.paths.push_back(model.path);
  std::optional<io::ModelCard::Parent> parent = model.card.parent;
  std::string child_path = model.path;
  std::set<std::string> seen = {model.card.id};
  for (int depth = 0; parent && depth < max_depth; ++depth) {
    if (seen.count(parent->id)) break;  // a cycle: cards that lie
    seen.insert(parent->id);
    l.ids.push_back(parent->id);
    auto found = read_parent_card(*parent, child_path);
    if (!found) {
      l.paths.push_back(parent->path);
      l.complete = false;
      return l;
    }
    l.paths.push_back(found->second);
    child_path = found->second;
    parent = found->first.parent;
  }
  if (parent) l.complete = false;
  return l;
}

std::string relation_name(Relation r) {
  switch (r) {
    case Relation::kSelf: return "self";
    case Relation::kAncestor: return "ancestor";
    case Relation::kDescendant: return "descendant";
    case Relation::kSibling: return "sibling";
    case Relation::kRelative: return "relative";
    case Relation::kUnrelated: return "unrelated";
  }
  return "unrelated";
}

Json RelationInfo::to_json() const {
  return {{"relation", relation_name(relation)},
          {"common_ancestor", common_ancestor.empty() ? Json(nullptr) : Json(common_ancestor)},
          {"proxy_steps", proxy_steps},
          {"target_steps", target_steps}};
}

RelationInfo classify_relation(const Lineage& proxy, const Lineage& target) {
  RelationInfo r;
  XFER_CHECK(!proxy.ids.empty() && !target.ids.empty(), "classify_relation: empty lineage");
  // Nearest shared id: the smallest proxy_steps + target_steps.
  int best = -1;
  for (size_t i = 0; i < proxy.ids.size(); ++i) {
    for (size_t j = 0; j < target.ids.size(); ++j) {
      if (proxy.ids[i] == target.ids[j] && (best < 0 || int(i + j) < best)) {
        best = int(i + j);
        r.common_ancestor = proxy.ids[i];
        r.proxy_steps = int(i);
        r.target_steps = int(j);
      }
    }
  }
  if (best < 0) {
    r.relation = Relation::kUnrelated;
  } else if (r.proxy_steps == 0 && r.target_steps == 0) {
    r.relation = Relation::kSelf;
  } else if (r.proxy_steps == 0) {
    r.relation = Relation::kAncestor;
  } else if (r.target_steps == 0) {
    r.relation = Relation::kDescendant;
  } else if (r.proxy_steps == 1 && r.target_steps == 1) {
    r.relation = Relation::kSibling;
  } else {
    r.relation = Relation::kRelative;
  }
  return r;
}

void AuditOptions::validate() const {
  target.validate(true);
  XFER_CHECK_USAGE(!proxies.empty(), "--proxies is required (the models an attacker may hold)");
  for (const auto& p : proxies) p.validate(true);
  XFER_CHECK_USAGE(!data.empty(), "--data is required");
  XFER_CHECK_USAGE(!out.empty(), "--out is required");
  // Every proxy must get at least one cell to rank: the feature attack on
  // ancestors alone would leave an unrelated proxy with none.
  XFER_CHECK_USAGE(!attacks.empty(), "--attack: at least one attack");
  std::vector<std::string> all = attacks;
  all.push_back("feature");  // on ancestors
  all.push_back("pgd");      // the white-box reference
  validate_attack_grid(all, eps, base, overrides);
  XFER_CHECK_USAGE(limit >= 0, "--limit must be >= 0, got ", limit);
  XFER_CHECK_USAGE(batch_size >= 1, "--batch-size must be >= 1, got ", batch_size);
  XFER_CHECK_USAGE(predictor_samples >= 1, "--predictor-samples must be >= 1, got ", predictor_samples);
  parse_device(device);
}

AuditResult run_audit(const AuditOptions& o) {
  o.validate();
  const auto t0 = std::chrono::steady_clock::now();
  prepare_results_dir(o.out, "audit.json");
  const torch::Device device = parse_device(o.device);
  data::Dataset ds = data::load(o.data);
  ds = data::limit_balanced(ds, o.limit);
  XFER_CHECK(ds.size() > 0, o.data, ": no samples");

  std::vector<io::ModelSource> sources = {o.target};
  for (const auto& p : o.proxies) sources.push_back(p);
  // Proxies need only the data's image shape: a feature attack needs no
  // classes (a self-supervised base, a base of other classes).
  auto models = load_named_models(sources, ds, o.data, false);
  for (auto& m : models) m.loaded.model->to(device);
  const NamedModel& target = models[0];
  io::check_model_for_data(target.loaded, ds, o.data, true);
  check_label_space(target, ds, o.data);
  const bool black_box = !o.target.torchscript.empty() || !o.target.weights.empty();
  const Lineage target_lineage = lineage_of(target.loaded);

  const auto images = ds.float_images();
  const auto clean_pred = predict_classes(*target.loaded.model, images, o.batch_size, device);
  const int64_t clean_correct = clean_pred.eq(ds.labels).sum().item<int64_t>();
  const auto clean_ci = wilson_interval(clean_correct, ds.size());

  CraftContext ctx;
  ctx.data = &ds;
  ctx.spec = o.data;
  ctx.cache_dir = o.cache.empty() ? (fs::path(o.out) / "adv").string() : o.cache;
  ctx.base = o.base;
  ctx.overrides = o.overrides;
  ctx.batch_size = o.batch_size;
  ctx.device = o.device;

  AuditResult result;
  auto run_cell = [&](const NamedModel& source, const std::string& attack, double eps) {
    bool cached = false;
    auto set = craft_or_reuse(ctx, {&source}, attack, eps, &cached);
    ++(cached ? result.sets_cached : result.sets_crafted);
    auto adv_pred = predict_classes(*target.loaded.model, set.images, o.batch_size, device);
    TransferCell c = transfer_cell(ds.labels, clean_pred, adv_pred, set.targets);
    c.source = source.name;
    c.target = target.name;
    c.attack = attack;
    c.eps = eps;
    c.white_box = source.loaded.card.id == target.loaded.card.id;
    c.linf_mean = set.info.at("norms").at("linf_mean").get<double>();  // from attack.json
    c.l2_mean = set.info.at("norms").at("l2_mean").get<double>();
    return c;
  };
  auto rate = [](const TransferCell& c) { return c.headline().rate; };

  // Reference: white-box PGD on the target itself.
  Json reference = Json::array();
  std::optional<TransferCell::Rate> reference_rate;  // at the headline budget
  if (o.white_box_reference) {
    for (double e : o.eps) {
      const TransferCell c = run_cell(target, "pgd", e);
      if (!reference_rate) reference_rate = c.headline();
      reference.push_back(c.to_json());
    }
  }

  // Predictors on clean data.
  const auto samples = predictor_samples(ds, images, o.predictor_samples);
  const torch::Tensor& px = samples.first;
  const torch::Tensor& py = samples.second;
  const int64_t k = px.size(0);
  const ModelProbe target_probe = probe_model(*target.loaded.model, px, py, o.batch_size, device);

  struct ProxyReport {
    const NamedModel* model;
    Lineage lineage;
    RelationInfo relation;
    PairPredictors predictors;
    std::vector<TransferCell> cells;
    std::vector<const TransferCell*> best;  ///< per eps
    bool labels_match = true;
  };
  std::vector<ProxyReport> reports;
  for (size_t i = 1; i < models.size(); ++i) {
    ProxyReport p;
    p.model = &models[i];
    p.lineage = lineage_of(models[i].loaded);
    p.relation = black_box ? RelationInfo{} : classify_relation(p.lineage, target_lineage);
    p.labels_match = io::label_space_matches(models[i].loaded, ds);
    p.predictors = pair_predictors(
        probe_model(*models[i].loaded.model, px, py, o.batch_size, device, p.labels_match),
        target_probe, p.labels_match);
    std::vector<std::string> suite;
    // A proxy with other classes (a base pre-trained on another task) has no
    // meaningful label loss: only the label-free feature attack applies.
    for (const auto& a : o.attacks) {
      if (p.labels_match || attack::options_for(a, o.base).feature()) suite.push_back(a);
    }
    const bool ancestor = p.relation.relation == Relation::kAncestor;
    if (((ancestor && o.feature_on_ancestors) || !p.labels_match) &&
        std::find(suite.begin(), suite.end(), "feature") == suite.end()) {
      suite.push_back("feature");
    }
    for (const auto& a : suite) {
      for (double e : o.eps) p.cells.push_back(run_cell(models[i], a, e));
    }
    reports.push_back(std::move(p));
  }
  for (auto& p : reports) {
    for (double e : o.eps) {
      const TransferCell* best = nullptr;
      for (const auto& c : p.cells) {
        if (c.eps == e && (!best || rate(c) > rate(*best))) best = &c;
      }
      p.best.push_back(best);
    }
  }
  // Rank by the best success at the headline budget (ties: the narrower CI first).
  std::vector<size_t> order(reports.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const auto x = reports[a].best[0]->headline(), y = reports[b].best[0]->headline();
    if (x.rate != y.rate) return x.rate > y.rate;
    return x.high - x.low < y.high - y.low;
  });

  // Lineage vs risk: the relation groups at the headline budget.
  std::map<std::string, std::vector<size_t>> groups;
  for (size_t i = 0; i < reports.size(); ++i) groups[relation_name(reports[i].relation.relation)].push_back(i);
  Json by_relation = Json::array();
  std::vector<std::pair<double, std::string>> group_means;
  for (const auto& [name, members] : groups) {
    int64_t fooled = 0, correct = 0;
    double mean = 0;
    for (size_t i : members) {
      const auto* c = reports[i].best[0];
      const auto h = c->headline();
      fooled += h.hits;
      correct += h.n;
      mean += h.rate;
    }
    mean /= double(members.size());
    // The proxies attack the same images: one proxy's worth of trials, not the sum.
    auto ci = correct
                  ? pooled_wilson_interval(fooled, correct, static_cast<int64_t>(members.size()))
                  : std::make_pair(0.0, 1.0);
    Json names = Json::array();
    for (size_t i : members) names.push_back(reports[i].model->name);
    by_relation.push_back({{"relation", name},
                           {"proxies", names},
                           {"mean_best_success", mean},
                           {"pooled_success", correct ? double(fooled) / double(correct) : 0.0},
                           {"pooled_ci95", {ci.first, ci.second}},
                           // Over every proxy of the group; the interval counts one proxy's worth.
                           {"hits", fooled},
                           {"n", correct}});
    group_means.emplace_back(mean, name);
  }
  std::sort(group_means.rbegin(), group_means.rend());

  // Predictors vs measured risk across proxies.
  Json correlations = Json::object(), correlation_pairs = Json::object();
  std::vector<double> risk;
  for (const auto& p : reports) {
    const auto h = p.best[0]->headline();  // a rate over no sample is not a measured 0
    risk.push_back(h.n > 0 ? h.rate : std::nan(""));
  }
  for (const auto& name : predictor_names()) {
    std::vector<double> v;
    for (const auto& p : reports) v.push_back(predictor_value(p.predictors, name));
    const double rho = spearman(v, risk);
    correlations[name] = std::isfinite(rho) ? Json(rho) : Json(nullptr);
    correlation_pairs[name] = spearman_pairs(v, risk);
  }

  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  // audit.json
  Json proxies = Json::array();
  for (size_t rank = 0; rank < order.size(); ++rank) {
    const auto& p = reports[order[rank]];
    Json cells = Json::array();
    for (const auto& c : p.cells) cells.push_back(c.to_json());
    Json curve = Json::array();
    for (size_t e = 0; e < o.eps.size(); ++e) {
      const auto* b = p.best[e];
      const auto h = b->headline();
      curve.push_back({{"eps", o.eps[e]},
                       {"attack", b->attack},
                       {"success", h.rate},
                       {"ci95", {h.low, h.high}},
                       {"hits", h.hits},
                       {"n", h.n}});
    }
    proxies.push_back({{"rank", rank + 1},
                       {"name", p.model->name},
                       {"id", p.model->loaded.card.id},
                       {"path", p.model->loaded.path},
                       {"arch", p.model->loaded.config.arch},
                       {"relation", p.relation.to_json()},
                       {"same_classes_as_data", p.labels_match},
                       {"lineage", p.lineage.to_json()},
                       {"predictors", p.predictors.to_json()},
                       {"best_by_eps", curve},
                       {"cells", cells}});
  }
  const auto& top = reports[order[0]];
  const auto* top_cell = top.best[0];
  const auto top_rate = top_cell->headline();
  std::vector<std::string> suite_names = o.attacks;
  if (o.feature_on_ancestors) suite_names.push_back("feature (on ancestors)");
  result.audit = {
      {"format", "xfer-audit/1"},
      {"target",
       {{"name", target.name},
        {"id", target.loaded.card.id},
        {"path", target.loaded.path},
        {"arch", target.loaded.config.arch},
        {"black_box", black_box},
        {"lineage", target_lineage.to_json()},
        {"clean_accuracy", double(clean_correct) / double(ds.size())},
        {"clean_ci95", {clean_ci.first, clean_ci.second}},
        {"clean_correct", clean_correct},
        {"n", ds.size()}}},
      {"data", {{"spec", o.data}, {"sha256", ds.content_hash()}, {"samples", ds.size()}}},
      {"eps", o.eps},
      {"headline_eps", o.eps.front()},
      {"attacks", suite_names},
      {"overrides", o.overrides},
      {"white_box_reference", reference},
      {"most_dangerous",
       {{"proxy", top.model->name},
        {"relation", relation_name(top.relation.relation)},
        {"attack", top_cell->attack},
        {"eps", top_cell->eps},
        {"success", top_rate.rate},
        {"ci95", {top_rate.low, top_rate.high}},
        {"hits", top_rate.hits},
        {"n", top_rate.n}}},
      {"proxies", proxies},
      {"by_relation", by_relation},
      {"predictor_spearman_vs_success", correlations},
      {"predictor_spearman_proxies", correlation_pairs},
      {"timing",
       {{"seconds", result.seconds},
        {"sets_crafted", result.sets_crafted},
        {"sets_cached", result.sets_cached},
        {"threads", torch::get_num_threads()}}},
      {"cache", ctx.cache_dir},
      {"xfer_version", version()},
      {"created", utc_timestamp()}};

  // summary.md
  std::ostringstream md;
  md << "# xfer audit of " << target.name << "\n\n";
  md << "- Target: `" << target.loaded.path << "` (" << target.loaded.config.arch << ", id "
     << short_id(target.loaded.card.id) << ")";
  if (black_box) {
    md << ", a black box with no lineage record: every proxy counts as unrelated";
  } else {
    md << ", " << (target_lineage.ids.size() - 1) << " known ancestor(s)"
       << (target_lineage.complete ? "" : " (the chain ends at a parent whose card could not be read)");
  }
  md << "\n- Data: `" << o.data << "`, " << ds.size() << " samples; the target classifies "
     << clean_correct << " correctly (" << pct(double(clean_correct) / double(ds.size())) << ")\n";
  md << "- Budgets: " << o.base.norm() << " eps";
  for (double e : o.eps) md << " " << num(e, 4);
  md << " (headline " << num(o.eps.front(), 4) << "); attacks:";
  for (const auto& a : suite_names) md << " " << a;
  if (o.base.target() == "none") {
    md << "\n- Success = misclassified after the attack, among the samples the target classifies "
          "correctly; 95% Wilson intervals\n\n";
  } else {
    md << "\n- Success = classified as the attacker's target (" << o.base.target()
       << "), among the samples not already of it; for the label-free feature attack, "
          "misclassified among the samples the target classifies correctly; 95% Wilson "
          "intervals\n\n";
  }
  md << "## Most dangerous proxy\n\n**" << top.model->name << "** ("
     << relation_name(top.relation.relation) << "): " << top_cell->attack << " at eps "
     << num(top_cell->eps, 4)
     << (top_cell->targeted ? " steers the target to the attacker's class on "
                            : " fools the target on ")
     << pct(top_rate.rate) << " (95% CI " << pct(top_rate.low) << "-" << pct(top_rate.high)
     << ") of " << top_rate.n << " samples.";
  if (reference_rate) {
    md << " For scale, white-box PGD on the target itself: " << pct(reference_rate->rate) << ".";
  }
  md << "\n\n## Ranking at eps " << num(o.eps.front(), 4) << "\n\n";
  md << "| rank | proxy | arch | relation | best attack | success | 95% CI | grad. alignment | CKA | agreement |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n";
  for (size_t rank = 0; rank < order.size(); ++rank) {
    const auto& p = reports[order[rank]];
    const auto* b = p.best[0];
    const auto h = b->headline();
    md << "| " << rank + 1 << " | " << p.model->name << " | " << p.model->loaded.config.arch
       << " | " << relation_name(p.relation.relation) << (p.labels_match ? "" : " (other classes)")
       << " | " << b->attack << " | " << pct(h.rate) << " | " << pct(h.low) << "-" << pct(h.high)
       << " | " << num(p.predictors.gradient_alignment) << " | "
       << num(p.predictors.cka) << " | " << num(p.predictors.agreement) << " |\n";
  }
  if (o.eps.size() > 1) {
    std::vector<size_t> by_eps(o.eps.size());
    for (size_t e = 0; e < by_eps.size(); ++e) by_eps[e] = e;
    std::stable_sort(by_eps.begin(), by_eps.end(), [&](size_t a, size_t b) { return o.eps[a] < o.eps[b]; });
    md << "\n## Success vs budget (best attack per proxy)\n\n| proxy |";
    for (size_t e : by_eps) md << " eps " << num(o.eps[e], 4) << " |";
    md << "\n|---|";
    for (size_t e = 0; e < o.eps.size(); ++e) md << "---|";
    md << "\n";
    for (size_t i : order) {
      md << "| " << reports[i].model->name << " |";
      for (size_t e : by_eps) md << " " << pct(rate(*reports[i].best[e])) << " |";
      md << "\n";
    }
  }
  md << "\n## Lineage and risk\n\n";
  for (const auto& [mean, name] : group_means) {
    size_t n = groups[name].size();
    md << "- " << name << ": mean best success " << pct(mean) << " (" << n << " prox" << (n == 1 ? "y" : "ies")
       << ")\n";
  }
  {
    // Every related group against the unrelated one: naming only the most exposed group read as if
    // all of the lineage were above the unrelated models when some of it was below.
    double unrelated = -1;
    for (const auto& g : by_relation) {
      if (g["relation"] == "unrelated") unrelated = g["mean_best_success"].get<double>();
    }
    std::vector<std::string> above, below;
    for (const auto& [mean, name] : group_means) {  // most exposed first
      if (name == "unrelated" || name == "self") continue;
      (mean > unrelated ? above : below).push_back(name + " " + pct(mean));
    }
    auto join = [](const std::vector<std::string>& v) {
      std::string s;
      for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
      return s;
    };
    if (unrelated >= 0 && !(above.empty() && below.empty())) {
      md << "\n";
      if (below.empty()) {
        md << "Proxies that share the target's lineage fool it more often than unrelated ones ("
           << join(above);
      } else if (above.empty()) {
        md << "In this audit, sharing the target's lineage did not raise the risk (" << join(below);
      } else {
        md << "Part of the target's lineage fools it more often than unrelated proxies ("
           << join(above) << "), part less often (" << join(below);
      }
      md << "; unrelated " << pct(unrelated) << "). A group of few proxies, or one limited to the "
         << "label-free feature attack (a base of other classes), is a weak comparison.\n";
    }
  }
  md << "\n## Predictors (clean data, " << k << " samples)\n\nSpearman correlation with the best success over "
     << reports.size() << " proxies:";
  bool too_few = false;
  for (const auto& name : predictor_names()) {
    const auto& v = correlations[name];
    const int64_t n = correlation_pairs[name].get<int64_t>();
    md << " " << name << " " << (v.is_number() ? num(v.get<double>()) : std::string("n/a"));
    // A predictor that does not apply to a proxy (a label-free one's gradients) ranks fewer.
    if (n != static_cast<int64_t>(reports.size())) md << " (" << n << " proxies)";
    too_few = too_few || n < 3;
  }
  md << (too_few ? " (a correlation needs at least 3 proxies)" : "") << ".\n";
  md << "\nCrafted " << result.sets_crafted << " adversarial sets, reused " << result.sets_cached << "; "
     << num(result.seconds, 1) << " s.\n";
  result.summary = md.str();
  result.audit["summary"] = result.summary;
  if (dist::is_main()) {
    write_json((fs::path(o.out) / "audit.json").string(), result.audit);
    write_file_atomic((fs::path(o.out) / "summary.md").string(), result.summary);
  }
  return result;
}

}  // namespace xfer::eval
