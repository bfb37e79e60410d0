#include "xfer/study/study.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <set>

#include <gtest/gtest.h>

#include "support/errors.h"
#include "support/support.h"
#include "xfer/core/fs.h"
#include "xfer/core/runtime.h"
#include "xfer/data/image_folder.h"
#include "xfer/data/spec.h"
#include "xfer/eval/metrics.h"

namespace xfer::study {
namespace {

using xfer::testing::SeededTest;
using xfer::testing::TempDir;
namespace fs = std::filesystem;

// A whole study on synthetic data: two bases, two strategies x two shot
// counts, scratch victims, a hardened victim, attackers A/B/C.
class StudyTest : public SeededTest {
 protected:
  StudyConfig tiny() {
    for (const char* d : {"src", "dst", "tst"}) fs::create_directories(tmp_.file(d));
    StudyConfig c = StudyConfig::preset_config("quick");
    c.source = xfer::testing::write_synthetic_idx(tmp_.file("src"), 80, 4, 12, 12, 1);
    c.target = xfer::testing::write_synthetic_idx(tmp_.file("dst"), 90, 3, 12, 12, 2);
    c.test = xfer::testing::write_synthetic_idx(tmp_.file("tst"), 45, 3, 12, 12, 3);
    c.test_shots = 0;
    c.base_shots = 0;
    c.base_epochs = 1;
    c.base_archs = {"cnn", "mlp"};
    c.public_base = "cnn";
    c.strategies = {"linear-probe", "full"};
    c.shots = {2, 5};
    c.seeds = {0};
    c.scratch_archs = {"mlp"};
    c.min_epochs = 2;
    c.min_steps = 2;
    c.attacks = {"fgsm"};
    c.attack_steps = 2;
    c.attacker_shots = 3;
    c.attacker_c_arch = "mlp";
    c.adv_train = "pgd:0.1:2";
    c.predictor_samples = 20;
    return c;
  }
  TempDir tmp_;
};

TEST_F(StudyTest, RunsEndToEndAndARerunRedoesNothing) {
  StudyOptions o;
  o.config = tiny();
  o.out = tmp_.file("study");
  auto r = run_study(o);
  for (const char* f : {"config.json", "results.json", "data_efficiency.csv", "lineage_effect.csv",
                        "transfer/matrix.json", "transfer/heatmap.svg"}) {
    EXPECT_TRUE(fs::exists(o.out + "/" + f)) << f;
  }
  const auto res = read_json(o.out + "/results.json");
  EXPECT_EQ(res["format"], "xfer-study/1");
  EXPECT_EQ(res["provenance"]["xfer_version"], version());
  // 2 bases; 2 strategies x 2 shots + 1 scratch arch x 2 shots + 1 hardened; attackers B and C.
  EXPECT_EQ(res["models"].size(), 2u + 7u + 2u);
  EXPECT_EQ(r.models_trained, 11);
  EXPECT_EQ(res["data_efficiency"].size(), 3u * 2u);
  for (const auto& e : res["data_efficiency"]) {
    EXPECT_GE(e["mean_accuracy"].get<double>(), 0.0);
    EXPECT_LE(e["mean_accuracy"].get<double>(), 1.0);
  }
  // A (the base: feature only, although the synthetic tasks name their classes
  // alike), B and C x (fgsm, feature): descendants (4 fine-tuned) vs unrelated (2 scratch).
  ASSERT_EQ(res["lineage_effect"].size(), 5u);
  for (const auto& row : res["lineage_effect"]) {
    if (row["attacker"] == "A") EXPECT_EQ(row["attack"], "feature");
    EXPECT_EQ(row["descendants"]["victims"], 4);
    EXPECT_EQ(row["unrelated"]["victims"], 2);
    EXPECT_LE(row["descendants"]["ci95"][0].get<double>(), row["descendants"]["success"].get<double>());
    // The victims share their images: the interval is one victim's worth of them.
    const auto& d = row["descendants"];
    const auto ci = eval::pooled_wilson_interval(d["fooled"].get<int64_t>(), d["clean_correct"].get<int64_t>(), 4);
    EXPECT_DOUBLE_EQ(d["ci95"][0].get<double>(), ci.first);
    EXPECT_DOUBLE_EQ(d["ci95"][1].get<double>(), ci.second);
  }
  ASSERT_EQ(res["hardening"].size(), 1u);
  EXPECT_EQ(res["hardening"][0]["transfer"].size(), 5u);
  EXPECT_NE(r.summary.find("Attacker A"), std::string::npos) << r.summary;
  EXPECT_NE(r.summary.find("labels per class"), std::string::npos) << r.summary;
  // Every cell names its attacker and victim; descendants are the public base's children.
  for (const auto& c : res["transfer"]["cells"]) {
    EXPECT_TRUE(c["attacker"] == "A" || c["attacker"] == "B" || c["attacker"] == "C");
    EXPECT_EQ(c["descendant"].get<bool>(), c["victim_role"] != "scratch") << c["victim"];
  }
  // Attackers B and C draw their labels apart from every victim's (DESIGN: their own disjoint
  // labels).
  std::set<int64_t> victim_samples, attacker_samples;
  for (const auto& e : fs::directory_iterator(o.out + "/models")) {
    const std::string name = e.path().filename().string();
    if (name.rfind("base-", 0) == 0) continue;
    const auto spec =
        read_json((e.path() / "card.json").string())["data"]["spec"].get<std::string>();
    const bool attacker = name.rfind("attacker-", 0) == 0;
    if (attacker) EXPECT_NE(spec.find(":exclude=5@0:"), std::string::npos) << spec;
    const auto index = data::load(spec).index;
    for (int64_t i = 0; i < index.size(0); ++i) {
      (attacker ? attacker_samples : victim_samples).insert(index[i].item<int64_t>());
    }
  }
  EXPECT_EQ(victim_samples.size(), 15u);  // 5 shots x 3 classes (the 2-shot draw is inside it)
  EXPECT_GE(attacker_samples.size(), 9u);
  for (int64_t i : attacker_samples) EXPECT_EQ(victim_samples.count(i), 0u) << "sample " << i;
  // The written config reads back to the same config.
  EXPECT_EQ(StudyConfig::from_json(read_json(o.out + "/config.json"), "config.json").to_json(), o.config.to_json());

  // The report: every section, numbers equal to results.json.
  const std::string html = read_file(o.out + "/report.html");
  for (const char* id : {"findings", "data-efficiency", "transfer", "lineage", "predictors", "hardening",
                         "examples", "models"}) {
    EXPECT_NE(html.find(std::string("id=\"") + id + "\""), std::string::npos) << id;
  }
  const double first = res["data_efficiency"][0]["mean_accuracy"].get<double>();
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f%%", 100 * first);
  EXPECT_NE(html.find(buf), std::string::npos) << buf;
  EXPECT_NE(html.find("data:image/png;base64,"), std::string::npos);  // the preview grids are embedded
  EXPECT_EQ(html.find("src=\"http"), std::string::npos);              // nothing fetched: opens offline
  // Under each grid: true classes and a descendant victim's predictions, as in results.json.
  ASSERT_EQ(res["examples"].size(), 3u);
  for (const auto& ex : res["examples"]) {
    ASSERT_TRUE(ex.contains("samples")) << ex.dump();
    EXPECT_EQ(ex["victim"], "ft-full-k5-s0");
    EXPECT_EQ(ex["samples"].size(), 8u);
    for (const char* k : {"label", "clean", "adversarial"}) {
      const std::string cell = "title=\"" + std::string(k == std::string("label") ? "true" : k == std::string("clean") ? "clean" : "adv") +
                               "\">" + ex["samples"][0][k].get<std::string>() + "</td>";
      EXPECT_NE(html.find(cell), std::string::npos) << cell;
    }
  }

  auto again = run_study(o);
  EXPECT_EQ(again.models_trained, 0);
  EXPECT_EQ(again.models_cached, r.models_trained + r.models_cached);
  EXPECT_EQ(again.results["timing"]["sets_crafted"], 0);
  EXPECT_EQ(again.results["data_efficiency"], res["data_efficiency"]);
}

// A folder with adv/ but no config.json is another command's (a transfer's or
// an audit's cache): refused. A study folder of another config loses the old
// config's summaries before anything else, so none outlive config.json.
TEST_F(StudyTest, OutFolderOfAnotherCommandOrConfig) {
  StudyOptions o;
  o.config = tiny();
  o.out = tmp_.file("audit");
  fs::create_directories(o.out + "/adv");
  xfer::testing::expect_error_naming([&] { run_study(o); }, "no config.json");

  o.out = tmp_.file("old-study");
  fs::create_directories(o.out);
  write_json(o.out + "/config.json", StudyConfig::preset_config("quick").to_json());
  for (const char* f : {"results.json", "report.html", "data_efficiency.csv", "lineage_effect.csv"})
    std::ofstream(o.out + "/" + f) << "old";
  o.config.test = "idx:" + tmp_.file("missing-images.gz") + "," + tmp_.file("missing-labels.gz");
  EXPECT_THROW(run_study(o), Error);  // the test data is read before any training
  EXPECT_EQ(read_json(o.out + "/config.json"), o.config.to_json());
  for (const char* f : {"results.json", "report.html", "data_efficiency.csv", "lineage_effect.csv"})
    EXPECT_FALSE(fs::exists(o.out + "/" + f)) << f;
  EXPECT_FALSE(fs::exists(o.out + "/models") && !fs::is_empty(o.out + "/models"));
}

// SIGKILLed midway (once some models are complete), then rerun: finished
// models are reused untouched, nothing temporary is left, and every model
// equals the uninterrupted run's. A second writer on the folder is refused.
TEST_F(StudyTest, SigkillMidwayThenRerunRedoesNoFinishedWork) {
  const std::string cfg = tmp_.file("study.json"), ref = tmp_.file("ref"), out = tmp_.file("killed");
  write_json(cfg, tiny().to_json());
  auto args = [&](const std::string& dir) { return "--quiet study --config '" + cfg + "' --out '" + dir + "'"; };
  auto r = xfer::testing::run_xfer(args(ref));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // Complete model directories and when their weights were written.
  auto complete = [](const std::string& dir) {
    std::map<std::string, fs::file_time_type> m;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir + "/models", ec)) {
      const std::string name = e.path().filename().string();
      if (name.find(".tmp-") == std::string::npos && fs::exists(e.path() / "card.json")) m[name] = fs::last_write_time(e.path() / "model.safetensors");
    }
    return m;
  };
  const auto all = complete(ref);
  ASSERT_EQ(all.size(), 11u);

