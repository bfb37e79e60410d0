#include "xfer/eval/audit.h"

#include <filesystem>

#include <gtest/gtest.h>

#include "support/errors.h"
#include "support/support.h"
#include "xfer/core/fs.h"
#include "xfer/eval/transfer.h"
#include "xfer/train/finetune.h"
#include "xfer/train/run.h"

namespace xfer::eval {
namespace {

using xfer::testing::SeededTest;
using xfer::testing::TempDir;
namespace fs = std::filesystem;

Lineage chain(std::vector<std::string> ids) {
  Lineage l;
  l.ids = std::move(ids);
  l.paths.assign(l.ids.size(), "");
  return l;
}

TEST(RelationTest, ClassifiesByTheNearestSharedId) {
  const auto target = chain({"t", "p", "g"});  // target, parent, grandparent
  EXPECT_EQ(classify_relation(chain({"t", "p", "g"}), target).relation, Relation::kSelf);
  auto parent = classify_relation(chain({"p", "g"}), target);
  EXPECT_EQ(parent.relation, Relation::kAncestor);
  EXPECT_EQ(parent.common_ancestor, "p");
  EXPECT_EQ(parent.target_steps, 1);
  EXPECT_EQ(classify_relation(chain({"g"}), target).relation, Relation::kAncestor);
  EXPECT_EQ(classify_relation(chain({"c", "t", "p", "g"}), target).relation, Relation::kDescendant);
  auto sibling = classify_relation(chain({"s", "p", "g"}), target);
  EXPECT_EQ(sibling.relation, Relation::kSibling);
  EXPECT_EQ(sibling.proxy_steps, 1);
  auto cousin = classify_relation(chain({"c", "u", "g"}), target);
  EXPECT_EQ(cousin.relation, Relation::kRelative);
  EXPECT_EQ(cousin.common_ancestor, "g");
  auto stranger = classify_relation(chain({"x", "y"}), target);
  EXPECT_EQ(stranger.relation, Relation::kUnrelated);
  EXPECT_TRUE(stranger.common_ancestor.empty());
  EXPECT_EQ(relation_name(Relation::kSibling), "sibling");
  EXPECT_TRUE(stranger.to_json()["common_ancestor"].is_null());
}

// A base, two children fine-tuned from it, one unrelated model.
class AuditTest : public SeededTest {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new TempDir();
    fs::create_directories(tmp_->file("src"));
    fs::create_directories(tmp_->file("dst"));
    const auto source = xfer::testing::write_synthetic_idx(tmp_->file("src"), 64, 4, 12, 12, 1);
    spec_ = xfer::testing::write_synthetic_idx(tmp_->file("dst"), 45, 3, 12, 12, 2);
    train::TrainRunOptions t;
    t.data = source;
    t.arch = "cnn";
    t.arch_options = R"({"widths": [8, 16], "hidden": 24})";
    t.val_fraction = 0;
    t.train.epochs(2).batch_size(16);
    t.checkpoints = false;
    t.out = tmp_->file("base");
    train::run_train(t);
    int seed = 3;
    for (const char* child : {"child1", "child2"}) {
      train::FinetuneRunOptions f;
      f.source.dir = tmp_->file("base");
      f.data = spec_;
      f.strategy = "full";
      f.train.epochs(2).batch_size(16).seed(seed++);
      f.checkpoints = false;
      f.out = tmp_->file(child);
      train::run_finetune(f);
    }
    train::TrainRunOptions u;
    u.data = spec_;
    u.arch = "mlp";
    u.arch_options = R"({"hidden": [32]})";
    u.val_fraction = 0;
    u.train.epochs(2).batch_size(16).seed(9);
    u.checkpoints = false;
    u.out = tmp_->file("stranger");
    train::run_train(u);
  }
  static void TearDownTestSuite() { delete tmp_; }
  AuditOptions options() const {
    AuditOptions o;
    o.target = model_source_from_path(tmp_->file("child1"));
    for (const char* p : {"stranger", "base", "child2"}) o.proxies.push_back(model_source_from_path(tmp_->file(p)));
    o.data = spec_;
    o.attacks = {"fgsm", "pgd"};
    o.eps = {0.1, 0.2};
    o.overrides = {{"steps", 2}};
    o.batch_size = 16;
    o.predictor_samples = 20;
    o.out = dir_.file("audit");
    return o;
  }
  static TempDir* tmp_;
  static std::string spec_;
  TempDir dir_;
};
TempDir* AuditTest::tmp_ = nullptr;
std::string AuditTest::spec_;

TEST_F(AuditTest, ReadsTheLineageFromCards) {
  auto child = io::load_model_dir(tmp_->file("child1"));
  auto base = io::load_model_dir(tmp_->file("base"));
  auto l = lineage_of(child);
  ASSERT_EQ(l.ids.size(), 2u);
  EXPECT_EQ(l.ids[0], child.card.id);
  EXPECT_EQ(l.ids[1], base.card.id);
  EXPECT_TRUE(l.complete);
  EXPECT_EQ(lineage_of(base).ids.size(), 1u);
  // Moved trees still resolve: the parent is looked up beside the child too.
  fs::create_directories(dir_.file("moved"));
  fs::copy(tmp_->file("base"), dir_.file("moved/base"));
  fs::copy(tmp_->file("child1"), dir_.file("moved/child1"));
  auto moved = io::load_model_dir(dir_.file("moved/child1"));
  moved.card.parent->path = "/nonexistent/base";
  auto lm = lineage_of(moved);
  EXPECT_TRUE(lm.complete);
  EXPECT_EQ(lm.paths[1], dir_.file("moved/base"));
  // A parent that cannot be found ends the chain at its id.
  moved.card.parent->path = "/nonexistent/elsewhere";
  auto cut = lineage_of(moved);
  EXPECT_FALSE(cut.complete);
  EXPECT_EQ(cut.ids.back(), base.card.id);
}

TEST_F(AuditTest, ClassifiesRanksAndWritesTheReport) {
  auto o = options();
  auto r = run_audit(o);
  for (const char* f : {"audit.json", "summary.md"}) EXPECT_TRUE(fs::exists(o.out + "/" + f)) << f;
  const auto a = read_json(o.out + "/audit.json");
  EXPECT_EQ(a["format"], "xfer-audit/1");
  EXPECT_FALSE(a["target"]["black_box"].get<bool>());
  std::map<std::string, std::string> relation;
  double previous = 2;
  for (const auto& p : a["proxies"]) {
    relation[p["name"]] = p["relation"]["relation"];
    const double best = p["best_by_eps"][0]["success"].get<double>();
    EXPECT_LE(best, previous) << "ranked by success";
    previous = best;
    bool has_feature = false;
    for (const auto& c : p["cells"]) {
      has_feature = has_feature || c["attack"] == "feature";
      EXPECT_EQ(c["target"], "child1");
    }
    // The feature attack runs on ancestors only; fgsm and pgd on all, at both budgets.
    EXPECT_EQ(has_feature, p["name"] == "base") << p["name"];
    EXPECT_EQ(p["cells"].size(), p["name"] == "base" ? 6u : 4u);
  }
  EXPECT_EQ(relation["base"], "ancestor");
  EXPECT_EQ(relation["child2"], "sibling");
  EXPECT_EQ(relation["stranger"], "unrelated");
  EXPECT_EQ(a["white_box_reference"].size(), 2u);
  EXPECT_TRUE(a["white_box_reference"][0]["white_box"].get<bool>());
  EXPECT_EQ(a["by_relation"].size(), 3u);
  EXPECT_EQ(a["most_dangerous"]["proxy"], a["proxies"][0]["name"]);
  EXPECT_TRUE(a["predictor_spearman_vs_success"].contains("cka"));
  EXPECT_NE(r.summary.find("Most dangerous proxy"), std::string::npos);
  EXPECT_NE(r.summary.find("sibling"), std::string::npos);
  // The lineage sentence places every related group against the unrelated one.
  double unrelated = -1;
  for (const auto& g : a["by_relation"]) {
    if (g["relation"] == "unrelated") unrelated = g["mean_best_success"].get<double>();
  }
  ASSERT_GE(unrelated, 0);
  int above = 0, below = 0;
  for (const auto& g : a["by_relation"]) {
    if (g["relation"] == "unrelated") continue;
    const double m = g["mean_best_success"].get<double>();
    (m > unrelated ? above : below)++;
    char text[64];
    std::snprintf(text, sizeof text, "%s %.1f%%", g["relation"].get<std::string>().c_str(),
                  100 * m);
    EXPECT_NE(r.summary.find(text), std::string::npos) << text << "\n" << r.summary;
  }
  EXPECT_NE(r.summary.find(below == 0 ? "Proxies that share the target's lineage fool it more often"
                           : above == 0 ? "did not raise the risk"
                                        : "Part of the target's lineage fools it more often"),
            std::string::npos)
      << r.summary;
  EXPECT_EQ(read_file(o.out + "/summary.md"), r.summary);
  // A rerun into the same directory crafts nothing.
  auto again = run_audit(o);
  EXPECT_EQ(again.sets_crafted, 0);
  EXPECT_EQ(again.sets_cached, r.sets_crafted + r.sets_cached);
}

// A proxy of another task (a base with other classes) gets the feature attack
// only, and no label-based predictors: the correlations count the proxies each ranks.
TEST_F(AuditTest, PredictorCorrelationsCountTheProxiesTheyRank) {
  xfer::testing::copy_model_renaming_classes(tmp_->file("stranger"), dir_.file("other"),
                                             {"x", "y", "z"});
  auto o = options();
  o.proxies.push_back(model_source_from_path(dir_.file("other")));
  o.attacks = {"fgsm"};
  o.eps = {0.1};
  auto r = run_audit(o);
  const auto& n = r.audit["predictor_spearman_proxies"];
  EXPECT_EQ(n["cka"], 4);
  EXPECT_EQ(n["gradient_alignment"], 3);
  EXPECT_EQ(n["agreement"], 3);
  for (const auto& p : r.audit["proxies"]) {
    EXPECT_EQ(p["predictors"]["gradient_alignment"].is_number(), p["name"] != "other") << p["name"];
  }
  EXPECT_NE(r.summary.find("over 4 proxies"), std::string::npos) << r.summary;
  EXPECT_NE(r.summary.find(" (3 proxies)"), std::string::npos) << r.summary;
}

TEST_F(AuditTest, ATorchScriptTargetIsAnUnrelatedBlackBox) {
  TempDir ts;
  if (!xfer::testing::make_torchscript_golden(ts.path())) GTEST_SKIP() << "python3-torch not available";
  fs::create_directories(dir_.file("d28"));
  auto o = options();
  o.data = xfer::testing::write_synthetic_idx(dir_.file("d28"), 20, 3, 28, 28, 5);
  train::TrainRunOptions t;
  t.data = o.data;
  t.arch = "mlp";
  t.arch_options = R"({"hidden": [16]})";
  t.val_fraction = 0;
  t.train.epochs(1).batch_size(10);
  t.checkpoints = false;
  t.out = dir_.file("proxy28");
  train::run_train(t);
  o.target = model_source_from_path(ts.file("classifier.pt"));
  o.proxies = {model_source_from_path(dir_.file("proxy28"))};
  o.attacks = {"fgsm"};
  o.eps = {0.1};
  o.white_box_reference = false;
  auto r = run_audit(o);
  EXPECT_TRUE(r.audit["target"]["black_box"].get<bool>());
  EXPECT_EQ(r.audit["proxies"][0]["relation"]["relation"], "unrelated");
  EXPECT_NE(r.summary.find("black box"), std::string::npos);
}

TEST_F(AuditTest, BadOptionsAreRefusedBeforeAnyWork) {
  auto o = options();
  o.proxies.clear();
  xfer::testing::expect_error_naming([&] { run_audit(o); }, "--proxies");
  auto e = options();
  e.eps = {0.1, 2.0};
  xfer::testing::expect_error_naming([&] { run_audit(e); }, "--eps");
  auto b = options();
  b.attacks = {"pgd", "warp-drive"};
  xfer::testing::expect_error_naming([&] { run_audit(b); }, "warp-drive");
  // The feature attack on ancestors alone would leave other proxies nothing to rank.
  auto none = options();
  none.attacks.clear();
  none.feature_on_ancestors = true;
  xfer::testing::expect_error_naming([&] { run_audit(none); }, "--attack");
  EXPECT_FALSE(fs::exists(o.out));
}

}  // namespace
}  // namespace xfer::eval
