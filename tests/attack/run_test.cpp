#include "xfer/attack/run.h"

#include <filesystem>

#include "support/errors.h"
#include "support/support.h"
#include "xfer/core/sha256.h"
#include "xfer/data/image_folder.h"
#include "xfer/data/spec.h"
#include "xfer/eval/metrics.h"
#include "xfer/io/model_dir.h"
#include "xfer/train/run.h"

namespace xfer::attack {
namespace {

using xfer::testing::TempDir;
namespace fs = std::filesystem;

class AttackSetTest : public xfer::testing::SeededTest {
 protected:
  void SetUp() override {
    SeededTest::SetUp();
    fs::create_directories(tmp_.file("d"));
    spec_ = xfer::testing::write_synthetic_idx(tmp_.file("d"), 40, 3, 12, 12, 1);
    train::TrainRunOptions t;
    t.data = spec_;
    t.arch = "cnn";
    t.arch_options = R"({"widths": [8, 16], "hidden": 24})";
    t.val_fraction = 0;
    t.train.epochs(2).batch_size(8);
    t.checkpoints = false;
    t.out = tmp_.file("model");
    id_ = train::run_train(t).card.id;
  }
  AttackSetOptions options(const std::string& attack) {
    AttackSetOptions o;
    io::ModelSource s;
    s.dir = tmp_.file("model");
    o.surrogates = {s};
    o.data = spec_;
    o.attack = attack;
    o.batch_size = 16;  // three batches, the last one ragged
    o.out = tmp_.file("adv");
    return o;
  }
  TempDir tmp_;
  std::string spec_, id_;
};

TEST_F(AttackSetTest, WritesTheAdversarialSetDirectory) {
  auto o = options("mi-fgsm+di");
  o.overrides = {{"eps", 0.05}, {"seed", 9}};
  auto r = run_attack_set(o);
  EXPECT_EQ(r.samples, 40);
  for (const char* f : {"adv.safetensors", "attack.json", "preview.png"}) {
    EXPECT_TRUE(fs::exists(o.out + "/" + f)) << f;
  }
  auto set = load_adversarial_set(o.out);
  EXPECT_EQ(set.images.sizes(), (std::vector<int64_t>{40, 1, 12, 12}));
  EXPECT_EQ(set.index.sizes(), (std::vector<int64_t>{40}));
  EXPECT_FALSE(set.targets.defined());
  auto clean = data::load(spec_);
  EXPECT_TRUE(torch::equal(set.labels, clean.labels));
  EXPECT_LE((set.images - clean.float_images()).abs().max().item<double>(), 0.05 + 1e-6);
  EXPECT_EQ(set.info["surrogates"][0]["id"], id_);
  EXPECT_EQ(set.info["options"]["momentum"], 1.0);
  EXPECT_EQ(set.info["options"]["eps"], 0.05);
  EXPECT_EQ(set.info["data"]["sha256"], clean.content_hash());
  EXPECT_NEAR(set.info["norms"]["linf_max"].get<double>(), 0.05, 1e-6);
  EXPECT_GE(set.info["white_box_success"]["rate"].get<double>(), 0.0);
  auto preview = data::read_image(o.out + "/preview.png");
  EXPECT_EQ(preview.size(1), 3 * 12 + 4 * 2);  // clean, perturbation, adversarial rows
  // Same options, same bytes: batches are seeded by their index, not by history.
  auto o2 = o;
  o2.out = tmp_.file("adv2");
  run_attack_set(o2);
  EXPECT_EQ(sha256_file(o.out + "/adv.safetensors"), sha256_file(o2.out + "/adv.safetensors"));
}

TEST_F(AttackSetTest, TargetedSetsStoreTargetsAndEnsemblesListEverySurrogate) {
  auto o = options("pgd");
  o.overrides = {{"target", "least-likely"}, {"eps", 0.2}};
  o.surrogates.push_back(o.surrogates[0]);
  auto r = run_attack_set(o);
  auto set = load_adversarial_set(o.out);
  ASSERT_TRUE(set.targets.defined());
  EXPECT_EQ(set.info["surrogates"].size(), 2u);
  const auto& w = set.info["white_box_success"];
  EXPECT_EQ(w["definition"],
            "targeted: classified as the target label, among the samples not already of it");
  // Every sample counts once: as a candidate, or as already of its target.
  EXPECT_EQ(w["samples"].get<int64_t>() + w["already_target"].get<int64_t>(),
            set.info["data"]["samples"].get<int64_t>());
  EXPECT_LE(w["hit"].get<int64_t>(), w["samples"].get<int64_t>());
  // label:0: the samples of class 0 are set aside.
  auto k0 = options("pgd");
  k0.overrides = {{"target", "label:0"}, {"eps", 0.2}};
  k0.out = tmp_.file("adv-label0");
  run_attack_set(k0);
  const auto w0 = load_adversarial_set(k0.out).info["white_box_success"];
  const auto labels = load_adversarial_set(k0.out).labels;
  EXPECT_EQ(w0["already_target"].get<int64_t>(), labels.eq(0).sum().item<int64_t>());
  EXPECT_GT(w0["already_target"].get<int64_t>(), 0);
}

// The preview shows every class of class-sorted data, not its first eight samples.
TEST(AttackPreviewTest, PreviewPositionsTakeClassesInTurn) {
  const auto labels = torch::tensor({0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2}, torch::kLong);
  const auto p = preview_positions(labels);
  ASSERT_EQ(p.size(0), kPreviewColumns);
  EXPECT_TRUE(torch::equal(p, torch::tensor({0, 1, 2, 3, 4, 9, 10, 11}, torch::kLong)));
}

TEST_F(AttackSetTest, BadInputsLeaveNoOutput) {
  auto check = [&](AttackSetOptions o, const std::string& needle) {
    xfer::testing::expect_error_naming([&] { run_attack_set(o); }, needle);
    EXPECT_FALSE(fs::exists(o.out)) << needle;
  };
  auto o = options("pgd");
  o.overrides = {{"eps", 0.0}};
  check(o, "--eps");
  o = options("zap");
  check(o, "unknown attack 'zap'");
  o = options("pgd");
  o.surrogates.clear();
  check(o, "--surrogate");
  o = options("pgd");
  o.surrogates[0].dir = tmp_.file("nothing");
  check(o, "nothing");
  o = options("pgd");
  fs::create_directories(tmp_.file("d28"));
  o.data = xfer::testing::write_synthetic_idx(tmp_.file("d28"), 10, 3, 28, 28, 1);
  check(o, "12x12");
  o = options("pgd");
  o.overrides = {{"target", "label:7"}};
  check(o, "label:7");
  o = options("fgsm");
  o.overrides = {{"steps", 10}};
  check(o, "--steps: fgsm fixes steps to 1");
  // A corrupted set is refused on load.
  auto good = options("fgsm");
  run_attack_set(good);
  write_file_atomic(good.out + "/attack.json", "{\"format\": \"other\"}");
  xfer::testing::expect_error_naming([&] { load_adversarial_set(good.out); }, "xfer-adv/1");
}

// The issue's white-box check: PGD-10 (alpha = 2.5 eps/10, random start) at
// eps 0.1 on a cnn trained 3 epochs on the 60 000 Fashion-MNIST training
// images (test accuracy ~0.92). Measured: 0.985 of the correctly classified
// test images on these 300, 0.964 on 1000; a cnn trained 6 epochs: 0.996 on
// all 10 000. (BIM with eps/10 on a weaker cnn agreed with the PyTorch
// reference of bench/reference on the same weights: 0.771 both.)
TEST(AttackSlowTest, SlowWhiteBoxPgdOnFashionMnistCnn) {
  if (!xfer::testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist not installed";
  TempDir tmp;
  train::TrainRunOptions t;
  t.data = "fashion-mnist:train";
  t.arch = "cnn";
  t.val_fraction = 0;
  t.train.epochs(3).batch_size(128);
  t.checkpoints = false;
  t.out = tmp.file("cnn");
  train::run_train(t);
  std::vector<double> rates;
  for (double eps : {0.1, 0.2}) {
    AttackSetOptions o;
    io::ModelSource s;
    s.dir = t.out;
    o.surrogates = {s};
    o.data = "fashion-mnist:test:shots=30";
    o.attack = "pgd";
    o.overrides = {{"eps", eps}, {"steps", 10}};
    o.out = tmp.file("adv" + std::to_string(rates.size()));
    auto r = run_attack_set(o);
    const auto& wb = r.info["white_box_success"];
    std::cout << "white-box PGD-10 eps " << eps << ": " << wb.dump() << ", " << r.images_per_second
              << " images/s\n";
    EXPECT_GT(wb["clean_correct"].get<int64_t>(), 220);
    rates.push_back(wb["rate"].get<double>());
  }
  EXPECT_GE(rates[0], 0.95);
  EXPECT_GE(rates[1], 0.99);
  EXPECT_GE(rates[1], rates[0]);
}

}  // namespace
}  // namespace xfer::attack
