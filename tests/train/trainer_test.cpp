#include "xfer/train/trainer.h"

#include <algorithm>
#include <cmath>

#include "support/errors.h"
#include "support/support.h"
#include "xfer/attack/attack.h"
#include "xfer/core/error.h"
#include "xfer/core/runtime.h"
#include "xfer/data/spec.h"
#include "xfer/models/registry.h"

namespace xfer::train {
namespace {

using xfer::testing::SeededTest;
using xfer::testing::TempDir;

class TrainerTest : public SeededTest {
 protected:
  void SetUp() override {
    SeededTest::SetUp();
    spec_ = xfer::testing::write_synthetic_idx(tmp_.path(), 300, 3, 12, 12, 7);
    auto all = data::load(spec_);
    std::tie(train_, val_) = data::stratified_split(all, 0.2, 1);
  }
  models::Classifier mlp() {
    models::ModelOptions o;
    o.image_size = 12;
    o.num_classes = 3;
    o.arch_options = {{"hidden", {32}}, {"dropout", 0.0}};
    return models::create_model("mlp", o);
  }
  TempDir tmp_;
  std::string spec_;
  data::Dataset train_, val_;
};

TEST_F(TrainerTest, LearnsASeparableTask) {
  auto m = mlp();
  double before = evaluate_loss(*m, val_).accuracy;
  Trainer t(TrainOptions().epochs(5).batch_size(32).lr(3e-3));
  auto r = t.fit(*m, train_, val_);
  ASSERT_EQ(r.history.size(), 5u);
  EXPECT_LT(r.history.back().train_loss, r.history.front().train_loss);
  EXPECT_GT(r.best_val_accuracy, 0.9);
  EXPECT_GT(r.best_val_accuracy, before);
  EXPECT_NEAR(evaluate_loss(*m, val_).accuracy, r.best_val_accuracy, 1e-12);  // best kept
  EXPECT_GT(r.images_per_second, 0);
  EXPECT_EQ(r.trainable_parameters, models::count_parameters(*m));
}

TEST_F(TrainerTest, SameSeedSameWeights) {
  auto run = [&](uint64_t seed) {
    ::xfer::seed_everything(99);
    auto m = mlp();
    Trainer(TrainOptions().epochs(2).batch_size(16).seed(seed)).fit(*m, train_, val_);
    return m->head()->weight.clone();
  };
  auto a = run(3), b = run(3), c = run(4);
  EXPECT_TENSOR_EQ(a, b);
  EXPECT_FALSE(torch::equal(a, c));
}

TEST_F(TrainerTest, FrozenParametersStayBitIdentical) {
  auto m = mlp();
  std::map<std::string, torch::Tensor> frozen;
  for (auto& p : m->named_parameters()) {
    if (!m->is_head_parameter(p.key())) {
      p.value().set_requires_grad(false);
      frozen[p.key()] = p.value().clone();
    }
  }
  auto r = Trainer(TrainOptions().epochs(2).batch_size(32).weight_decay(0.1)).fit(*m, train_, val_);
  for (auto& p : m->named_parameters()) {
    if (frozen.count(p.key())) EXPECT_TENSOR_EQ(p.value(), frozen[p.key()]);
  }
  EXPECT_EQ(r.trainable_parameters, m->head()->weight.numel() + m->head()->bias.numel());
}

TEST_F(TrainerTest, CheckpointKeepsTheModelByNameAndResumeChecksEveryName) {
  const std::string dir = tmp_.file("ckpt");
  auto m = mlp();
  Trainer first(TrainOptions().epochs(1).batch_size(16));
  CheckpointOptions co;
  co.dir = dir;
  first.checkpoint(co);
  first.fit(*m, train_, val_);
  const auto c = io::read_checkpoint(dir);
  for (const char* prefix : {"model/", "best/", "last_good/"}) {
    for (const auto& p : m->named_parameters()) {
      ASSERT_TRUE(c.tensors.contains(prefix + p.key())) << prefix << p.key();
    }
  }
  EXPECT_TENSOR_EQ(c.tensors.at("model/" + m->named_parameters().begin()->key()),
                   m->named_parameters().begin()->value());

  auto resume = [&](io::Checkpoint ck, models::Classifier model) {
    Trainer t(TrainOptions().epochs(2).batch_size(16));
    t.resume(std::move(ck));
    t.fit(*model, train_, val_);
  };
  EXPECT_NO_THROW(resume(c, mlp()));
  // A tensor stored under another name is not taken by its position.
  const std::string first_key = "model/" + m->named_parameters().begin()->key();
  auto renamed = c;
  for (auto& t : renamed.tensors.tensors) {
    if (t.first == first_key) t.first = "model/renamed.weight";
  }
  xfer::testing::expect_error_naming([&] { resume(renamed, mlp()); }, "lacks " + first_key);
  auto extra = c;
  extra.tensors.add("model/extra.weight", torch::zeros({2}));
  xfer::testing::expect_error_naming([&] { resume(extra, mlp()); }, "tensors under model");
  models::ModelOptions narrow;
  narrow.image_size = 12;
  narrow.num_classes = 3;
  narrow.arch_options = {{"hidden", {16}}, {"dropout", 0.0}};
  xfer::testing::expect_error_naming([&] { resume(c, models::create_model("mlp", narrow)); },
                                     "has shape");
}

TEST_F(TrainerTest, NoWeightDecayOnBiasesAndNorms) {
  models::ModelOptions o;
  o.num_classes = 3;
  auto cnn = models::create_model("cnn", o);
  auto g = split_weight_decay(*cnn);
  for (const auto& n : g.no_decay_names) {
    bool is_bias_or_norm = n.find("bias") != std::string::npos || n.find(".1.weight") != std::string::npos;
    EXPECT_TRUE(is_bias_or_norm) << n;
  }
  for (const auto& n : g.decay_names) EXPECT_EQ(n.find("bias"), std::string::npos) << n;
  EXPECT_EQ(g.decay.size() + g.no_decay.size(), cnn->parameters().size());
}

TEST_F(TrainerTest, DivergenceStopsWithClearErrorAndRestoresWeights) {
  auto m = mlp();
  // A learning rate this large overflows the loss to inf/NaN within a few steps.
  Trainer t(TrainOptions().epochs(3).batch_size(16).lr(1e30).optimizer("sgd").momentum(0.9)
                .warmup_epochs(0));
  auto initial = m->head()->weight.clone();
  try {
    t.fit(*m, train_, val_);
    FAIL() << "training did not diverge";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("diverged"), std::string::npos) << e.what();
  }
  for (const auto& p : m->parameters()) EXPECT_TRUE(torch::isfinite(p).all().item<bool>());
  // It diverges within the first epoch, so the last good weights are the initial ones.
  EXPECT_TENSOR_EQ(m->head()->weight, initial);
}

// A cnn with BatchNorm, so the range test's restore covers buffers too.
models::Classifier small_cnn() {
  models::ModelOptions o;
  o.image_size = 12;
  o.num_classes = 3;
  o.arch_options = {{"widths", {8}}, {"hidden", 16}};
  return models::create_model("cnn", o);
}

std::vector<torch::Tensor> state_of(torch::nn::Module& m) {
  std::vector<torch::Tensor> s;
  for (const auto& p : m.parameters()) s.push_back(p.detach().clone());
  for (const auto& b : m.buffers()) s.push_back(b.detach().clone());
  return s;
}

TEST(LrCurveTest, ReadsMinimumSteepestAndValley) {
  // In e = log10(lr): flat at 2 up to -4, steeply down to 0.5 at -2.5, gently to 0.4 at
  // -2 (the minimum), then climbing.
  LrFindResult r;
  const int n = 61;  // 1e-6 .. 1, ten points a decade
  for (int i = 0; i < n; ++i) {
    const double e = -6.0 + i / 10.0;
    r.lr.push_back(std::pow(10.0, e));
    r.smoothed.push_back(e <= -4     ? 2.0
                         : e <= -2.5 ? 2.0 - (e + 4)
                         : e <= -2   ? 0.5 - 0.2 * (e + 2.5)
                                     : 0.4 + 2.0 * (e + 2));
  }
  r.loss = r.smoothed;
  read_lr_curve(r);
  EXPECT_NEAR(std::log10(r.min_loss_lr), -2, 1e-9);
  EXPECT_GT(std::log10(r.steepest_lr), -4);  // on the steep stretch
  EXPECT_LT(std::log10(r.steepest_lr), -2.45);
  // A tenth of the way down from the plateau (2) to the minimum (0.4) is 1.84: the last point
  // above it is 10^-3.9, and the middle of [10^-3.9, 10^-2] is 10^-2.95.
  EXPECT_NEAR(std::log10(r.valley_lr), -2.95, 1e-9);
  // A noisy start (one low early point) does not move it: the plateau is a median.
  auto noisy = r;
  noisy.smoothed[1] = 1.0;
  read_lr_curve(noisy);
  EXPECT_NEAR(std::log10(noisy.valley_lr), -2.95, 1e-9);

  // Stopped by the divergence test: its last point is left out even if it were the lowest.
  r.smoothed.back() = -1;
  r.stopped_by = "divergence";
  read_lr_curve(r);
  EXPECT_NEAR(std::log10(r.min_loss_lr), -2, 1e-9);
  // Stopped by a non-finite loss: that step is not in the curve, every point in it counts.
  r.stopped_by = "non-finite";
  read_lr_curve(r);
  EXPECT_NEAR(std::log10(r.min_loss_lr), 0, 1e-9);
  r.stopped_by = "bored";
  EXPECT_THROW(read_lr_curve(r), Error);
  // A loss that never falls: the valley is the start.
  LrFindResult flat;
  flat.lr = {1e-3, 1e-2, 1e-1};
  flat.smoothed = flat.loss = {1.0, 1.5, 3.0};
  read_lr_curve(flat);
  EXPECT_EQ(flat.valley_lr, 1e-3);
  EXPECT_EQ(flat.min_loss_lr, 1e-3);
}

TEST_F(TrainerTest, LrFindSweepsGeometricallyAndRestoresTheModel) {
  auto m = small_cnn();
  m->eval();
  const auto before = state_of(*m);
  Trainer t(TrainOptions().batch_size(16).lr(3e-3));
  // No early stop here (a loss that falls near zero climbs past 4x its minimum long before it diverges).
  const auto opts = LrFindOptions().start_lr(1e-5).end_lr(1e-1).steps(40).divergence(1e6);
  auto r = t.lr_find(*m, train_, opts);
  ASSERT_EQ(r.lr.size(), 40u);
  EXPECT_FALSE(r.diverged());
  EXPECT_EQ(r.stopped_by, "");
  for (size_t i = 0; i < r.lr.size(); ++i) {
    EXPECT_NEAR(std::log(r.lr[i]), std::log(1e-5) + std::log(1e4) * double(i) / 39.0, 1e-9) << i;
    EXPECT_TRUE(std::isfinite(r.loss[i]) && std::isfinite(r.smoothed[i]));
  }
  // The first smoothed value is the first loss (the average is debiased).
  EXPECT_NEAR(r.smoothed[0], r.loss[0], 1e-12);
  // A separable task: the loss falls somewhere in four decades of rate.
  EXPECT_LT(*std::min_element(r.smoothed.begin(), r.smoothed.end()), 0.9 * r.smoothed[0]);
  EXPECT_GT(r.valley_lr, 1e-5);
  EXPECT_LE(r.valley_lr, r.min_loss_lr);
  // Parameters, BatchNorm statistics and the eval mode are as before.
  const auto after = state_of(*m);
  ASSERT_EQ(after.size(), before.size());
  for (size_t i = 0; i < before.size(); ++i) EXPECT_TENSOR_EQ(after[i], before[i]);
  EXPECT_FALSE(m->is_training());
  // Reproducible under the seed.
  auto again = t.lr_find(*m, train_, opts);
  EXPECT_EQ(again.loss, r.loss);
}

TEST_F(TrainerTest, LrFindStopsWhenTheLossDiverges) {
  auto m = small_cnn();
  const auto before = state_of(*m);
  Trainer t(TrainOptions().batch_size(16).optimizer("sgd").momentum(0.9));
  auto r = t.lr_find(*m, train_, LrFindOptions().start_lr(1e-3).end_lr(1e12).steps(200));
  EXPECT_EQ(r.stopped_by, "divergence");
  EXPECT_LT(r.lr.size(), 200u);
  EXPECT_GT(r.lr.size(), 2u);
  EXPECT_LT(r.min_loss_lr, r.lr.back());
  const auto after = state_of(*m);
  for (size_t i = 0; i < before.size(); ++i) EXPECT_TENSOR_EQ(after[i], before[i]);
  // With a divergence factor it cannot reach, a non-finite loss still ends the test quietly.
  auto inf = t.lr_find(*m, train_,
                       LrFindOptions().start_lr(1e-3).end_lr(1e30).steps(200).divergence(1e300));
  EXPECT_EQ(inf.stopped_by, "non-finite");
  EXPECT_LT(inf.lr.size(), 200u);
  for (double l : inf.loss) EXPECT_TRUE(std::isfinite(l));
  // Diverged within the first steps: an error naming the range, the model untouched.
  EXPECT_THROW(t.lr_find(*m, train_, LrFindOptions().start_lr(1e30).end_lr(1e31).steps(10)), Error);
  const auto final_state = state_of(*m);
  for (size_t i = 0; i < before.size(); ++i) EXPECT_TENSOR_EQ(final_state[i], before[i]);
}

TEST_F(TrainerTest, LrFindOptionsAreValidated) {
  EXPECT_THROW(LrFindOptions().start_lr(1).end_lr(1).validate(), UsageError);
  EXPECT_THROW(LrFindOptions().start_lr(0).validate(), UsageError);
  EXPECT_THROW(LrFindOptions().steps(1).validate(), UsageError);
  EXPECT_THROW(LrFindOptions().smoothing(1).validate(), UsageError);
  // The default smoothing follows the length: the average lags about a tenth of the test.
  EXPECT_DOUBLE_EQ(LrFindOptions().steps(100).beta(), 0.9);
  EXPECT_DOUBLE_EQ(LrFindOptions().steps(500).beta(), 0.98);
  EXPECT_DOUBLE_EQ(LrFindOptions().steps(5).beta(), 0.0);
  EXPECT_DOUBLE_EQ(LrFindOptions().steps(500).smoothing(0.5).beta(), 0.5);
  EXPECT_THROW(LrFindOptions().divergence(1).validate(), UsageError);
  EXPECT_NO_THROW(LrFindOptions().validate());
}

TEST_F(TrainerTest, OptionsAreValidated) {
  EXPECT_THROW(Trainer(TrainOptions().epochs(0)), UsageError);
  EXPECT_THROW(Trainer(TrainOptions().lr(-1)), UsageError);
  EXPECT_THROW(Trainer(TrainOptions().lr(std::nan(""))), UsageError);
  EXPECT_THROW(Trainer(TrainOptions().optimizer("adam2")), UsageError);
  EXPECT_THROW(Trainer(TrainOptions().batch_size(0)), UsageError);
  EXPECT_THROW(Trainer(TrainOptions().warmup_epochs(20).epochs(2)), UsageError);
  for (const char* bad : {"pgd", "pgd:abc", "fgsm:0.1", "pgd:0", "pgd:1.5", "pgd:0.1:0", "pgd:0.1:2:3"}) {
    EXPECT_THROW(Trainer(TrainOptions().adv_train(bad)), UsageError) << bad;
  }
  auto spec = parse_adv_train("pgd:8/255:3");
  ASSERT_TRUE(spec.has_value());
  EXPECT_DOUBLE_EQ(spec->eps, 8.0 / 255.0);
  EXPECT_EQ(spec->steps, 3);
  EXPECT_FALSE(parse_adv_train("").has_value());
  EXPECT_FALSE(TrainOptions().to_json().contains("adv_train"));
  EXPECT_EQ(TrainOptions().adv_train("pgd:0.1").to_json()["adv_train"], "pgd:0.1");
  // Every setting that changes the weights is in the recipe (resume compares it):
  // Nesterov momentum under sgd, and a run that keeps its last epoch.
  EXPECT_FALSE(TrainOptions().to_json().contains("nesterov"));
  EXPECT_FALSE(TrainOptions().optimizer("sgd").to_json().contains("nesterov"));
  EXPECT_EQ(TrainOptions().optimizer("sgd").nesterov(false).to_json()["nesterov"], false);
  EXPECT_NE(TrainOptions().optimizer("sgd").to_json(), TrainOptions().optimizer("sgd").nesterov(false).to_json());
  EXPECT_FALSE(TrainOptions().to_json().contains("keep_best"));
  EXPECT_EQ(TrainOptions().keep_best(false).to_json()["keep_best"], false);
}

// Madry-style training on PGD examples buys robustness the plain run lacks,
// and still learns the clean task.
TEST_F(TrainerTest, AdversarialTrainingRaisesRobustAccuracy) {
  auto robust_accuracy = [&](models::Classifier& m, double eps) {
    auto o = attack::options_for("pgd", attack::AttackOptions().eps(eps).steps(10).seed(1));
    auto adv = attack::run_attack({m}, val_.float_images(), val_.labels, o).adv;
    torch::NoGradGuard ng;
    m->eval();
    return m->forward(adv).argmax(1).eq(val_.labels).to(torch::kDouble).mean().item<double>();
  };
  ::xfer::seed_everything(5);
  auto plain = mlp();
  ::xfer::seed_everything(5);
  auto hard = mlp();
  // keep_best off: clean validation accuracy peaks in epoch 1 for both runs
  // here and would hand back the epoch-1 weights of each.
  const auto base = TrainOptions().epochs(6).batch_size(32).lr(3e-3).keep_best(false);
  Trainer(base).fit(*plain, train_, val_);
  auto r = Trainer(TrainOptions(base).adv_train("pgd:0.35:5")).fit(*hard, train_, val_);
  // The synthetic classes are bars of 0.78 over noise below 0.24: nothing
  // under eps ~0.3 fools even the plain model, so robustness shows at 0.35.
  const double plain_robust = robust_accuracy(plain, 0.35), hard_robust = robust_accuracy(hard, 0.35);
  std::cout << "robust accuracy at eps 0.35: plain " << plain_robust << ", adversarially trained " << hard_robust
            << " (clean val " << r.best_val_accuracy << ")\n";
  EXPECT_GT(hard_robust, plain_robust + 0.2);
  EXPECT_GT(r.best_val_accuracy, 0.8);
  // Without keep_best the last epoch's weights stay, and so does its accuracy in the result.
  EXPECT_EQ(r.best_epoch, 6);
  EXPECT_DOUBLE_EQ(r.best_val_accuracy, r.history.back().val_accuracy);
}

TEST_F(TrainerTest, SgdWithAugmentationAlsoLearns) {
  auto m = mlp();
  data::AugmentOptions aug;
  aug.crop_padding = 1;
  auto r = Trainer(TrainOptions().epochs(6).batch_size(32).optimizer("sgd").lr(0.05).augment(aug))
               .fit(*m, train_, val_);
  EXPECT_GT(r.best_val_accuracy, 0.8);
}

TEST_F(TrainerTest, NtXentMatchesItsDefinition) {
  auto z1 = torch::randn({5, 4}, torch::kDouble), z2 = torch::randn({5, 4}, torch::kDouble);
  const double t = 0.3;
  auto r = nt_xent(z1, z2, t);
  // The definition, one view at a time.
  auto z = torch::cat({z1, z2});
  z = z / z.norm(2, 1, true);
  double sum = 0;
  std::vector<bool> correct;
  for (int64_t i = 0; i < 10; ++i) {
    const int64_t pos = i < 5 ? i + 5 : i - 5;
    double denom = 0, best = -1e9;
    int64_t arg = -1;
    for (int64_t j = 0; j < 10; ++j) {
      if (j == i) continue;
      const double s = (z[i] * z[j]).sum().item<double>() / t;
      denom += std::exp(s);
      if (s > best) best = s, arg = j;
    }
    sum += -((z[i] * z[pos]).sum().item<double>() / t - std::log(denom));
    correct.push_back(arg == pos);
  }
  EXPECT_NEAR(r.loss.item<double>(), sum / 10, 1e-9);
  ASSERT_EQ(r.correct.size(0), 10);
  for (int64_t i = 0; i < 10; ++i) EXPECT_EQ(r.correct[i].item<bool>(), correct[i]) << i;
  // Identical pairs of orthogonal embeddings: every pair found, loss near its floor.
  auto e = torch::eye(4, torch::kDouble);
  auto p = nt_xent(e, e * 3, 0.05);
  EXPECT_TRUE(p.correct.all().item<bool>());
  EXPECT_LT(p.loss.item<double>(), 1e-6);
  EXPECT_THROW(nt_xent(z1, z2.slice(0, 0, 4), t), Error);
}

TEST_F(TrainerTest, SimclrLearnsViewInvariantFeaturesWithoutLabels) {
  auto encoder = [] {
    models::ModelOptions mo;
    mo.image_size = 12;
    mo.num_classes = 16;  // the projection's width
    mo.arch_options = {{"hidden", {32}}, {"dropout", 0.0}};
    return models::create_model("mlp", mo);
  };
  auto m = encoder();
  // Mild views: an MLP has no translation invariance to start from.
  data::ViewOptions views;
  views.min_scale = 0.8;
  views.max_ratio = 1.1;
  auto o = TrainOptions().epochs(6).batch_size(32).lr(1e-2).objective("simclr").temperature(0.5).views(views);
  // Every image distinct and smooth (4x4 noise upsampled), so that a view can
  // be told from the other images (the synthetic classes are near-copies).
  auto smooth = [](int64_t n) {
    data::Dataset d;
    auto low = torch::rand({n, 1, 4, 4});
    auto up = torch::nn::functional::interpolate(
        low, torch::nn::functional::InterpolateFuncOptions().size(std::vector<int64_t>{12, 12}).mode(torch::kBilinear).align_corners(false));
    d.images = up.mul(255).round().to(torch::kUInt8);
    d.labels = torch::randint(0, 3, {n}, torch::kLong);
    d.index = torch::arange(n, torch::kLong);
    d.class_names = {"a", "b", "c"};
    return d;
  };
  auto train = smooth(256), val = smooth(64);
  const double before = evaluate_contrastive(*m, val, o).accuracy;
  // Labels are ignored: other labels give the same weights.
  auto shuffled = train;
  shuffled.labels = train.labels.flip({0}).clone();
  ::xfer::seed_everything(5);
  auto m2 = encoder();
  ::xfer::seed_everything(5);
  auto m1 = encoder();
  Trainer t(o);
  auto r = t.fit(*m1, train, val);
  Trainer(o).fit(*m2, shuffled, val);
  EXPECT_TENSOR_EQ(m1->head()->weight, m2->head()->weight);
  ASSERT_EQ(r.history.size(), 6u);
  EXPECT_LT(r.history.back().train_loss, r.history.front().train_loss);
  EXPECT_GT(r.best_val_accuracy, before + 0.2) << "before " << before;
  EXPECT_NEAR(evaluate_contrastive(*m1, val, o).accuracy, r.best_val_accuracy, 1e-12);
  // Bad combinations are usage errors.
  EXPECT_THROW(TrainOptions(o).adv_train("pgd:0.1").validate(), UsageError);
  EXPECT_THROW(TrainOptions(o).label_smoothing(0.1).validate(), UsageError);
  EXPECT_THROW(TrainOptions(o).temperature(0).validate(), UsageError);
  EXPECT_THROW(TrainOptions(o).batch_size(1).validate(), UsageError);
  EXPECT_THROW(TrainOptions().objective("byol").validate(), UsageError);
}

// A resume under another thread count is told why it may not be bit-identical;
// the same count, or a checkpoint without the record, says nothing.
TEST(ResumeThreadNoteTest, NamesBothCountsOnlyWhenTheyDiffer) {
  io::Checkpoint c;
  EXPECT_EQ(resume_thread_note(c), "");
  const int64_t now = torch::get_num_threads();
  c.state["threads"] = now;
  EXPECT_EQ(resume_thread_note(c), "");
  c.state["threads"] = now + 3;
  const std::string note = resume_thread_note(c);
  EXPECT_NE(note.find(std::to_string(now + 3) + " threads and this run has " + std::to_string(now)),
            std::string::npos)
      << note;
  EXPECT_NE(note.find("--threads " + std::to_string(now + 3)), std::string::npos) << note;
  c.state["threads"] = "four";
  EXPECT_EQ(resume_thread_note(c), "");
}

}  // namespace
}  // namespace xfer::train
