#include "xfer/train/run.h"

#include <filesystem>
#include <functional>

#include "support/errors.h"
#include "support/support.h"
#include "xfer/core/error.h"
#include "xfer/core/fs.h"
#include "xfer/core/runtime.h"
#include "xfer/core/sha256.h"
#include "xfer/io/checkpoint.h"

namespace xfer::train {
namespace {

using xfer::testing::SeededTest;
using xfer::testing::TempDir;
namespace fs = std::filesystem;

class TrainRunTest : public SeededTest {
 protected:
  TrainRunOptions options() {
    TrainRunOptions o;
    o.data = xfer::testing::write_synthetic_idx(tmp_.path(), 120, 3, 12, 12, 5);
    o.arch = "mlp";
    o.arch_options = R"({"hidden": [16]})";
    o.train.epochs(2).batch_size(16);
    o.out = tmp_.file("model");
    return o;
  }
  TempDir tmp_;
};

TEST_F(TrainRunTest, WritesACompleteModelDirectory) {
  auto o = options();
  int epochs_seen = 0;
  o.on_epoch = [&](const EpochRecord&) { ++epochs_seen; };
  auto r = run_train(o);
  EXPECT_EQ(epochs_seen, 2);
  auto lm = io::load_model_dir(o.out);
  EXPECT_EQ(lm.card.id, sha256_file(o.out + "/model.safetensors"));
  EXPECT_EQ(lm.card.id, r.card.id);
  EXPECT_FALSE(lm.card.parent.has_value());
  EXPECT_EQ(lm.card.recipe["arch"], "mlp");
  EXPECT_EQ(lm.card.recipe["epochs"], 2);
  EXPECT_EQ(lm.card.data["spec"], o.data);
  EXPECT_EQ(lm.card.data["sha256"].get<std::string>().size(), 64u);
  EXPECT_EQ(lm.card.metrics["history"].size(), 2u);
  EXPECT_EQ(lm.config.num_classes, 3);
  EXPECT_EQ(lm.config.input_shape, (std::vector<int64_t>{1, 12, 12}));
  ASSERT_EQ(lm.config.mean.size(), 1u);
  EXPECT_GT(lm.config.mean[0], 0.0);
  EXPECT_EQ(r.train_samples + r.val_samples, 120);
  // Nothing but the directory itself is left in the parent.
  int entries = 0;
  for (const auto& e : fs::directory_iterator(tmp_.path())) entries += e.path().filename() == "model";
  EXPECT_EQ(entries, 1);
}

TEST_F(TrainRunTest, CosineHeadIsTrainedSavedAndRecorded) {
  auto o = options();
  o.head_type = "cosine:8";
  o.val_fraction = 0;
  run_train(o);
  auto lm = io::load_model_dir(o.out);
  EXPECT_EQ(lm.model->head_options().kind(), "cosine");
  EXPECT_DOUBLE_EQ(lm.model->head_options().scale(), 8.0);
  EXPECT_EQ(lm.card.recipe["head_type"], "cosine:8");
  // Its logits are what a cosine head of these weights gives: |logit - bias| <= scale.
  lm.model->eval();
  torch::NoGradGuard ng;
  auto logits = lm.model->forward(torch::rand({5, 1, 12, 12}) * 50);
  EXPECT_LE((logits - lm.model->head()->bias).abs().max().item<double>(), 8.0 + 1e-4);
}

// A scratch baseline on a k-shot SPEC trains on the images finetune trains on.
TEST_F(TrainRunTest, AKShotSpecKeepsEveryImageForTrainingByDefault) {
  auto o = options();
  o.train.epochs(1);
  auto all = run_train(o);
  EXPECT_EQ(all.train_samples + all.val_samples, 120);
  EXPECT_GT(all.val_samples, 0);
  EXPECT_DOUBLE_EQ(all.card.recipe["val_fraction"].get<double>(), 0.1);
  o.out = tmp_.file("kshot");
  o.data += ":shots=10";
  auto k = run_train(o);
  EXPECT_EQ(k.train_samples, 30);
  EXPECT_EQ(k.val_samples, 0);
  EXPECT_DOUBLE_EQ(k.card.recipe["val_fraction"].get<double>(), 0.0);
  o.out = tmp_.file("kshot-val");
  o.val_fraction = 0.2;
  auto kv = run_train(o);
  EXPECT_GT(kv.val_samples, 0);
  EXPECT_EQ(kv.train_samples + kv.val_samples, 30);
}

TEST_F(TrainRunTest, RefusesAnExistingOutputBeforeTraining) {
  auto o = options();
  fs::create_directory(o.out);
  EXPECT_THROW(run_train(o), Error);
  o.overwrite = Overwrite::kYes;
  EXPECT_NO_THROW(run_train(o));
  EXPECT_TRUE(fs::exists(o.out + "/card.json"));
}

TEST_F(TrainRunTest, BadInputLeavesNoOutput) {
  auto o = options();
  o.arch = "nonesuch";
  EXPECT_THROW(run_train(o), UsageError);
  o = options();
  o.arch_options = "{not json";
  EXPECT_THROW(run_train(o), UsageError);
  o = options();
  o.head_type = "cosine:-1";
  EXPECT_THROW(run_train(o), UsageError);
  o = options();
  o.head_type = "cosine";
  o.train.objective("simclr");
  EXPECT_THROW(run_train(o), UsageError);
  o = options();
  o.data += ":classes=7";
  EXPECT_THROW(run_train(o), Error);
  EXPECT_FALSE(fs::exists(o.out));
  for (const auto& e : fs::directory_iterator(tmp_.path())) {
    EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << e.path();
  }
}

// A checkpoint directory is removed after the run, so xfer writes only into
// one that is new or holds nothing but a checkpoint, never into --out.
TEST_F(TrainRunTest, CheckpointDirectoryHoldsOnlyACheckpointAndLiesOutsideTheOutput) {
  const std::string mine = tmp_.file("mine");
  fs::create_directory(mine);
  write_file_atomic(mine + "/notes.txt", "keep me");
  auto o = options();
  o.resume = mine;
  xfer::testing::expect_error_naming([&] { run_train(o); }, "holds no xfer checkpoint");
  o = options();
  o.checkpoint_dir = mine;
  xfer::testing::expect_error_naming([&] { run_train(o); }, "notes.txt");
  EXPECT_TRUE(fs::exists(mine + "/notes.txt"));
  EXPECT_FALSE(fs::exists(o.out));
  for (const std::string& dir : {o.out, o.out + "/ckpt", tmp_.path()}) {
    o = options();
    o.overwrite = Overwrite::kYes;
    o.checkpoint_dir = dir;
    EXPECT_THROW(run_train(o), UsageError) << dir;
  }
  // A run with its own new directory removes it; a kept one is removed later
  // file by file, leaving what else was put there.
  o = options();
  o.checkpoint_dir = tmp_.file("fresh");
  run_train(o);
  EXPECT_FALSE(fs::exists(o.checkpoint_dir));
  o = options();
  o.out = tmp_.file("model2");
  o.checkpoint_dir = tmp_.file("kept");
  o.keep_checkpoint = true;
  run_train(o);
  ASSERT_TRUE(io::has_checkpoint(o.checkpoint_dir));
  write_file_atomic(o.checkpoint_dir + "/checkpoint.safetensors.tmp-1-2-3", "torn");
  write_file_atomic(o.checkpoint_dir + "/other", "x");
  remove_checkpoint_dir(o.checkpoint_dir);
  EXPECT_FALSE(io::has_checkpoint(o.checkpoint_dir));
  EXPECT_FALSE(fs::exists(o.checkpoint_dir + "/checkpoint.safetensors.tmp-1-2-3"));
  EXPECT_TRUE(fs::exists(o.checkpoint_dir + "/other"));
  fs::remove(o.checkpoint_dir + "/other");
  remove_checkpoint_dir(o.checkpoint_dir);
  EXPECT_FALSE(fs::exists(o.checkpoint_dir));
}

struct Crash {};

TEST_F(TrainRunTest, ResumesAfterACrashToTheSameWeights) {
  auto ref = options();
  ref.train.epochs(3);
  ref.arch = "cnn";
  ref.arch_options = R"({"widths": [4, 8], "hidden": 16})";
  ref.out = tmp_.file("ref");
  const std::string expected = run_train(ref).card.id;
  EXPECT_FALSE(fs::exists(ref.out + ".ckpt"));
  auto o = ref;
  o.out = tmp_.file("crashed");
  o.checkpoint_every = 2;
  o.on_epoch = [](const EpochRecord& r) {
    if (r.epoch == 2) throw Crash{};
  };
  EXPECT_THROW(run_train(o), Crash);
  EXPECT_FALSE(fs::exists(o.out));
  o.on_epoch = nullptr;
  // A second start without --resume names it; a different recipe is refused.
  try {
    run_train(o);
    ADD_FAILURE() << "started over a checkpoint";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("--resume"), std::string::npos);
  }
  o.resume = o.out + ".ckpt";
  auto other = o;
  other.train.lr(0.5);
  EXPECT_THROW(run_train(other), UsageError);
  auto r = run_train(o);
  EXPECT_TRUE(r.resumed);
  EXPECT_EQ(r.card.id, expected);
  EXPECT_EQ(r.train.history.size(), 3u);
  EXPECT_FALSE(fs::exists(o.resume));
}

TEST_F(TrainRunTest, SimclrWritesAnEncoderThatOnlyFinetuningAndFeatureAttacksAccept) {
  auto o = options();
  o.train.objective("simclr").batch_size(32);
  o.proj_dim = 8;
  auto r = run_train(o);
  auto lm = io::load_model_dir(o.out);
  EXPECT_EQ(lm.config.task, "embedding");
  EXPECT_EQ(lm.config.num_classes, 8);
  EXPECT_TRUE(lm.config.class_names.empty());
  EXPECT_EQ(lm.card.recipe["objective"], "simclr");
  EXPECT_EQ(lm.card.recipe["strategy"], "self-supervised");
  EXPECT_EQ(lm.card.recipe["proj_dim"], 8);
  EXPECT_EQ(r.card.id, lm.card.id);
  try {
    io::require_classifier(lm, "xfer eval");
    ADD_FAILURE() << "an embedding model passed as a classifier";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("xfer finetune --from"), std::string::npos) << e.what();
  }
  // A classifier's config keeps its form (no "task" key) and passes.
  auto plain = options();
  plain.out = tmp_.file("plain");
  run_train(plain);
  auto pm = io::load_model_dir(plain.out);
  EXPECT_EQ(pm.config.task, "classifier");
  EXPECT_FALSE(pm.config.to_json().contains("task"));
  EXPECT_NO_THROW(io::require_classifier(pm, "xfer eval"));
  auto bad = o;
  bad.out = tmp_.file("bad");
  bad.proj_dim = 1;
  EXPECT_THROW(run_train(bad), UsageError);
}

