#include "xfer/study/study.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <tuple>

#include "xfer/core/dist.h"
#include "xfer/core/error.h"
#include "xfer/core/fs.h"
#include "xfer/core/runtime.h"
#include "xfer/core/sha256.h"
#include "xfer/data/spec.h"
#include "xfer/eval/metrics.h"
#include "xfer/eval/transfer.h"
#include "xfer/io/model_dir.h"
#include "xfer/models/registry.h"
#include "xfer/report/report.h"
#include "xfer/train/finetune.h"
#include "xfer/train/freeze.h"
#include "xfer/train/run.h"

namespace fs = std::filesystem;

namespace xfer::study {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// A model of the study: where it is, what it is.
struct Member {
  std::string label, dir, id, parent_id, role, arch, method;  // role: base|victim|scratch|hardened|attacker-b|attacker-c
  int64_t shots = 0, seed = 0;
  double wall_seconds = 0;
  bool cached = false;
  double accuracy = -1;
  Json to_json() const {
    return {{"label", label}, {"dir", dir},        {"id", id},         {"parent", parent_id.empty() ? Json(nullptr) : Json(parent_id)},
            {"role", role},   {"arch", arch},      {"method", method}, {"shots", shots},
            {"seed", seed},   {"wall_seconds", wall_seconds}, {"cached", cached},
            {"test_accuracy", accuracy >= 0 ? Json(accuracy) : Json(nullptr)}};
  }
};

std::string safe(std::string s) {
  for (auto& c : s) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) c = '-';
  }
  return s;
}

// The epoch budget of a k-shot run: batch 32 (or all samples), at least
// min_epochs and min_steps (the same rule as examples/fewshot_fmnist.py).
std::pair<int64_t, int64_t> budget(int64_t samples, const StudyConfig& c) {
  const int64_t batch = std::min<int64_t>(32, std::max<int64_t>(1, samples));
  const int64_t steps_per_epoch = samples > batch ? std::max<int64_t>(1, samples / batch) : 1;
  const int64_t epochs = std::max(c.min_epochs, (c.min_steps + steps_per_epoch - 1) / steps_per_epoch);
  return {batch, epochs};
}

/// The target without the victims' labels: every victim's draw is a draw of
/// at most the largest shot count under one of the study's seeds.
std::string attacker_pool_spec(const StudyConfig& c) {
  auto spec = data::DataSpec::parse(c.target);
  spec.exclude_shots = *std::max_element(c.shots.begin(), c.shots.end());
  const std::set<int64_t> seeds(c.seeds.begin(), c.seeds.end());
  spec.exclude_seeds.assign(seeds.begin(), seeds.end());
  return spec.str();
}

std::string pct(double v) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(1) << 100 * v << "%";
  return os.str();
}

// An eps as given (0.05, 8/255 = 0.0313725...), in its own stream: the
// findings' stream is left fixed to one decimal, which printed 0.05 as 0.1.
std::string eps_text(double eps) {
  std::ostringstream os;
  os << std::setprecision(4) << eps;
  return os.str();
}

}  // namespace

StudyConfig StudyConfig::preset_config(const std::string& name, const std::string& what) {
  StudyConfig c;
  c.preset = name;
  if (name == "quick") {
    c.test_shots = 40;
    c.base_shots = 300;
    c.base_epochs = 2;
    c.strategies = {"linear-probe", "full"};
    c.shots = {10, 50};
    c.seeds = {0};
    c.scratch_archs = {"resnet"};
    c.min_epochs = 8;
    c.min_steps = 60;
    c.attacks = {"pgd"};
    c.attacker_shots = 50;
    c.adv_train = "pgd:0.1:3";
    c.predictor_samples = 100;
  } else if (name == "full") {
    c.test_shots = 500;
    c.base_shots = 0;
    c.base_epochs = 5;
    c.strategies = {"linear-probe", "full", "lp-ft", "lora:8", "l2-sp:0.01"};
    c.shots = {1, 5, 10, 50, 100};
    c.scratch_archs = {"resnet", "cnn", "vit"};
    c.attacks = {"fgsm", "pgd", "mi-fgsm+di+ti"};
    c.eps = {0.05, 0.1, 0.15, 0.2};
    c.predictor_samples = 500;
  } else {
    XFER_CHECK_USAGE(name == "default", what, ": expected quick, default or full, got '", name,
                     "'");
  }
  return c;
}

Json StudyConfig::to_json() const {
  return {{"preset", preset},           {"source", source},
          {"target", target},           {"test", test},
          {"test_shots", test_shots},   {"base_shots", base_shots},
          {"base_epochs", base_epochs}, {"base_archs", base_archs},
          {"public_base", public_base}, {"strategies", strategies},
          {"shots", shots},             {"seeds", seeds},
          {"scratch_archs", scratch_archs}, {"min_epochs", min_epochs},
          {"min_steps", min_steps},     {"scratch_lr", scratch_lr},
          {"attacks", attacks},         {"eps", eps},
          {"attack_steps", attack_steps}, {"attacker_shots", attacker_shots},
          {"attacker_c_arch", attacker_c_arch}, {"adv_train", adv_train},
          {"predictor_samples", predictor_samples}};
}