  ASSERT_TRUE(xfer::testing::run_xfer_until(args(out), [&] { return complete(out).size() >= 4; }));
  const auto before = complete(out);
  ASSERT_GE(before.size(), 4u);
  ASSERT_LT(before.size(), all.size());
  EXPECT_FALSE(fs::exists(out + "/results.json"));

  r = xfer::testing::run_xfer(args(out));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto res = read_json(out + "/results.json");
  EXPECT_EQ(res["timing"]["models_cached"].get<size_t>(), before.size());
  EXPECT_EQ(res["timing"]["models_trained"].get<size_t>(), all.size() - before.size());
  const auto after = complete(out);
  EXPECT_EQ(after.size(), all.size());
  for (const auto& [name, written] : before) EXPECT_TRUE(after.at(name) == written) << name << " was rewritten";
  std::map<std::string, std::string> ids, ref_ids;
  for (const auto& m : res["models"]) ids[m["label"]] = m["id"];
  const auto ref_res = read_json(ref + "/results.json");
  for (const auto& m : ref_res["models"]) ref_ids[m["label"]] = m["id"];
  EXPECT_EQ(ids, ref_ids);
  for (const auto& e : fs::recursive_directory_iterator(out)) {
    EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << e.path();
  }

  DirLock held(out);
  r = xfer::testing::run_xfer(args(out));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("in use by another xfer process"), std::string::npos) << r.err;
}