// The views are a function of (seed, step): a crashed simclr run resumes to
// the uninterrupted run's weights.
TEST_F(TrainRunTest, SimclrResumesAfterACrashToTheSameWeights) {
  auto ref = options();
  ref.train.epochs(3).batch_size(32).objective("simclr");
  ref.arch = "cnn";
  ref.arch_options = R"({"widths": [4, 8], "hidden": 16})";
  ref.proj_dim = 8;
  ref.out = tmp_.file("ref");
  const std::string expected = run_train(ref).card.id;
  auto o = ref;
  o.out = tmp_.file("crashed");
  o.checkpoint_every = 1;
  o.on_epoch = [](const EpochRecord& r) {
    if (r.epoch == 2) throw Crash{};
  };
  EXPECT_THROW(run_train(o), Crash);
  o.on_epoch = nullptr;
  o.resume = o.out + ".ckpt";
  auto other = o;
  other.train.temperature(0.5);
  EXPECT_THROW(run_train(other), UsageError);  // another recipe
  auto r = run_train(o);
  EXPECT_TRUE(r.resumed);
  EXPECT_EQ(r.card.id, expected);
}

}  // namespace
}  // namespace xfer::train

namespace xfer::train {
namespace {

TEST(TrainSettingsTest, DefaultsResolveAndEverySettingCounts) {
  TrainRunOptions a;
  a.data = "fashion-mnist:train:classes=5-9:shots=10";
  const Json key = a.settings();
  EXPECT_EQ(key["revision"], results_revision());
  EXPECT_EQ(key["val_fraction"], 0.0);  // k-shot: every image trains
  auto same = [&](const std::function<void(TrainRunOptions&)>& edit) {
    TrainRunOptions b = a;
    edit(b);
    return b.settings() == key;
  };
  EXPECT_TRUE(same([](auto& b) { b.val_fraction = 0; }));
  EXPECT_TRUE(same([](auto& b) { b.arch_options = " { } "; }));
  EXPECT_FALSE(same([](auto& b) { b.arch_options = R"({"hidden":[32]})"; }));
  EXPECT_FALSE(same([](auto& b) { b.normalize = false; }));
  EXPECT_FALSE(same([](auto& b) { b.head_type = "cosine"; }));
  EXPECT_FALSE(same([](auto& b) { b.arch = "mlp"; }));
  EXPECT_FALSE(same([](auto& b) { b.train.epochs(3); }));
  TrainRunOptions all = a;
  all.data = "fashion-mnist:train";
  EXPECT_EQ(all.settings()["val_fraction"], 0.1);
}

}  // namespace
}  // namespace xfer::train
