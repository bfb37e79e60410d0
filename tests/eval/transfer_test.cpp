#include "xfer/eval/transfer.h"

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "support/errors.h"
#include "support/support.h"
#include "xfer/attack/run.h"
#include "xfer/core/fs.h"
#include "xfer/core/parse.h"
#include "xfer/eval/metrics.h"
#include "xfer/train/run.h"

namespace xfer::eval {
namespace {

using xfer::testing::SeededTest;
using xfer::testing::TempDir;
namespace fs = std::filesystem;

TEST(TransferCellTest, CountsRatesAndWilsonIntervals) {
  auto labels = torch::tensor({0, 1, 2, 3}, torch::kLong);
  auto clean = torch::tensor({0, 1, 2, 0}, torch::kLong);  // 3 correct
  auto adv = torch::tensor({1, 1, 0, 0}, torch::kLong);    // fools 2 of them; 3 of 4 wrong
  auto c = transfer_cell(labels, clean, adv);
  EXPECT_EQ(c.n, 4);
  EXPECT_EQ(c.clean_correct, 3);
  EXPECT_EQ(c.fooled, 2);
  EXPECT_EQ(c.misclassified, 3);
  EXPECT_DOUBLE_EQ(c.success_rate, 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(c.rate_all, 0.75);
  // Wilson 95% for 2/3 and 3/4 (z = 1.95996).
  EXPECT_NEAR(c.success_low, 0.2076596, 1e-6);
  EXPECT_NEAR(c.success_high, 0.9385081, 1e-6);
  EXPECT_NEAR(c.rate_all_low, 0.3006418, 1e-6);
  EXPECT_NEAR(c.rate_all_high, 0.9544127, 1e-6);
  EXPECT_FALSE(c.targeted);
  auto t = transfer_cell(labels, clean, adv, torch::tensor({1, 2, 0, 1}, torch::kLong));
  EXPECT_TRUE(t.targeted);
  EXPECT_EQ(t.target_hits, 2);
  EXPECT_EQ(t.target_n, 4);
  EXPECT_DOUBLE_EQ(t.target_rate, 0.5);
  EXPECT_DOUBLE_EQ(t.headline().rate, 0.5);
  EXPECT_EQ(t.headline().n, 4);
  EXPECT_DOUBLE_EQ(t.headline().high, t.target_high);
  EXPECT_DOUBLE_EQ(c.headline().rate, c.success_rate);
  EXPECT_EQ(c.headline().n, c.clean_correct);
  // label:0: the sample of class 0 is not a success for staying 0; the rate is over the other 3.
  auto k0 = transfer_cell(labels, clean, torch::tensor({0, 1, 0, 0}, torch::kLong),
                          torch::zeros({4}, torch::kLong));
  EXPECT_EQ(k0.target_n, 3);
  EXPECT_EQ(k0.target_hits, 2);
  EXPECT_DOUBLE_EQ(k0.target_rate, 2.0 / 3.0);
  EXPECT_EQ(k0.to_json()["target_n"], 3);
  // Nothing classified correctly: rate 0, interval [0, 1], no division by zero.
  auto none = transfer_cell(labels, torch::tensor({3, 3, 3, 2}, torch::kLong), adv);
  EXPECT_EQ(none.clean_correct, 0);
  EXPECT_DOUBLE_EQ(none.success_rate, 0.0);
  EXPECT_DOUBLE_EQ(none.success_high, 1.0);
  EXPECT_THROW(transfer_cell(labels, clean.slice(0, 0, 3), adv), Error);
}

TEST(TransferCellTest, CsvAndHeatmapEscapeNames) {
  auto labels = torch::tensor({0, 1}, torch::kLong);
  auto c = transfer_cell(labels, labels, torch::tensor({1, 1}, torch::kLong));
  c.source = "a,\"b\"";
  c.target = "t<1>";
  c.attack = "pgd";
  c.eps = 0.1;
  auto d = c;
  d.source = "plain";
  d.white_box = true;
  Json pairs = {{"plain\tt<1>", {{"gradient_alignment", 0.5}, {"cka", nullptr}, {"agreement", 1.0}}}};
  const std::string csv = transfer_csv({c, d}, pairs);
  auto lines = split(csv, '\n');
  ASSERT_EQ(lines.size(), 4u);  // header, two rows, final newline
  EXPECT_EQ(lines[1].rfind("\"a,\"\"b\"\"\",t<1>,pgd,0.100000,0,2,2,1,0.500000", 0), 0u) << lines[1];
  const auto columns = [](const std::string& line) {
    size_t n = 1;
    bool quoted = false;
    for (char ch : line) {
      if (ch == '"') quoted = !quoted;
      if (ch == ',' && !quoted) ++n;
    }
    return n;
  };
  EXPECT_EQ(columns(lines[0]), 26u);
  EXPECT_EQ(columns(lines[1]), 26u);
  EXPECT_EQ(columns(lines[2]), 26u);
  EXPECT_NE(lines[2].find(",0.500000,,1.000000"), std::string::npos) << lines[2];  // cka null -> empty
  const std::string svg = transfer_heatmap_svg({c, d});
  EXPECT_EQ(svg.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0), 0u);
  EXPECT_NE(svg.find("t&lt;1&gt;"), std::string::npos);
  EXPECT_EQ(svg.find("t<1>"), std::string::npos);
  EXPECT_NE(svg.find("stroke=\"black\""), std::string::npos);  // the white-box cell is outlined
  EXPECT_NE(svg.find("50.0%"), std::string::npos);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
}

TEST(TransferOptionsTest, SourcesAndBadOptions) {
  TempDir tmp;
  write_file_atomic(tmp.file("m.pt"), "x");
  EXPECT_EQ(model_source_from_path(tmp.file("m.pt")).torchscript, tmp.file("m.pt"));
  EXPECT_EQ(model_source_from_path(tmp.path()).dir, tmp.path());
  auto ens = TransferSource::parse("a+b");
  ASSERT_EQ(ens.models.size(), 2u);
  EXPECT_EQ(ens.models[1].dir, "b");
  xfer::testing::expect_error_naming([] { TransferSource::parse("a+"); }, "A+B");
  TransferOptions o;
  o.sources = {TransferSource::parse("a")};
  o.targets = {model_source_from_path("b")};
  o.data = "fashion-mnist:test";
  o.out = tmp.file("out");
  o.validate();
  auto bad = [&](auto change, const std::string& needle) {
    TransferOptions b = o;
    change(b);
    xfer::testing::expect_error_naming([&] { b.validate(); }, needle);
  };
  bad([](TransferOptions& b) { b.sources.clear(); }, "--sources");
  bad([](TransferOptions& b) { b.targets.clear(); }, "--targets");
  bad([](TransferOptions& b) { b.attacks = {"pgd", "nope"}; }, "nope");
  bad([](TransferOptions& b) { b.eps = {0.1, -1}; }, "--eps");
  bad([](TransferOptions& b) { b.eps.clear(); }, "--eps");
  bad([](TransferOptions& b) { b.overrides = {{"eps", 0.2}}; }, "--eps");
  bad([](TransferOptions& b) { b.overrides = {{"steps", 0}}; }, "--steps");
  bad([](TransferOptions& b) { b.batch_size = 0; }, "--batch-size");
  // --steps for a suite of fgsm alone would be dropped for every attack: refused.
  bad([](TransferOptions& b) { b.attacks = {"fgsm"}; b.overrides = {{"steps", 10}}; }, "fgsm fixes steps");
  bad([](TransferOptions& b) { b.attacks = {"fgsm"}; b.overrides = {{"alpha", 0.01}}; }, "fgsm fixes alpha");
  TransferOptions mixed = o;  // with pgd beside it, fgsm keeps its step and pgd takes the flag
  mixed.attacks = {"fgsm", "pgd"};
  mixed.overrides = {{"steps", 10}};
  EXPECT_NO_THROW(mixed.validate());
}

// Three small cnns on synthetic data: A and B (two seeds), C (another width).
class TransferRunTest : public SeededTest {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new TempDir();
    fs::create_directories(tmp_->file("d"));
    spec_ = xfer::testing::write_synthetic_idx(tmp_->file("d"), 48, 3, 12, 12, 4);
    int seed = 1;
    for (const char* name : {"A", "B", "C"}) {
      train::TrainRunOptions t;
      t.data = spec_;
      t.arch = "cnn";
      t.arch_options = std::string(name) == "C" ? R"({"widths": [6], "hidden": 16})"
                                                  : R"({"widths": [8, 16], "hidden": 24})";
      t.val_fraction = 0;
      t.train.epochs(2).batch_size(8).seed(seed++);
      t.checkpoints = false;
      t.out = tmp_->file(name);
      train::run_train(t);
    }
  }
  static void TearDownTestSuite() { delete tmp_; }
  TransferOptions options() const {
    TransferOptions o;
    for (const char* s : {"A", "B"}) o.sources.push_back(TransferSource::parse(tmp_->file(s)));
    o.sources.push_back(TransferSource::parse(tmp_->file("A") + "+" + tmp_->file("C")));
    for (const char* t : {"A", "B", "C"}) o.targets.push_back(model_source_from_path(tmp_->file(t)));
    o.data = spec_;
    o.attacks = {"fgsm", "pgd"};
    o.eps = {0.05, 0.2};
    o.overrides = {{"steps", 3}};
    o.batch_size = 20;
    o.predictor_samples = 30;
    o.out = dir_.file("t");
    return o;
  }
  static TempDir* tmp_;
  static std::string spec_;
  TempDir dir_;
};
TempDir* TransferRunTest::tmp_ = nullptr;
std::string TransferRunTest::spec_;

TEST_F(TransferRunTest, MatrixDiagonalIsTheWhiteBoxRateAndRerunsCraftNothing) {
  auto o = options();
  auto r = run_transfer(o);
  ASSERT_EQ(r.cells.size(), 3u * 3u * 2u * 2u);
  EXPECT_EQ(r.sets_crafted, 3 * 2 * 2);
  EXPECT_EQ(r.sets_cached, 0);
  for (const char* f : {"matrix.json", "matrix.csv", "heatmap.svg"}) EXPECT_TRUE(fs::exists(o.out + "/" + f)) << f;
  auto m = read_json(o.out + "/matrix.json");
  EXPECT_EQ(m["format"], "xfer-transfer/1");
  EXPECT_EQ(m["cells"].size(), r.cells.size());
  const auto csv = split(read_file(o.out + "/matrix.csv"), '\n');
  EXPECT_EQ(csv.size(), r.cells.size() + 2);
  // Every rate carries its n (targeted too), and every row has the header's columns.
  EXPECT_NE(csv[0].find(",targeted,target_n,target_hits,target_rate,"), std::string::npos) << csv[0];
  for (size_t i = 1; i + 1 < csv.size(); ++i) {
    EXPECT_EQ(std::count(csv[i].begin(), csv[i].end(), ','), std::count(csv[0].begin(), csv[0].end(), ','))
        << csv[i];
  }
  // One --steps for the suite: the iterative attack takes it, fgsm stays a
  // single step (it used to become a 3-step BIM), and the matrix says so.
  EXPECT_EQ(m["options"]["pgd"]["steps"], 3);
  EXPECT_EQ(m["options"]["fgsm"]["steps"], 1);
  EXPECT_FALSE(m["options"]["fgsm"].contains("eps"));

  int white = 0;
  for (const auto& c : r.cells) {
    EXPECT_EQ(c.white_box, c.source == c.target) << c.source << " " << c.target;
    EXPECT_EQ(c.n, 48);
    EXPECT_LE(c.linf_mean, c.eps + 1e-6);
    EXPECT_GE(c.success_rate, c.success_low);
    EXPECT_LE(c.success_rate, c.success_high);
    if (!c.white_box) continue;
    ++white;
    // The diagonal equals the white-box rate `xfer attack` reports on the same options.
    attack::AttackSetOptions a;
    a.surrogates = {model_source_from_path(tmp_->file(c.source))};
    a.data = spec_;
    a.attack = c.attack;
    a.overrides = attack::overrides_for(c.attack, {{"steps", 3}});
    a.overrides["eps"] = c.eps;
    a.batch_size = 20;
    a.out = dir_.file("adv_" + c.source + c.attack + std::to_string(white));
    auto set = attack::run_attack_set(a);
    EXPECT_DOUBLE_EQ(c.success_rate, set.info["white_box_success"]["rate"].get<double>()) << c.attack;
    EXPECT_EQ(c.clean_correct, set.info["white_box_success"]["clean_correct"].get<int64_t>());
  }
  EXPECT_EQ(white, 2 * 2 * 2);  // A->A and B->B, two attacks, two budgets
  // Larger budgets fool at least as many on the diagonal.
  for (const auto& c : r.cells) {
    if (!c.white_box || c.eps != 0.05) continue;
    for (const auto& d : r.cells) {
      if (d.white_box && d.source == c.source && d.attack == c.attack && d.eps == 0.2) {
        EXPECT_GE(d.success_rate, c.success_rate);
      }
    }
  }
  // Predictors: a model with itself aligns perfectly; ensembles have none.
  const auto& pairs = m["predictors"]["pairs"];
  EXPECT_EQ(pairs.size(), 2u * 3u);
  for (const auto& p : pairs) {
    if (p["source"] == p["target"]) {
      EXPECT_NEAR(p["gradient_alignment"].get<double>(), 1.0, 1e-9);
      EXPECT_NEAR(p["cka"].get<double>(), 1.0, 1e-9);
      EXPECT_DOUBLE_EQ(p["agreement"].get<double>(), 1.0);
    } else {
      EXPECT_LT(p["gradient_alignment"].get<double>(), 0.999);
    }
  }
  EXPECT_EQ(m["predictors"]["spearman_vs_success"].size(), 4u);

  // A rerun reuses every adversarial set and reproduces every cell.
  auto again = run_transfer(o);
  EXPECT_EQ(again.sets_crafted, 0);
  EXPECT_EQ(again.sets_cached, 12);
  ASSERT_EQ(again.cells.size(), r.cells.size());
  for (size_t i = 0; i < r.cells.size(); ++i) EXPECT_EQ(again.cells[i].fooled, r.cells[i].fooled);
  // Another budget list reuses what it shares and crafts the rest.
  auto more = o;
  more.eps = {0.2, 0.1};
  auto third = run_transfer(more);
  EXPECT_EQ(third.sets_cached, 6);
  EXPECT_EQ(third.sets_crafted, 6);
}

TEST_F(TransferRunTest, RefusesAForeignOutputDirectoryAndBadModels) {
  auto o = options();
  fs::create_directories(o.out);
  write_file_atomic(o.out + "/notes.txt", "mine");
  xfer::testing::expect_error_naming([&] { run_transfer(o); }, "not an earlier output");
  EXPECT_FALSE(fs::exists(o.out + "/matrix.json"));
  auto missing = options();
  missing.targets.push_back(model_source_from_path(dir_.file("nowhere")));
  missing.out = dir_.file("t3");
  xfer::testing::expect_error_naming([&] { run_transfer(missing); }, "nowhere");
  // Data of another image size is refused naming the model.
  fs::create_directories(dir_.file("big"));
  auto big = options();
  big.data = xfer::testing::write_synthetic_idx(dir_.file("big"), 10, 3, 16, 16, 1);
  big.out = dir_.file("t2");
  xfer::testing::expect_error_naming([&] { run_transfer(big); }, "12x12");
}

// The assessor's case: the attacker holds only the public self-supervised
// encoder (task embedding, a projection head). It is a source for the feature
// attack (it was refused as "needs a classifier"), never a target.
TEST_F(TransferRunTest, ASelfSupervisedEncoderIsAFeatureAttackSource) {
  train::TrainRunOptions t;
  t.data = spec_;
  t.arch = "cnn";
  t.arch_options = R"({"widths": [8, 16], "hidden": 24})";
  t.val_fraction = 0;
  t.train.epochs(1).batch_size(16).seed(5).objective("simclr");
  t.proj_dim = 8;  // more outputs than the data's 3 classes: still not its labels
  t.checkpoints = false;
  t.out = dir_.file("encoder");
  train::run_train(t);
  auto o = options();
  o.sources = {TransferSource::parse(dir_.file("encoder"))};
  o.attacks = {"pgd", "feature"};
  o.eps = {0.1};
  auto r = run_transfer(o);
  ASSERT_EQ(r.cells.size(), 3u);
  for (const auto& c : r.cells) {
    EXPECT_EQ(c.attack, "feature");
    EXPECT_FALSE(c.white_box);
  }
  ASSERT_EQ(r.matrix["skipped"].size(), 1u);
  EXPECT_EQ(r.matrix["skipped"][0]["attack"], "pgd");
  const auto& corr = r.matrix["predictors"]["spearman_vs_success"][0];
  EXPECT_EQ(corr["pairs_cka"], 3);
  EXPECT_EQ(corr["pairs_gradient_alignment"], 0);
  auto as_target = options();
  as_target.targets = {model_source_from_path(dir_.file("encoder"))};
  as_target.out = dir_.file("t2");
  xfer::testing::expect_error_containing([&] { run_transfer(as_target); },
                                         {"encoder", "needs a classifier"});
}

// Random starts are drawn per batch: another batch size is another set, so the
// cache must not hand back the set of the first.
TEST_F(TransferRunTest, AnotherBatchSizeCraftsAnotherSet) {
  auto o = options();
  o.sources = {TransferSource::parse(tmp_->file("A"))};
  o.targets = {model_source_from_path(tmp_->file("B"))};
  o.attacks = {"pgd"};
  o.eps = {0.1};
  EXPECT_EQ(run_transfer(o).sets_crafted, 1);
  EXPECT_EQ(run_transfer(o).sets_cached, 1);
  o.batch_size = 7;
  auto r = run_transfer(o);
  EXPECT_EQ(r.sets_crafted, 1);
  EXPECT_EQ(r.sets_cached, 0);
}

TEST_F(TransferRunTest, SourcesWithOtherClassesGetOnlyLabelFreeAttacks) {
  // A copy of A whose classes are named differently: a base of another task.
  xfer::testing::copy_model_renaming_classes(tmp_->file("A"), dir_.file("other"), {"x", "y", "z"});
  auto o = options();
  o.sources = {TransferSource::parse(dir_.file("other"))};
  o.attacks = {"fgsm", "feature"};
  o.eps = {0.1};
  auto r = run_transfer(o);
  ASSERT_EQ(r.cells.size(), 3u);  // feature on each target; fgsm skipped
  for (const auto& c : r.cells) EXPECT_EQ(c.attack, "feature");
  ASSERT_EQ(r.matrix["skipped"].size(), 1u);
  EXPECT_EQ(r.matrix["skipped"][0]["attack"], "fgsm");
  EXPECT_NE(transfer_text(r).find("skipped fgsm"), std::string::npos);
  // Its label-based predictors do not apply: the correlations say over how many pairs each ranks.
  ASSERT_EQ(r.matrix["predictors"]["spearman_vs_success"].size(), 1u);
  const auto& corr = r.matrix["predictors"]["spearman_vs_success"][0];
  EXPECT_EQ(corr["pairs"], 2);  // a copy of A: the cell on A is white-box
  EXPECT_EQ(corr["pairs_cka"], 2);
  EXPECT_EQ(corr["pairs_gradient_alignment"], 0);
  EXPECT_EQ(corr["pairs_agreement"], 0);
  EXPECT_NE(transfer_text(r).find("gradient_alignment n/a (0 pairs)"), std::string::npos)
      << transfer_text(r);
  // A source whose classes match, marked label-free, is treated the same way.
  auto lf = options();
  lf.sources = {TransferSource::parse(tmp_->file("A"))};
  lf.sources[0].label_free = true;
  lf.attacks = {"fgsm", "feature"};
  lf.eps = {0.1};
  lf.out = dir_.file("t3");
  auto rl = run_transfer(lf);
  ASSERT_EQ(rl.cells.size(), 3u);
  for (const auto& c : rl.cells) EXPECT_EQ(c.attack, "feature");
  // As a target it is refused: success needs the data's labels.
  auto t = options();
  t.targets = {model_source_from_path(dir_.file("other"))};
  t.out = dir_.file("t4");
  xfer::testing::expect_error_containing([&] { run_transfer(t); }, {"other", "[x, y, z]"});
}

}  // namespace
}  // namespace xfer::eval