StudyConfig StudyConfig::from_json(const Json& j, const std::string& what) {
  XFER_CHECK_USAGE(j.is_object(), what, ": a study config is a JSON object");
  const auto known = StudyConfig().to_json();
  for (auto it = j.begin(); it != j.end(); ++it) {
    XFER_CHECK_USAGE(known.contains(it.key()), what, ": unknown key '", it.key(), "'");
  }
  StudyConfig c;
  try {
    c = preset_config(json_get_or<std::string>(j, "preset", "default", what), what + ": preset");
    c.source = json_get_or(j, "source", c.source, what);
    c.target = json_get_or(j, "target", c.target, what);
    c.test = json_get_or(j, "test", c.test, what);
    c.test_shots = json_get_or(j, "test_shots", c.test_shots, what);
    c.base_shots = json_get_or(j, "base_shots", c.base_shots, what);
    c.base_epochs = json_get_or(j, "base_epochs", c.base_epochs, what);
    c.base_archs = json_get_or(j, "base_archs", c.base_archs, what);
    c.public_base = json_get_or(j, "public_base", c.public_base, what);
    c.strategies = json_get_or(j, "strategies", c.strategies, what);
    c.shots = json_get_or(j, "shots", c.shots, what);
    c.seeds = json_get_or(j, "seeds", c.seeds, what);
    c.scratch_archs = json_get_or(j, "scratch_archs", c.scratch_archs, what);
    c.min_epochs = json_get_or(j, "min_epochs", c.min_epochs, what);
    c.min_steps = json_get_or(j, "min_steps", c.min_steps, what);
    c.scratch_lr = json_get_or(j, "scratch_lr", c.scratch_lr, what);
    c.attacks = json_get_or(j, "attacks", c.attacks, what);
    c.eps = json_get_or(j, "eps", c.eps, what);
    c.attack_steps = json_get_or(j, "attack_steps", c.attack_steps, what);
    c.attacker_shots = json_get_or(j, "attacker_shots", c.attacker_shots, what);
    c.attacker_c_arch = json_get_or(j, "attacker_c_arch", c.attacker_c_arch, what);
    c.adv_train = json_get_or(j, "adv_train", c.adv_train, what);
    c.predictor_samples = json_get_or(j, "predictor_samples", c.predictor_samples, what);
  } catch (const Error& e) {
    throw UsageError(e.what());
  }
  c.validate();
  return c;
}

StudyConfig StudyConfig::load(const std::string& path, const std::string& preset) {
  if (!preset.empty()) preset_config(preset);  // a bad --preset is named as such
  Json j = read_json(path);
  if (j.is_object() && !preset.empty()) {
    if (!j.contains("preset")) {
      j["preset"] = preset;
    } else {
      XFER_CHECK_USAGE(j["preset"] == preset, "--preset ", preset, ": ", path, " names preset ",
                       j["preset"].dump(), "; give one of the two");
    }
  }
  return from_json(j, path);
}

namespace {
template <class T>
void check_unique(const std::vector<T>& values, const char* what) {
  for (size_t i = 0; i < values.size(); ++i) {
    for (size_t k = 0; k < i; ++k) {
      XFER_CHECK_USAGE(!(values[k] == values[i]), "study: ", what, " lists ",
                       Json(values[i]).dump(), " twice");
    }
  }
}

void check_arch(const std::string& arch, const char* what) {
  const auto names = models::model_names();
  std::string known;
  for (const auto& n : names) known += (known.empty() ? "" : ", ") + n;
  XFER_CHECK_USAGE(std::find(names.begin(), names.end(), arch) != names.end(), "study: ", what,
                   ": unknown architecture '", arch, "' (known: ", known, ")");
}
}  // namespace

