#include "xfer/train/freeze.h"

#include <cmath>
#include <cstdio>
#include <iomanip>
#include <map>
#include <set>
#include <sstream>

#include "xfer/core/error.h"
#include "xfer/core/parse.h"

namespace xfer::train {
namespace {

bool in_layer(const std::string& layer, const std::string& param) {
  return models::ClassifierImpl::stage_of({{"", {layer}}}, param) == 0;
}

}  // namespace

Strategy Strategy::parse(const std::string& text) {
  Strategy s;
  auto colon = text.find(':');
  std::string name = text.substr(0, colon);
  std::string arg = colon == std::string::npos ? "" : text.substr(colon + 1);
  auto no_arg = [&] {
    XFER_CHECK_USAGE(colon == std::string::npos, "--strategy ", name, " takes no argument, got '",
                     text, "'");
  };
  auto need_arg = [&](const char* form) {
    XFER_CHECK_USAGE(colon != std::string::npos && !arg.empty(), "--strategy ", name,
                     " needs an argument: ", form);
  };
  if (name == "scratch") {
    no_arg();
    s.kind = Kind::kScratch;
  } else if (name == "linear-probe") {
    no_arg();
    s.kind = Kind::kLinearProbe;
  } else if (name == "full") {
    no_arg();
    s.kind = Kind::kFull;
  } else if (name == "lp-ft") {
    no_arg();
    s.kind = Kind::kLpFt;
  } else if (name == "partial") {
    need_arg("partial:N (last N backbone stages trainable)");
    s.kind = Kind::kPartial;
    s.stages = parse_integer(arg, "--strategy partial:N");
    XFER_CHECK_USAGE(s.stages >= 1, "--strategy partial:N needs N >= 1, got ", s.stages);
  } else if (name == "lora") {
    need_arg("lora:R (adapter rank)");
    s.kind = Kind::kLora;
    s.rank = parse_integer(arg, "--strategy lora:R");
    XFER_CHECK_USAGE(s.rank >= 1 && s.rank <= 4096, "--strategy lora:R needs R in [1, 4096], got ",
                     s.rank);
  } else if (name == "l2-sp") {
    need_arg("l2-sp:ALPHA (penalty weight)");
    s.kind = Kind::kL2Sp;
    s.alpha = parse_number(arg, "--strategy l2-sp:ALPHA");
    XFER_CHECK_USAGE(std::isfinite(s.alpha) && s.alpha >= 0,
                     "--strategy l2-sp:ALPHA needs ALPHA >= 0, got ", arg);
  } else {
    throw UsageError(str_cat("--strategy: unknown strategy '", text,
                             "' (expected linear-probe, full, partial:N, lp-ft, lora:R or l2-sp:ALPHA)"));
  }
  return s;
}

std::string Strategy::str() const {
  switch (kind) {
    case Kind::kScratch: return "scratch";
    case Kind::kLinearProbe: return "linear-probe";
    case Kind::kFull: return "full";
    case Kind::kPartial: return str_cat("partial:", stages);
    case Kind::kLpFt: return "lp-ft";
    case Kind::kLora: return str_cat("lora:", rank);
    case Kind::kL2Sp: {
      // The shortest decimal that reads back as alpha: the card's strategy reproduces the run.
      for (int digits = 6;; ++digits) {
        std::ostringstream os;
        os << std::setprecision(digits) << alpha;
        if (digits >= 17 || std::stod(os.str()) == alpha) return "l2-sp:" + os.str();
      }
    }
  }
  return "?";
}

void FreezeOptions::validate() const {
  XFER_CHECK_USAGE(trainable_stages() >= -1, "freeze: trainable stages must be >= -1");
  XFER_CHECK_USAGE(bn_mode() == "auto" || bn_mode() == "eval" || bn_mode() == "train",
                   "--bn-mode: expected auto, eval or train, got '", bn_mode(), "'");
  XFER_CHECK_USAGE(std::isfinite(layer_decay()) && layer_decay() > 0 && layer_decay() <= 1,
                   "--layer-decay must be in (0, 1], got ", layer_decay());
  XFER_CHECK_USAGE(std::isfinite(head_lr_scale()) && head_lr_scale() > 0,
                   "--head-lr-scale must be > 0, got ", head_lr_scale());
  XFER_CHECK_USAGE(std::isfinite(weight_decay()) && weight_decay() >= 0,
                   "--weight-decay must be >= 0, got ", weight_decay());
}

bool takes_weight_decay(const std::string& name, const torch::Tensor& p) {
  if (p.dim() <= 1) return false;
  for (const char* token : {"cls_token", "dist_token", "pos_embed"}) {
    const std::string t = token;
    if (name.size() < t.size() || name.compare(name.size() - t.size(), t.size(), t) != 0) continue;
    const size_t at = name.size() - t.size();
    if (at == 0 || name[at - 1] == '.' || name[at - 1] == '_') return false;
  }
  return true;
}

FreezePlan plan_freeze(models::ClassifierImpl& model, const FreezeOptions& o) {
  o.validate();
  const auto stages = model.param_stages();
  XFER_CHECK(!stages.empty(), "freeze: the model has no parameters");
  const int64_t head = static_cast<int64_t>(stages.size()) - 1;
  XFER_CHECK_USAGE(o.trainable_stages() <= head, "partial:", o.trainable_stages(), ": the model has only ",
                   head, " backbone stages");
  const auto bn_layers = model.batch_norm_layers();

  FreezePlan plan;
  // Keyed by stage index, not name: two stages never share a group.
  std::map<std::pair<int64_t, bool>, size_t> group_index;
  std::map<std::string, bool> param_trainable;
  std::vector<bool> stage_trains(stages.size(), false);  // a weight of its own trains (not LoRA)
  for (const auto& item : model.named_parameters(true)) {
    const std::string& name = item.key();
    const auto& p = item.value();
    int64_t s = models::ClassifierImpl::stage_of(stages, name);
    XFER_CHECK(s >= 0, "freeze: parameter '", name, "' belongs to no stage of the model");
    const bool lora = name.compare(0, 5, "lora.") == 0;
    bool trainable;
    if (s == head) {
      trainable = true;
    } else if (o.adapters_only()) {
      trainable = lora;
    } else {
      trainable = o.trainable_stages() < 0 || s >= head - o.trainable_stages();
    }
    param_trainable[name] = trainable;
    if (trainable && !lora) stage_trains[size_t(s)] = true;
    const bool decay = takes_weight_decay(name, p);
    auto it = group_index.find({s, decay});
    if (it == group_index.end()) {
      GroupPlan g;
      g.name = stages[s].name + (decay ? "" : "/no-decay");
      g.head = s == head;
      g.lr_scale = s == head ? o.head_lr_scale() : std::pow(o.layer_decay(), double(head - s));
      g.weight_decay = decay ? o.weight_decay() : 0.0;
      it = group_index.emplace(std::make_pair(s, decay), plan.groups.size()).first;
      plan.groups.push_back(std::move(g));
    }
    auto& g = plan.groups[it->second];
    g.params.push_back(name);
    g.parameters += p.numel();
    plan.parameters += p.numel();
    if (trainable) {
      g.tensors.push_back(p);
      g.trainable += p.numel();
      plan.trainable += p.numel();
    }
  }

  // BatchNorm layers to pin, and each group's BN mode.
  std::map<std::string, bool> pinned;
  for (const auto& layer : bn_layers) {
    bool frozen = true, has_params = false;
    for (const auto& [name, t] : param_trainable) {
      if (!in_layer(layer, name)) continue;
      has_params = true;
      if (t) frozen = false;
    }
    if (!has_params) {
      // BatchNorm without affine weights (TorchScript): its stage decides; outside every stage,
      // whether the whole backbone trains.
      const int64_t s = models::ClassifierImpl::stage_of(stages, layer);
      frozen = s >= 0 ? !stage_trains[size_t(s)] : o.adapters_only() || o.trainable_stages() >= 0;
    }
    bool pin = o.bn_mode() == "eval" || (o.bn_mode() == "auto" && frozen);
    pinned[layer] = pin;
    if (pin) plan.bn_eval.push_back(layer);
  }
  for (auto& g : plan.groups) {
    int evals = 0, trains = 0;
    for (const auto& name : g.params) {
      for (const auto& [layer, pin] : pinned) {
        if (in_layer(layer, name)) (pin ? evals : trains)++;
      }
    }
    g.bn = evals + trains == 0 ? "-" : trains == 0 ? "eval" : evals == 0 ? "train" : "mixed";
  }
  return plan;
}

FreezePlan apply_freeze(models::ClassifierImpl& model, const FreezeOptions& options) {
  auto plan = plan_freeze(model, options);
  std::set<const void*> trainable;
  for (const auto& g : plan.groups) {
    for (const auto& t : g.tensors) trainable.insert(t.unsafeGetTensorImpl());
  }
  for (auto& p : model.parameters(true)) p.set_requires_grad(trainable.count(p.unsafeGetTensorImpl()) > 0);
  model.pin_eval(plan.bn_eval);
  return plan;
}

std::string FreezePlan::text(double base_lr) const {
  std::ostringstream os;
  char line[256];
  std::snprintf(line, sizeof line, "%-28s %7s %11s %11s %10s %8s %6s\n", "group", "tensors",
                "parameters", "trainable", "lr", "wd", "bn");
  os << line;
  for (const auto& g : groups) {
    std::snprintf(line, sizeof line, "%-28s %7zu %11lld %11lld %10.3g %8.3g %6s\n", g.name.c_str(),
                  g.params.size(), static_cast<long long>(g.parameters),
                  static_cast<long long>(g.trainable), g.trainable ? base_lr * g.lr_scale : 0.0,
                  g.weight_decay, g.bn.c_str());
    os << line;
  }
  std::snprintf(line, sizeof line, "%-28s %7s %11lld %11lld\n", "total", "",
                static_cast<long long>(parameters), static_cast<long long>(trainable));
  os << line;
  if (!bn_eval.empty()) os << "BatchNorm layers kept in eval mode: " << bn_eval.size() << "\n";
  return os.str();
}

Json FreezePlan::to_json(double base_lr) const {
  Json g = Json::array();
  for (const auto& x : groups) {
    g.push_back({{"name", x.name},
                 {"tensors", x.params.size()},
                 {"parameters", x.parameters},
                 {"trainable", x.trainable},
                 {"lr", x.trainable ? base_lr * x.lr_scale : 0.0},
                 {"weight_decay", x.weight_decay},
                 {"bn", x.bn}});
  }
  return {{"groups", g}, {"parameters", parameters}, {"trainable", trainable}, {"bn_eval", bn_eval}};
}

}  // namespace xfer::train