// Ten SIGKILLs at random moments of the same study (the user reruns the same
// command after each crash): after every kill each file present is complete,
// and the run that finally finishes has the uninterrupted run's models. A run
// that ends before its kill is checked too, then started afresh.
TEST_F(StudyTest, SlowTenSigkillsAtRandomMomentsThenRerunMatches) {
  const std::string cfg = tmp_.file("study.json"), ref = tmp_.file("ref"), out = tmp_.file("killed");
  write_json(cfg, tiny().to_json());
  auto args = [&](const std::string& dir) { return "--quiet study --config '" + cfg + "' --out '" + dir + "'"; };
  const auto t0 = std::chrono::steady_clock::now();
  auto r = xfer::testing::run_xfer(args(ref));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const int total_ms = static_cast<int>(
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  auto model_ids = [](const std::string& dir) {
    std::map<std::string, std::string> ids;
    // Keep the document alive: a range-for over read_json(...)["models"]
    // iterates a member of a destroyed temporary (found by ASan).
    const Json results = read_json(dir + "/results.json");
    for (const auto& m : results["models"]) ids[m["label"]] = m["id"];
    return ids;
  };
  const auto expected = model_ids(ref);
  std::mt19937 rng(7);
  int kills = 0;
  for (int attempt = 0; kills < 10 && attempt < 40; ++attempt) {
    // Up to half the uninterrupted time: each run gets killed with work left.
    const int delay = 20 + static_cast<int>(rng() % std::max(total_ms / 2, 50));
    const auto start = std::chrono::steady_clock::now();
    const bool killed = xfer::testing::run_xfer_until(
        args(out), [&] { return std::chrono::steady_clock::now() - start >= std::chrono::milliseconds(delay); });
    EXPECT_TRUE(xfer::testing::files_complete(out)) << "after a kill at " << delay << " ms";
    if (killed) {
      ++kills;
      continue;
    }
    EXPECT_EQ(model_ids(out), expected) << "a run that finished after " << kills << " kills";
    fs::remove_all(out);
  }
  EXPECT_EQ(kills, 10);
  r = xfer::testing::run_xfer(args(out));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(model_ids(out), expected);
  for (const auto& e : fs::recursive_directory_iterator(out)) {
    EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << e.path();
  }
}

// The report in a real browser: Debian's chromium, headless (scripts/setup
// installs it; skipped where it is missing).
TEST_F(StudyTest, ReportRendersInChromium) {
  const char* chromium = "/usr/bin/chromium";
  if (!fs::exists(chromium)) GTEST_SKIP() << "chromium not installed (scripts/setup installs it)";
  StudyOptions o;
  o.config = tiny();
  o.out = tmp_.file("study");
  run_study(o);
  const std::string page = "file://" + fs::absolute(o.out + "/report.html").string();
  const std::string flags = " --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --hide-scrollbars ";
  const std::string dom_file = tmp_.file("dom.html"), shot = tmp_.file("shot.png");
  std::string cmd = std::string("timeout 120 ") + chromium + flags + "--dump-dom '" + page + "' > '" + dom_file +
                    "' 2>/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const std::string dom = read_file(dom_file);
  size_t svgs = 0;
  for (size_t p = dom.find("<svg"); p != std::string::npos; p = dom.find("<svg", p + 1)) ++svgs;
  EXPECT_GE(svgs, 5u);  // data efficiency, heatmap, lineage, three scatter plots
  EXPECT_NE(dom.find("<table"), std::string::npos);
  EXPECT_NE(dom.find("class=\"bar\""), std::string::npos);
  cmd = std::string("cd '") + tmp_.path() + "' && timeout 120 " + chromium + flags + "--window-size=1200,1600 " +
        "--screenshot='" + shot + "' '" + page + "' >/dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  auto img = data::read_image(shot).to(torch::kFloat);
  EXPECT_GT(img.size(1), 100);
  EXPECT_GT(img.std().item<double>(), 5.0) << "blank screenshot";
}

TEST(StudyConfigTest, PresetsAndBadConfigs) {
  for (const char* p : {"quick", "default", "full"}) {
    auto c = StudyConfig::preset_config(p);
    EXPECT_EQ(c.preset, p);
    c.validate();
    EXPECT_EQ(StudyConfig::from_json(c.to_json(), "x").to_json(), c.to_json());
  }
  EXPECT_LT(StudyConfig::preset_config("quick").shots.size(), StudyConfig::preset_config("full").shots.size());
  xfer::testing::expect_error_naming([] { StudyConfig::preset_config("huge"); }, "huge");
  xfer::testing::expect_error_naming([] { StudyConfig::from_json({{"shotz", 3}}, "cfg.json"); }, "shotz");
  xfer::testing::expect_error_naming([] { StudyConfig::from_json({{"public_base", "mlp"}}, "cfg.json"); },
                                     "public_base");
  xfer::testing::expect_error_naming([] { StudyConfig::from_json({{"strategies", {"fly"}}}, "cfg.json"); }, "fly");
  xfer::testing::expect_error_naming([] { StudyConfig::from_json({{"shots", "ten"}}, "cfg.json"); }, "cfg.json");
  xfer::testing::expect_error_naming([] { StudyConfig::from_json({{"adv_train", "pgd:x"}}, "cfg.json"); },
                                     "--adv-train");
  // Integers must be integers: 3.7 was truncated, 1e60 was undefined behaviour (fuzz/run study_config).
  for (const Json& bad : {Json{{"base_shots", 3.7}}, Json{{"base_shots", 5.4e57}}, Json{{"shots", {10, 2.5}}}}) {
    EXPECT_THROW(
        try { StudyConfig::from_json(bad, "cfg.json"); } catch (const UsageError& e) {
          EXPECT_NE(std::string(e.what()).find("must be "), std::string::npos) << e.what();
          throw;
        },
        UsageError)
        << bad.dump();
  }
  // The study draws every k-shot set from the target itself.
  for (const char* target : {"fashion-mnist:train:classes=5-9:shots=10",
                             "fashion-mnist:exclude=5@0", "fashion-mnist:classes=5-9:seed=0"}) {
    auto c = StudyConfig::preset_config("quick");
    c.target = target;
    xfer::testing::expect_error_naming([&] { c.validate(); },
                                       "must not set shots=, seed= or exclude=");
  }
  auto q = StudyConfig::from_json({{"preset", "quick"}, {"seeds", {4, 5}}}, "cfg.json");
  EXPECT_EQ(q.seeds, (std::vector<int64_t>{4, 5}));
  EXPECT_EQ(q.shots, StudyConfig::preset_config("quick").shots);
  // A bad preset in a file names the file; a preset that is not a string is a usage error too.
  xfer::testing::expect_error_naming([] { StudyConfig::from_json({{"preset", "huge"}}, "cfg.json"); },
                                     "cfg.json: preset: expected quick");
  EXPECT_THROW(StudyConfig::from_json({{"preset", 3}}, "cfg.json"), UsageError);
}

// Repeats, unknown architectures and SPECs that clash with the study's own
// draws are refused before anything is trained.
TEST(StudyConfigTest, RepeatsUnknownArchsAndClashingSpecsAreRefused) {
  const StudyConfig base = StudyConfig::preset_config("quick");
  auto refused = [&](const std::function<void(StudyConfig&)>& edit, const std::string& message) {
    StudyConfig c = base;
    edit(c);
    xfer::testing::expect_error_naming([&] { c.validate(); }, message);
  };
  refused([](StudyConfig& c) { c.seeds = {0, 1, 0}; }, "seeds lists 0 twice");
  refused([](StudyConfig& c) { c.shots = {10, 10}; }, "shots lists 10 twice");
  refused([](StudyConfig& c) { c.eps = {0.1, 0.1}; }, "eps lists 0.1 twice");
  refused([](StudyConfig& c) { c.strategies = {"full", "full"}; }, "strategies lists \"full\" twice");
  refused([](StudyConfig& c) { c.scratch_archs = {"cnn", "cnn"}; }, "scratch_archs lists");
  refused([](StudyConfig& c) { c.attacks = {"pgd", "pgd"}; }, "attacks lists");
  refused([](StudyConfig& c) { c.attacker_c_arch = "nosuch"; }, "attacker_c_arch: unknown architecture 'nosuch'");
  refused([](StudyConfig& c) { c.scratch_archs = {"cnn", "nosuch"}; }, "scratch_archs: unknown architecture");
  refused([](StudyConfig& c) { c.test = "fashion-mnist:test:shots=5"; }, "test_shots");
  refused([](StudyConfig& c) { c.source = "fashion-mnist:train:classes=0-4:shots=5"; }, "base_shots");
  refused([](StudyConfig& c) { c.test = "nosuchkind:x"; }, "nosuchkind");
  // With the study's own draw off, the SPEC's shots= is the draw.
  StudyConfig c = base;
  c.test = "fashion-mnist:test:classes=5-9:shots=5";
  c.test_shots = 0;
  EXPECT_NO_THROW(c.validate());
}

TEST(StudyConfigTest, LoadTakesThePresetFlagOnlyWhereTheFileHasNone) {
  TempDir tmp;
  const std::string none = tmp.file("none.json"), quick = tmp.file("quick.json");
  write_json(none, Json{{"seeds", {7}}});
  write_json(quick, Json{{"preset", "quick"}});
  const auto a = StudyConfig::load(none, "full");
  EXPECT_EQ(a.preset, "full");
  EXPECT_EQ(a.shots, StudyConfig::preset_config("full").shots);
  EXPECT_EQ(a.seeds, (std::vector<int64_t>{7}));
  EXPECT_EQ(StudyConfig::load(none).preset, "default");
  EXPECT_EQ(StudyConfig::load(quick, "quick").preset, "quick");
  xfer::testing::expect_error_naming([&] { StudyConfig::load(quick, "full"); },
                                     "names preset \"quick\"");
  xfer::testing::expect_error_naming([&] { StudyConfig::load(quick, "bogus"); }, "--preset");
}

// The findings' sentences from a hand-made results.json: each eps printed as
// given, hardening read from one attack and eps, no scratch sentence without
// scratch models, no rate where no sample was correctly classified.
TEST(StudyFindingsTest, SentencesStateTheirOwnEpsAndOneRowOfHardening) {
  auto group = [](int64_t victims, int64_t fooled, int64_t correct) {
    return Json{{"victims", victims},
                {"fooled", fooled},
                {"clean_correct", correct},
                {"success", correct ? Json(double(fooled) / double(correct)) : Json(nullptr)},
                {"ci95", {0.0, 1.0}}};
  };
  Json r = {
      {"data_efficiency",
       {{{"method", "full"}, {"transfer", true}, {"shots", 10}, {"mean_accuracy", 0.8}, {"std_accuracy", nullptr}}}},
      {"lineage_effect",
       {{{"attacker", "A"}, {"attack", "feature"}, {"eps", 0.05}, {"descendants", group(2, 10, 40)},
         {"unrelated", group(1, 2, 20)}},
        {{"attacker", "B"}, {"attack", "pgd"}, {"eps", 0.05}, {"descendants", group(2, 30, 40)},
         {"unrelated", group(1, 2, 20)}},
        {{"attacker", "B"}, {"attack", "pgd"}, {"eps", 0.15}, {"descendants", group(2, 36, 40)},
         {"unrelated", group(1, 0, 0)}},
        {{"attacker", "C"}, {"attack", "pgd"}, {"eps", 0.15}, {"descendants", group(2, 0, 0)},
         {"unrelated", group(1, 0, 0)}}}},
      {"transfer", {{"predictors", {{"spearman_vs_success", Json::array()}}}}},
      {"hardening",
       {{{"recipe", "pgd:0.1:5"},
         {"plain_accuracy", 0.9},
         {"hardened_accuracy", 0.85},
         {"transfer",
          {{{"attacker", "B"}, {"attack", "pgd"}, {"eps", 0.05}, {"plain_success", 0.6}, {"hardened_success", 0.3}},
           {{"attacker", "B"}, {"attack", "fgsm"}, {"eps", 0.15}, {"plain_success", 0.4}, {"hardened_success", 0.35}},
           {{"attacker", "A"}, {"attack", "feature"}, {"eps", 0.05}, {"plain_success", 0.9},
            {"hardened_success", 0.9}}}}}}}};
  const std::string text = findings_text(r);
  EXPECT_NE(text.find("feature attack, eps 0.05)"), std::string::npos) << text;
  EXPECT_NE(text.find("best on the descendants 90.0% with pgd at eps 0.15"), std::string::npos) << text;
  // C's only row has no correctly classified sample: no sentence, and no throw.
  EXPECT_EQ(text.find("Attacker C"), std::string::npos) << text;
  EXPECT_NE(text.find("(pgd at eps 0.05) succeeds on 60.0% of it and 30.0% of the hardened one"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find("Scratch"), std::string::npos) << text;
}

}  // namespace
}  // namespace xfer::study