void StudyConfig::validate() const {
  XFER_CHECK_USAGE(!source.empty() && !target.empty() && !test.empty(), "study: source, target and test are required");
  XFER_CHECK_USAGE(test_shots >= 0 && base_shots >= 0, "study: test_shots and base_shots must be >= 0");
  XFER_CHECK_USAGE(base_epochs >= 1, "study: base_epochs must be >= 1");
  XFER_CHECK_USAGE(std::find(base_archs.begin(), base_archs.end(), public_base) != base_archs.end(),
                   "study: public_base '", public_base, "' must be one of base_archs");
  XFER_CHECK_USAGE(!strategies.empty() && !shots.empty() && !seeds.empty(), "study: strategies, shots and seeds must not be empty");
  for (const auto& s : strategies) train::Strategy::parse(s);
  for (int64_t k : shots) XFER_CHECK_USAGE(k >= 1, "study: shots must be >= 1, got ", k);
  for (int64_t s : seeds) XFER_CHECK_USAGE(s >= 0, "study: seeds must be >= 0, got ", s);
  check_unique(base_archs, "base_archs");
  check_unique(strategies, "strategies");
  check_unique(shots, "shots");
  check_unique(seeds, "seeds");
  check_unique(scratch_archs, "scratch_archs");
  check_unique(attacks, "attacks");
  check_unique(eps, "eps");
  for (const auto& a : base_archs) check_arch(a, "base_archs");
  for (const auto& a : scratch_archs) check_arch(a, "scratch_archs");
  check_arch(attacker_c_arch, "attacker_c_arch");
  // The source and test SPECs parse, and take the study's draws (shots= of
  // their own would clash with base_shots / test_shots only after training).
  for (const auto& [what, text, k] :
       {std::tuple<const char*, const std::string&, int64_t>{"source", source, base_shots},
        {"test", test, test_shots}}) {
    const auto spec = data::DataSpec::parse(text);
    XFER_CHECK_USAGE(k == 0 || !spec.shots, "study: ", what, " '", text,
                     "' sets shots= itself; with ",
                     what == std::string("source") ? "base_shots" : "test_shots",
                     " > 0 the study draws them: set one of the two");
  }
  {
    const auto spec = data::DataSpec::parse(target);
    // (seed= would replace the study's seeds in every victim's draw, and the
    // attackers' pool excludes the draws of the study's seeds.)
    XFER_CHECK_USAGE(
        !spec.shots && !spec.exclude_shots && target.find(":seed=") == std::string::npos,
        "study: target '", target,
        "' must not set shots=, seed= or exclude= (the study draws the victims' and "
        "attackers' labels from it with its own seeds)");
  }
  XFER_CHECK_USAGE(min_epochs >= 1 && min_steps >= 1, "study: min_epochs and min_steps must be >= 1");
  XFER_CHECK_USAGE(std::isfinite(scratch_lr) && scratch_lr > 0, "study: scratch_lr must be > 0");
  XFER_CHECK_USAGE(!attacks.empty() && !eps.empty(), "study: attacks and eps must not be empty");
  for (const auto& a : attacks) {
    for (double e : eps) attack::options_for(a, attack::AttackOptions().eps(e).steps(attack_steps)).validate();
  }
  XFER_CHECK_USAGE(attack_steps >= 1, "study: attack_steps must be >= 1");
  XFER_CHECK_USAGE(attacker_shots >= 1, "study: attacker_shots must be >= 1");
  XFER_CHECK_USAGE(predictor_samples >= 1, "study: predictor_samples must be >= 1");
  train::parse_adv_train(adv_train);
}

StudyResult run_study(const StudyOptions& opt) {
  const StudyConfig& c = opt.config;
  c.validate();
  XFER_CHECK_USAGE(!opt.out.empty(), "--out is required");
  const auto t0 = Clock::now();
  // config.json is written first, so a folder killed at any later moment is
  // recognised as this command's and resumed.
  // (A study writes config.json before anything else: an adv/ alone is
  // another command's folder, a transfer's or an audit's.)
  eval::prepare_results_dir(opt.out, "config.json", false);
  dist::barrier();  // every rank has checked the folder before rank 0 writes into it
  const fs::path out(opt.out);
  // Distributed: every rank runs the pipeline (training data-parallel, attacks
  // and evaluation sharded); rank 0 holds the lock and writes.
  std::optional<DirLock> lock;
  int stale = 0;
  if (dist::is_main()) {
    lock.emplace(opt.out);
    for (const char* d : {"", "models", "adv", "transfer"}) stale += remove_stale_staging((out / d).string());
    // Another config in the folder: the summaries of the old one go first, so
    // a run killed before its own are written leaves none that disagree with
    // config.json. (Models and sets are cached by content and stay.)
    const auto config_path = out / "config.json";
    std::error_code ec;
    if (fs::exists(config_path, ec) && read_json(config_path.string()) != c.to_json()) {
      for (const char* f :
           {"results.json", "report.html", "data_efficiency.csv", "lineage_effect.csv"})
        fs::remove(out / f, ec);
    }
    write_json(config_path.string(), c.to_json());
  }
  const fs::path models_dir = out / "models";
  if (dist::is_main()) fs::create_directories(models_dir);
  dist::barrier();
  auto say = [&](const std::string& m) {
    if (opt.on_message) opt.on_message(m);
  };
  StudyResult result;

  // Every model is a directory named by its label and a hash of its recipe:
  // present (complete: outputs are staged and renamed) = done. A job's recipe
  // is the run's settings() (every setting, defaults resolved, and xfer's
  // results revision), so a changed default is a new directory, never a stale
  // cached model.
  struct Job {
    Json recipe;
    std::function<void(const std::string&)> make;
  };
  std::set<std::string> counted;
  // The key holds the data's content, not only its spec: an idx: or folder:
  // spec whose files changed must train again. Every model's data is a subset
  // (classes, shots with a seed in the spec) of the source or the target.
  // Attackers B and C draw their labels from the target without any victim's
  // (DESIGN: "their own disjoint few labels"); one seed's draws are nested, so
  // excluding the largest draw of each victim seed excludes them all.
  const std::string attacker_pool = attacker_pool_spec(c);
  // The test data too, before any training: a bad test SPEC fails now.
  const std::string test_spec =
      c.test_shots > 0 ? train::with_shots(c.test, c.test_shots, 0) : c.test;
  const data::Dataset test = data::load(test_spec);
  int64_t target_classes = 0;
  const Json data_sha256 = [&] {
    const std::string source_sha256 = data::load(c.source).content_hash();
    const data::Dataset target = data::load(c.target);
    target_classes = target.num_classes();
    // Drawn here from the loaded target, as the pool's spec will draw it, so a
    // pool too small for attacker_shots fails before any training.
    const auto pool = data::DataSpec::parse(attacker_pool);
    data::sample_shots(data::exclude_shots(target, *pool.exclude_shots, pool.exclude_seeds),
                       c.attacker_shots, 1000);
    return Json{{"source", source_sha256}, {"target", target.content_hash()}};
  }();
  auto build = [&](Member m, const Job& job) {
    Json recipe = job.recipe;
    recipe["xfer_version"] = version();
    recipe["data_sha256"] = data_sha256;
    m.dir = (models_dir / (safe(m.label) + "-" + sha256_hex(recipe.dump()).substr(0, 12))).string();
    if (fs::exists(fs::path(m.dir) / "card.json")) {
      m.cached = true;
      if (counted.insert(m.dir).second) ++result.models_cached;  // the hardened twin is a victim too
    } else {
      counted.insert(m.dir);
      say("training " + m.label);
      job.make(m.dir);
      ++result.models_trained;
    }
    auto lm = io::load_model_dir(m.dir);
    m.id = lm.card.id;
    m.parent_id = lm.card.parent ? lm.card.parent->id : "";
    m.arch = lm.config.arch;
    m.wall_seconds = lm.card.metrics.value("wall_seconds", 0.0);
    return m;
  };
  auto train_model = [&](const std::string& kind, const std::string& data, const std::string& arch,
                         int64_t epochs, int64_t batch, double lr, int64_t seed, double val_fraction,
                         int64_t crop) {
    train::TrainRunOptions t;
    t.data = data;
    t.arch = arch;
    t.val_fraction = val_fraction;
    t.train.epochs(epochs).batch_size(batch).lr(lr).seed(static_cast<uint64_t>(seed));
    data::AugmentOptions aug;
    aug.crop_padding = crop;
    t.train.augment(aug);
    t.checkpoints = false;
    Json recipe = {{"kind", kind}, {"settings", t.settings()}};
    return Job{recipe, [t](const std::string& dir) {
                 auto run = t;
                 run.out = dir;
                 train::run_train(run);
               }};
  };

  // 1. Public bases on the source task.
  std::map<std::string, Member> bases;
  const std::string source_spec = c.base_shots > 0 ? train::with_shots(c.source, c.base_shots, 0) : c.source;
  for (const auto& arch : c.base_archs) {
    Member m;
    m.label = "base-" + arch;
    m.role = "base";
    m.method = "pretrain";
    bases[arch] = build(m, train_model("base", source_spec, arch, c.base_epochs, 128, 1e-3, 0, 0.1, 0));
  }
  const Member& pub = bases.at(c.public_base);

  auto finetune_model = [&](const std::string& strategy, int64_t k, int64_t seed,
                            const std::string& adv, const std::string& data) {
    train::FinetuneRunOptions f;
    f.data = data;
    f.shots = k;
    f.strategy = strategy;
    const auto [batch, epochs] = budget(target_classes * k, c);
    f.train.epochs(epochs).batch_size(batch).seed(static_cast<uint64_t>(seed)).adv_train(adv);
    data::AugmentOptions aug;
    aug.crop_padding = 2;
    f.train.augment(aug);
    f.checkpoints = false;
    f.source.dir = pub.dir;  // named in the key by its id (its folder may move)
    Json recipe = {{"kind", "finetune"}, {"parent", pub.id}, {"settings", f.settings()}};
    return Job{recipe, [f](const std::string& dir) {
                 auto run = f;
                 run.out = dir;
                 train::run_finetune(run);
               }};
  };

  // 2. Victims: fine-tuned from the public base, and from scratch.
  std::vector<Member> victims;
  for (const auto& s : c.strategies) {
    for (int64_t k : c.shots) {
      for (int64_t seed : c.seeds) {
        Member m;
        m.label = str_cat("ft-", s, "-k", k, "-s", seed);
        m.role = "victim";
        m.method = s;
        m.shots = k;
        m.seed = seed;
        victims.push_back(build(m, finetune_model(s, k, seed, "", c.target)));
      }
    }
  }
  for (const auto& arch : c.scratch_archs) {
    for (int64_t k : c.shots) {
      for (int64_t seed : c.seeds) {
        Member m;
        m.label = str_cat("scratch-", arch, "-k", k, "-s", seed);
        m.role = "scratch";
        m.method = "scratch-" + arch;
        m.shots = k;
        m.seed = seed;
        const auto [batch, epochs] = budget(target_classes * k, c);
        const std::string data = train::with_shots(c.target, k, static_cast<uint64_t>(seed));
        victims.push_back(
            build(m, train_model("scratch", data, arch, epochs, batch, c.scratch_lr, seed, 0.0, 2)));
      }
    }
  }
  // Hardening: adversarial fine-tuning of the full strategy at the largest shot count, with its plain twin.
  std::vector<std::pair<Member, Member>> hardened;
  if (!c.adv_train.empty()) {
    const int64_t k = *std::max_element(c.shots.begin(), c.shots.end());
    const int64_t seed = c.seeds.front();
    Member twin;
    twin.label = str_cat("ft-full-k", k, "-s", seed);
    twin.role = "victim";
    twin.method = "full";
    twin.shots = k;
    twin.seed = seed;
    twin = build(twin, finetune_model("full", k, seed, "", c.target));
    if (std::none_of(victims.begin(), victims.end(), [&](const Member& v) { return v.dir == twin.dir; })) {
      victims.push_back(twin);
    }
    Member h;
    h.label = str_cat("ft-full-adv-k", k, "-s", seed);
    h.role = "hardened";
    h.method = "full+" + c.adv_train;
    h.shots = k;
    h.seed = seed;
    h = build(h, finetune_model("full", k, seed, c.adv_train, c.target));
    victims.push_back(h);
    hardened.emplace_back(h, twin);
  }

  // 4. Attackers B (fine-tuned from the public base on its own labels) and C (independent), both
  // drawn from the pool without the victims' labels.
  Member b;
  b.label = str_cat("attacker-b-full-k", c.attacker_shots);
  b.role = "attacker-b";
  b.method = "full";
  b.shots = c.attacker_shots;
  b.seed = 1000;
  b = build(b, finetune_model("full", c.attacker_shots, 1000, "", attacker_pool));
  Member cc;
  cc.label = str_cat("attacker-c-", c.attacker_c_arch, "-k", c.attacker_shots);
  cc.role = "attacker-c";
  cc.method = "scratch-" + c.attacker_c_arch;
  cc.shots = c.attacker_shots;
  cc.seed = 2000;
  {
    const auto [batch, epochs] = budget(target_classes * c.attacker_shots, c);
    const std::string data = train::with_shots(attacker_pool, c.attacker_shots, 2000);
    cc = build(cc, train_model("scratch", data, c.attacker_c_arch, epochs, batch, c.scratch_lr, 2000,
                               0.0, 2));
  }

  // 3. Test accuracy of every victim and attacker.
  say("evaluating");
  std::map<std::string, double> accuracy_of;
  auto evaluate = [&](Member& m) {
    auto lm = io::load_model_dir(m.dir);
    m.accuracy = eval::evaluate(*lm.model, test).accuracy;
    accuracy_of[m.dir] = m.accuracy;
  };
  for (auto& v : victims) evaluate(v);
  for (auto& [h, twin] : hardened) {
    h.accuracy = accuracy_of.at(h.dir);
    twin.accuracy = accuracy_of.at(twin.dir);
  }
  evaluate(b);
  evaluate(cc);

  // Data efficiency: mean +- std over seeds per (method, shots).
  Json efficiency = Json::array();
  std::vector<std::string> methods = c.strategies;
  for (const auto& arch : c.scratch_archs) methods.push_back("scratch-" + arch);
  for (const auto& method : methods) {
    for (int64_t k : c.shots) {
      std::vector<double> accs, walls;
      for (const auto& v : victims) {
        if (v.role != "hardened" && v.method == method && v.shots == k &&
            std::find(c.seeds.begin(), c.seeds.end(), v.seed) != c.seeds.end()) {
          accs.push_back(v.accuracy);
          walls.push_back(v.wall_seconds);
        }
      }
      if (accs.empty()) continue;
      double mean = 0, wall = 0, var = 0;
      for (size_t i = 0; i < accs.size(); ++i) {
        mean += accs[i];
        wall += walls[i];
      }
      mean /= double(accs.size());
      wall /= double(accs.size());
      for (double a : accs) var += (a - mean) * (a - mean);
      // One seed has no spread to state: null, not 0.
      const Json sd =
          accs.size() > 1 ? Json(std::sqrt(var / double(accs.size() - 1))) : Json(nullptr);
      efficiency.push_back({{"method", method},
                            {"transfer", method.rfind("scratch-", 0) != 0},
                            {"shots", k},
                            {"mean_accuracy", mean},
                            {"std_accuracy", sd},
                            {"seeds", accs.size()},
                            {"mean_wall_seconds", wall}});
    }
  }

  // 4-6. Attacks from A, B, C on every victim.
  say("attacking");
  eval::TransferOptions to;
  to.sources = {eval::TransferSource::parse(pub.dir), eval::TransferSource::parse(b.dir),
                eval::TransferSource::parse(cc.dir)};
  // A, the public base, knows the source task's labels, never the target's:
  // the feature attack only, even where the two tasks' classes are named alike.
  to.sources[0].label_free = true;
  for (const auto& v : victims) to.targets.push_back(eval::model_source_from_path(v.dir));
  to.data = test_spec;
  to.attacks = c.attacks;
  if (std::find(to.attacks.begin(), to.attacks.end(), "feature") == to.attacks.end()) to.attacks.push_back("feature");
  to.eps = c.eps;
  to.overrides = {{"steps", c.attack_steps}};
  to.predictor_samples = c.predictor_samples;
  to.cache = (out / "adv").string();
  to.out = (out / "transfer").string();
  auto tr = eval::run_transfer(to);

  std::map<std::string, std::string> attacker_of = {{fs::path(pub.dir).filename().string(), "A"},
                                                    {fs::path(b.dir).filename().string(), "B"},
                                                    {fs::path(cc.dir).filename().string(), "C"}};
  std::map<std::string, const Member*> victim_of;
  for (const auto& v : victims) victim_of[fs::path(v.dir).filename().string()] = &v;
  Json cells = Json::array();
  for (const auto& cell : tr.cells) {
    Json j = cell.to_json();
    const auto* v = victim_of.at(cell.target);
    j["attacker"] = attacker_of.at(cell.source);
    j["victim"] = v->label;
    j["victim_role"] = v->role;
    j["descendant"] = v->parent_id == pub.id;
    cells.push_back(j);
  }

  // Lineage effect: descendants of the public base vs unrelated victims, pooled.
  Json lineage = Json::array();
  for (const std::string attacker : {"A", "B", "C"}) {
    for (const auto& a : to.attacks) {
      for (double e : c.eps) {
        int64_t f[2] = {0, 0}, n[2] = {0, 0}, count[2] = {0, 0};
        for (const auto& cell : tr.cells) {
          if (attacker_of.at(cell.source) != attacker || cell.attack != a || cell.eps != e) continue;
          const auto* v = victim_of.at(cell.target);
          if (v->role == "hardened") continue;
          const int g = v->parent_id == pub.id ? 0 : 1;
          f[g] += cell.fooled;
          n[g] += cell.clean_correct;
          ++count[g];
        }
        if (count[0] + count[1] == 0) continue;
        Json row = {{"attacker", attacker}, {"attack", a}, {"eps", e}};
        const char* names[2] = {"descendants", "unrelated"};
        for (int g = 0; g < 2; ++g) {
          // The victims see the same images: one victim's worth of trials, not n.
          auto ci =
              n[g] ? eval::pooled_wilson_interval(f[g], n[g], count[g]) : std::make_pair(0.0, 1.0);
          row[names[g]] = {{"victims", count[g]},
                           {"fooled", f[g]},
                           {"clean_correct", n[g]},
                           // No correctly classified sample: no rate (null), not 0.
                           {"success", n[g] ? Json(double(f[g]) / double(n[g])) : Json(nullptr)},
                           {"ci95", {ci.first, ci.second}}};
        }
        lineage.push_back(row);
      }
    }
  }

  // Hardening: the adversarially fine-tuned victim vs its plain twin.
  Json hardening = Json::array();
  for (const auto& [h, twin] : hardened) {
    Json rows = Json::array();
    for (const auto& cell : tr.cells) {
      const auto* v = victim_of.at(cell.target);
      if (v->dir != h.dir) continue;
      for (const auto& other : tr.cells) {
        if (victim_of.at(other.target)->dir == twin.dir && other.source == cell.source && other.attack == cell.attack &&
            other.eps == cell.eps) {
          rows.push_back({{"attacker", attacker_of.at(cell.source)},
                          {"attack", cell.attack},
                          {"eps", cell.eps},
                          {"hardened_success", cell.success_rate},
                          {"hardened_ci95", {cell.success_low, cell.success_high}},
                          {"plain_success", other.success_rate},
                          {"plain_ci95", {other.success_low, other.success_high}}});
        }
      }
    }
    hardening.push_back({{"hardened", h.label},
                         {"plain", twin.label},
                         {"recipe", c.adv_train},
                         {"hardened_accuracy", h.accuracy},
                         {"plain_accuracy", twin.accuracy},
                         {"transfer", rows}});
  }

  // Where the attackers' preview grids are (for the report): the cached sets' directories.
  Json examples = Json::array();
  const std::string test_sha = test.content_hash();
  // Under each grid: the true class and what one descendant victim (the full
  // strategy at the most shots) predicts on the clean and the adversarial image.
  const Member* shown = nullptr;
  for (const auto& v : victims) {
    if (v.role != "victim") continue;
    if (!shown || (v.method == "full" && (shown->method != "full" || v.shots > shown->shots))) shown = &v;
  }
  std::optional<io::LoadedModel> shown_model;
  if (shown) shown_model = io::load_model_dir(shown->dir);
  auto example = [&](const std::string& who, const Member& m, const std::string& attack_name) {
    attack::AttackSetOptions so;
    so.attack = attack_name;
    so.overrides = attack::overrides_for(attack_name, {{"steps", c.attack_steps}});
    so.overrides["eps"] = c.eps.front();
    const auto key = eval::adversarial_cache_key({m.id}, test_sha, so.resolved().to_json(),
                                                 eval::TransferOptions().batch_size);
    Json ex = {{"attacker", who}, {"attack", attack_name}, {"eps", c.eps.front()},
               {"preview", "adv/" + key + "/preview.png"}};
    const std::string set_dir = (out / "adv" / key).string();
    std::error_code ec;
    if (shown_model && fs::is_directory(set_dir, ec)) {
      const auto set = attack::load_adversarial_set(set_dir);
      // The preview's samples, in its order. The set was crafted on the test
      // data in order; check rather than assume.
      const auto pick = attack::preview_positions(set.labels);
      const int64_t n = pick.size(0);
      if (set.images.size(0) == test.size() && torch::equal(set.index, test.index)) {
        auto& model = *shown_model->model;
        const auto clean = eval::predict_classes(model, test.float_images().index_select(0, pick),
                                                 64, torch::kCPU);
        const auto adv =
            eval::predict_classes(model, set.images.index_select(0, pick), 64, torch::kCPU);
        // A victim with more outputs than the test has classes gets a number, not a throw.
        auto name = [&](int64_t c) {
          return c >= 0 && c < test.num_classes() ? test.class_names[static_cast<size_t>(c)]
                                                  : "class " + std::to_string(c);
        };
        Json samples = Json::array();
        for (int64_t i = 0; i < n; ++i) {
          const int64_t at = pick[i].item<int64_t>();
          samples.push_back({{"label", name(test.labels[at].item<int64_t>())},
                             {"clean", name(clean[i].item<int64_t>())},
                             {"adversarial", name(adv[i].item<int64_t>())}});
        }
        ex["victim"] = shown->label;
        ex["samples"] = samples;
      }
    }
    examples.push_back(ex);
  };
  example("A", pub, "feature");
  example("B", b, c.attacks.front());
  example("C", cc, c.attacks.front());

  Json models = Json::array();
  for (const auto& [arch, m] : bases) models.push_back(m.to_json());
  for (const auto& v : victims) models.push_back(v.to_json());
  models.push_back(b.to_json());
  models.push_back(cc.to_json());
  result.seconds = seconds_since(t0);
  result.results = {
      {"format", "xfer-study/1"},
      {"provenance",
       {{"xfer_version", version()},
        {"libtorch_version", torch_version()},
        {"created", utc_timestamp()},
        {"threads", torch::get_num_threads()},
        {"seeds", c.seeds},
        {"data",
         {{"source", source_spec},
          {"target", c.target},
          {"test", {{"spec", test_spec}, {"sha256", test.content_hash()}, {"samples", test.size()}}}}},
        {"public_base", {{"arch", c.public_base}, {"id", pub.id}}}}},
      {"config", c.to_json()},
      {"models", models},
      {"data_efficiency", efficiency},
      {"transfer",
       {{"cells", cells},
        {"skipped", tr.matrix["skipped"]},
        {"predictors", tr.matrix["predictors"]},
        {"matrix", "transfer/matrix.json"}}},
      {"lineage_effect", lineage},
      {"hardening", hardening},
      {"examples", examples},
      {"timing",
       {{"seconds", result.seconds},
        {"models_trained", result.models_trained},
        {"models_cached", result.models_cached},
        {"sets_crafted", tr.sets_crafted},
        {"sets_cached", tr.sets_cached},
        {"stale_temporaries_removed", stale}}}};
  result.summary = findings_text(result.results);
  result.results["findings"] = result.summary;

  // CSV tables (an unknown value, null in results.json, is an empty cell).
  auto cell = [](const Json& v) { return v.is_null() ? std::string() : v.dump(); };
  std::ostringstream eff;
  eff << "method,transfer,shots,mean_accuracy,std_accuracy,seeds,mean_wall_seconds\n";
  for (const auto& r : efficiency) {
    eff << r["method"].get<std::string>() << "," << (r["transfer"].get<bool>() ? 1 : 0) << ","
        << r["shots"] << "," << r["mean_accuracy"] << "," << cell(r["std_accuracy"]) << ","
        << r["seeds"] << "," << r["mean_wall_seconds"] << "\n";
  }
  std::ostringstream lin;
  lin << "attacker,attack,eps,group,victims,fooled,clean_correct,success,ci_low,ci_high\n";
  for (const auto& r : lineage) {
    for (const char* g : {"descendants", "unrelated"}) {
      const auto& x = r[g];
      lin << r["attacker"].get<std::string>() << "," << r["attack"].get<std::string>() << ","
          << r["eps"] << "," << g << "," << x["victims"] << "," << x["fooled"] << ","
          << x["clean_correct"] << "," << cell(x["success"]) << "," << x["ci95"][0] << ","
          << x["ci95"][1] << "\n";
    }
  }
  if (dist::is_main()) {
    write_file_atomic((out / "data_efficiency.csv").string(), eff.str());
    write_file_atomic((out / "lineage_effect.csv").string(), lin.str());
    write_json((out / "results.json").string(), result.results);
    report::write_report(opt.out);
  }
  dist::barrier();
  return result;
}

std::string findings_text(const Json& r) {
  std::ostringstream os;
  // Data efficiency: best transfer vs best scratch at the smallest and largest shot counts.
  const auto& eff = r.at("data_efficiency");
  std::set<int64_t> shots;
  for (const auto& e : eff) shots.insert(e.at("shots").get<int64_t>());
  auto best = [&](int64_t k, bool transfer, std::string* name) {
    double v = -1;
    for (const auto& e : eff) {
      if (e.at("shots").get<int64_t>() == k && e.at("transfer").get<bool>() == transfer &&
          e.at("mean_accuracy").get<double>() > v) {
        v = e.at("mean_accuracy").get<double>();
        *name = e.at("method").get<std::string>();
      }
    }
    return v;
  };
  for (int64_t k : shots) {
    std::string tn, sn;
    const double t = best(k, true, &tn), s = best(k, false, &sn);
    if (t < 0 || s < 0) continue;
    os << "- At " << k << " labels per class, the best transfer strategy (" << tn << ") reaches " << pct(t)
       << " test accuracy and the best scratch model (" << sn << ") " << pct(s) << ": "
       << (t >= s ? "transfer leads by " : "scratch leads by ") << std::fixed << std::setprecision(1)
       << 100 * std::abs(t - s) << " points.\n";
  }
  const bool any_scratch = std::any_of(eff.begin(), eff.end(),
                                       [](const Json& e) { return !e.at("transfer").get<bool>(); });
  const bool any_transfer = std::any_of(eff.begin(), eff.end(),
                                        [](const Json& e) { return e.at("transfer").get<bool>(); });
  if (!shots.empty() && any_scratch && any_transfer) {
    std::string tn, sn;
    const int64_t k0 = *shots.begin();
    const double t0 = best(k0, true, &tn);
    int64_t match = -1;
    for (int64_t k : shots) {
      if (best(k, false, &sn) >= t0) {
        match = k;
        break;
      }
    }
    if (match > 0) {
      os << "- Scratch needs " << match << " labels per class to match transfer at " << k0 << ".\n";
    } else {
      os << "- Scratch does not match transfer at " << k0 << " labels per class within " << *shots.rbegin()
         << " labels per class.\n";
    }
  }
  // Lineage effect of attacker A's feature attack, and B vs C.
  for (const auto& row : r.at("lineage_effect")) {
    const auto& d = row.at("descendants");
    const auto& u = row.at("unrelated");
    if (d.at("victims").get<int64_t>() == 0 || u.at("victims").get<int64_t>() == 0) continue;
    if (!d.at("success").is_number() || !u.at("success").is_number()) continue;
    if (row.at("attacker") == "A" && row.at("attack") == "feature") {
      const double ds = d.at("success").get<double>(), us = u.at("success").get<double>();
      os << "- Attacker A (the public base alone, feature attack, eps "
         << eps_text(row.at("eps").get<double>()) << ") fools descendants of the base on "
         << pct(ds) << " (95% CI " << pct(d["ci95"][0].get<double>()) << "-"
         << pct(d["ci95"][1].get<double>())
         << ") of their correctly classified samples and unrelated "
         << "victims on " << pct(us) << " (" << pct(u["ci95"][0].get<double>()) << "-"
         << pct(u["ci95"][1].get<double>()) << ")"
         << (d["ci95"][0].get<double>() > u["ci95"][1].get<double>()
                 ? ": lineage carries the attack.\n"
                 : (ds > us ? ": higher for descendants, but the intervals overlap.\n"
                            : ": no lineage effect at this budget.\n"));
    }
  }
  for (const std::string attacker : {"B", "C"}) {
    double top = -1;
    std::string how;
    for (const auto& row : r.at("lineage_effect")) {
      if (row.at("attacker") != attacker) continue;
      const auto& v = row.at("descendants").at("success");
      if (v.is_number() && v.get<double>() > top) {
        top = v.get<double>();
        how = str_cat(row.at("attack").get<std::string>(), " at eps ",
                      eps_text(row.at("eps").get<double>()));
      }
    }
    if (top >= 0) {
      os << "- Attacker " << attacker
         << (attacker == "B" ? " (own surrogate fine-tuned from the public base)" : " (independent surrogate)")
         << ": best on the descendants " << pct(top) << " with " << how << ".\n";
    }
  }
  // Predictors.
  const auto& corr = r.at("transfer").at("predictors").at("spearman_vs_success");
  std::string best_name;
  double best_rho = 0;
  for (const auto& row : corr) {
    for (const char* p : {"gradient_alignment", "cka", "agreement"}) {
      const auto& v = row.at(std::string("spearman_") + p);
      if (v.is_number() && std::abs(v.get<double>()) > std::abs(best_rho)) {
        best_rho = v.get<double>();
        best_name = str_cat(p, " (", row.at("attack").get<std::string>(), ")");
      }
    }
  }
  if (!best_name.empty()) {
    os << "- The strongest predictor of transfer is " << best_name << ", Spearman " << std::setprecision(2)
       << best_rho
       << (best_rho < 0 ? " (negative: the pairs that score higher on it transfer less)" : "") << ".\n";
  }
  for (const auto& h : r.at("hardening")) {
    os << "- Hardening (" << h.at("recipe").get<std::string>() << "): clean accuracy "
       << pct(h.at("plain_accuracy").get<double>()) << " -> "
       << pct(h.at("hardened_accuracy").get<double>());
    // Attacker B's strongest attack on the plain model, and the same attack
    // and eps on the hardened one (two maxima could come from two attacks).
    const Json* top = nullptr;
    for (const auto& t : h.at("transfer")) {
      if (t.at("attacker") == "B" && t.at("plain_success").is_number() &&
          (!top || t.at("plain_success").get<double>() > top->at("plain_success").get<double>()))
        top = &t;
    }
    if (top && top->at("hardened_success").is_number()) {
      os << "; attacker B's strongest attack on the plain model ("
         << top->at("attack").get<std::string>() << " at eps "
         << eps_text(top->at("eps").get<double>()) << ") succeeds on "
         << pct(top->at("plain_success").get<double>()) << " of it and "
         << pct(top->at("hardened_success").get<double>()) << " of the hardened one";
    }
    os << ".\n";
  }
  return os.str();
}

}  // namespace xfer::study
