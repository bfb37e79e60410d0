#include "xfer/attack/attack.h"

#include <cstdlib>

#include "support/errors.h"
#include "support/support.h"
#include "xfer/models/registry.h"
#include "xfer/models/torchscript.h"

namespace xfer::attack {
namespace {

using xfer::testing::SeededTest;
using xfer::testing::TempDir;

models::Classifier small_cnn(int64_t classes = 4) {
  models::ModelOptions o;
  o.in_channels = 1;
  o.image_size = 12;
  o.num_classes = classes;
  o.arch_options = {{"widths", {8, 16}}, {"hidden", 24}, {"dropout", 0.5}};
  auto m = models::create_model("cnn", o);
  m->set_normalization({0.5}, {0.25});
  return m;
}

// A linear classifier on flattened pixels: logits = W x + b.
class LinearModelImpl : public models::ClassifierImpl {
 public:
  LinearModelImpl(int64_t d, int64_t k) : d_(d) { init_head(d, k); }
  torch::Tensor forward_features(torch::Tensor x) override { return x.flatten(1); }
  int64_t num_features() const override { return d_; }

 private:
  int64_t d_;
};

class AttackTest : public SeededTest {
 protected:
  void SetUp() override {
    SeededTest::SetUp();
    model_ = small_cnn();
    x_ = torch::rand({6, 1, 12, 12});
    y_ = torch::tensor({0, 1, 2, 3, 0, 1}, torch::kLong);
  }
  models::Classifier model_;
  torch::Tensor x_, y_;
};

std::vector<std::string> all_names() {
  std::vector<std::string> names;
  for (const auto& a : attack_list()) names.push_back(a.name);
  names.push_back("mi-fgsm+di+ti");
  names.push_back("vni-fgsm+si+di");
  names.push_back("feature+admix");  // admix without labels: mixes with any other image
  return names;
}

TEST_F(AttackTest, EveryAttackStaysInTheBudgetAndTheImageRange) {
  for (const auto& name : all_names()) {
    for (const char* norm : {"linf", "l2"}) {
      // Neither budget is a float: the bound holds without a tolerance all the same.
      const double eps = std::string(norm) == "linf" ? 0.1 : 0.7;
      auto o = options_for(name, AttackOptions().eps(eps).norm(norm).steps(3).seed(1));
      if (o.variance_samples() > 0) o.variance_samples(3);
      auto r = run_attack({model_}, x_, y_, o);
      ASSERT_EQ(r.adv.sizes(), x_.sizes()) << name;
      EXPECT_GE(r.adv.min().item<float>(), 0.f) << name;
      EXPECT_LE(r.adv.max().item<float>(), 1.f) << name;
      auto d = (r.adv - x_).flatten(1);
      if (std::string(norm) == "linf") {
        EXPECT_LE(d.abs().max().item<double>(), eps) << name;
      } else {
        EXPECT_LE(d.norm(2, 1).max().item<double>(), eps) << name;
      }
      EXPECT_GT(d.abs().max().item<double>(), 0.0) << name << " " << norm << ": did not move";
    }
  }
}

TEST_F(AttackTest, SameSeedSameOutputOtherSeedOtherOutputForRandomAttacks) {
  for (const auto& name : all_names()) {
    auto o = options_for(name, AttackOptions().steps(2).seed(3));
    if (o.variance_samples() > 0) o.variance_samples(2);
    auto a = run_attack({model_}, x_, y_, o).adv;
    auto b = run_attack({model_}, x_, y_, o).adv;
    EXPECT_TRUE(torch::equal(a, b)) << name;
    const bool random = o.random_start() || o.di_prob() > 0 || o.variance_samples() > 0 || o.admix_copies() > 0;
    if (random) {
      auto c = run_attack({model_}, x_, y_, AttackOptions(o).seed(4)).adv;
      EXPECT_FALSE(torch::equal(a, c)) << name;
      // Batches of one run draw differently too.
      auto d = run_attack({model_}, x_, y_, o, /*batch_index=*/1).adv;
      EXPECT_FALSE(torch::equal(a, d)) << name;
    }
  }
}

TEST_F(AttackTest, FgsmOnALinearModelFollowsTheWeightRowDifference) {
  auto lin = std::make_shared<LinearModelImpl>(16, 2);
  auto x = torch::full({2, 1, 4, 4}, 0.5);
  auto y = torch::tensor({0, 1}, torch::kLong);
  auto r = run_attack({lin}, x, y, options_for("fgsm", AttackOptions().eps(0.05)));
  auto w = lin->head()->weight.detach();
  // dCE/dx = (p_other)(w_other - w_y): its sign is sign(w_other - w_y).
  auto expect0 = x[0] + 0.05 * (w[1] - w[0]).sign().view({1, 4, 4});
  auto expect1 = x[1] + 0.05 * (w[0] - w[1]).sign().view({1, 4, 4});
  EXPECT_TENSOR_CLOSE(r.adv[0], expect0, 1e-6);
  EXPECT_TENSOR_CLOSE(r.adv[1], expect1, 1e-6);
  // L2 FGSM steps along the normalised row difference.
  auto r2 = run_attack({lin}, x, y, options_for("fgsm", AttackOptions().eps(0.3).norm("l2")));
  auto dir = (w[1] - w[0]) / (w[1] - w[0]).norm();
  EXPECT_TENSOR_CLOSE(r2.adv[0], x[0] + 0.3 * dir.view({1, 4, 4}), 1e-5);
}

TEST_F(AttackTest, TargetedAttacksRaiseTheTargetProbability) {
  for (const char* target : {"label:2", "random", "least-likely"}) {
    auto o = options_for("pgd", AttackOptions().eps(0.3).steps(10).target(target).seed(2));
    auto r = run_attack({model_}, x_, y_, o);
    ASSERT_TRUE(r.targets.defined()) << target;
    if (std::string(target) == "label:2") EXPECT_TRUE(r.targets.eq(2).all().item<bool>());
    if (std::string(target) == "random") EXPECT_TRUE(r.targets.ne(y_).all().item<bool>());
    torch::NoGradGuard ng;
    model_->eval();
    auto before = torch::softmax(model_->forward(x_), 1).gather(1, r.targets.view({-1, 1}));
    auto after = torch::softmax(model_->forward(r.adv), 1).gather(1, r.targets.view({-1, 1}));
    EXPECT_TRUE(after.gt(before).all().item<bool>()) << target << "\n" << before << after;
  }
}

TEST_F(AttackTest, UntargetedPgdRaisesTheLossAndModelsStayInTheirMode) {
  model_->train();
  auto r = run_attack({model_}, x_, y_, options_for("pgd", AttackOptions().eps(0.2)));
  EXPECT_TRUE(model_->is_training());  // restored
  model_->eval();
  torch::NoGradGuard ng;
  auto ce = [&](const torch::Tensor& x) {
    return torch::nn::functional::cross_entropy(model_->forward(x), y_).item<double>();
  };
  EXPECT_GT(ce(r.adv), ce(x_));
}

TEST_F(AttackTest, EnsemblesAverageLogitsOrLosses) {
  auto other = small_cnn();
  for (const char* mode : {"logits", "loss"}) {
    auto o = options_for("mi-fgsm", AttackOptions().eps(0.1).ensemble(mode));
    auto r = run_attack({model_, other}, x_, y_, o);
    EXPECT_LE((r.adv - x_).abs().max().item<double>(), 0.1 + 1e-6);
  }
  // With two copies of one model the ensemble equals the single model.
  auto o = options_for("bim", AttackOptions().eps(0.1));
  model_->train();
  EXPECT_TRUE(torch::allclose(run_attack({model_, model_}, x_, y_, o).adv, run_attack({model_}, x_, y_, o).adv,
                              1e-5, 1e-6));
  // A model listed twice gets its own mode back (restored last-in first-out).
  EXPECT_TRUE(model_->is_training());
}

TEST_F(AttackTest, FeatureAttackDistortsFeaturesMoreThanRandomNoise) {
  auto r = run_attack({model_}, x_, torch::Tensor(), options_for("feature", AttackOptions().eps(0.1)));
  torch::NoGradGuard ng;
  model_->eval();
  auto f0 = model_->features(x_);
  auto noise = (x_ + 0.1 * torch::randint(0, 2, x_.sizes()).mul(2).sub(1)).clamp(0, 1);
  double d_attack = (model_->features(r.adv) - f0).pow(2).sum().item<double>();
  double d_noise = (model_->features(noise) - f0).pow(2).sum().item<double>();
  EXPECT_GT(d_attack, 2 * d_noise);
  EXPECT_LE((r.adv - x_).abs().max().item<double>(), 0.1 + 1e-6);
}

// With input transforms the feature attack compares like with like: each transformed copy of x'
// against the clean image under the same transform. At x itself the distortion is then zero
// with a zero gradient, so without a random start one step does not move (against untransformed
// clean features, f(x / 2^i) != f(x) would have pushed it).
TEST_F(AttackTest, FeatureAttackWithTransformsMeasuresAgainstTheTransformedCleanImage) {
  for (const char* name : {"feature+si", "feature+admix", "feature+di"}) {
    auto o = options_for(name, AttackOptions().eps(0.1).steps(1)).random_start(false);
    if (o.di_prob() > 0) o.di_prob(1.0);
    auto r = run_attack({model_}, x_, torch::Tensor(), o);
    EXPECT_TENSOR_EQ(r.adv, x_) << name;
    // From a random start it moves, within the budget.
    auto moved = run_attack({model_}, x_, torch::Tensor(), o.random_start(true).steps(3));
    EXPECT_GT((moved.adv - x_).abs().max().item<double>(), 0.0) << name;
    EXPECT_LE((moved.adv - x_).abs().max().item<double>(), 0.1 + 1e-6) << name;
  }
}

// An ensemble of backbones whose features differ in width (a resnet with a vit, say).
TEST_F(AttackTest, FeatureAttackOnBackbonesOfDifferentWidths) {
  models::ModelOptions mo;
  mo.in_channels = 1;
  mo.image_size = 12;
  mo.num_classes = 4;
  mo.arch_options = {{"widths", {4, 8}}, {"hidden", 40}, {"dropout", 0.0}};
  auto wide = models::create_model("cnn", mo);
  ASSERT_NE(wide->num_features(), model_->num_features());
  auto r = run_attack({model_, wide}, x_, torch::Tensor(),
                      options_for("feature", AttackOptions().eps(0.1).steps(3)));
  EXPECT_LE((r.adv - x_).abs().max().item<double>(), 0.1 + 1e-6);
  torch::NoGradGuard ng;
  for (auto* m : {&model_, &wide}) {
    (*m)->eval();
    EXPECT_GT(((*m)->features(r.adv) - (*m)->features(x_)).abs().max().item<double>(), 0.0);
  }
}

TEST_F(AttackTest, NamesComposeAndOverridesWin) {
  auto o = options_for("mi-fgsm+di+ti");
  EXPECT_DOUBLE_EQ(o.momentum(), 1.0);
  EXPECT_DOUBLE_EQ(o.di_prob(), 0.5);
  EXPECT_EQ(o.ti_kernel(), -1);
  auto di = options_for("di");
  EXPECT_DOUBLE_EQ(di.momentum(), 1.0);  // a transform alone runs on MI-FGSM
  EXPECT_EQ(options_for("fgsm", AttackOptions().steps(10)).steps(), 1);
  EXPECT_DOUBLE_EQ(options_for("fgsm", AttackOptions().eps(0.2)).step_size(), 0.2);
  // PGD walks back from its random start: Madry et al.'s 2.5 eps / steps;
  // the transfer attacks keep eps / steps; an explicit --alpha wins.
  EXPECT_DOUBLE_EQ(options_for("pgd", AttackOptions().eps(0.1).steps(10)).step_size(), 0.025);
  EXPECT_DOUBLE_EQ(options_for("mi-fgsm", AttackOptions().eps(0.1).steps(10)).step_size(), 0.01);
  EXPECT_DOUBLE_EQ(options_for("pgd", AttackOptions().eps(0.1).alpha(0.003)).step_size(), 0.003);
  apply_overrides(o, {{"momentum", 0.5}, {"steps", 7}});
  EXPECT_DOUBLE_EQ(o.momentum(), 0.5);
  EXPECT_EQ(o.steps(), 7);
  EXPECT_EQ(options_for("vni-fgsm").nesterov(), true);
  EXPECT_EQ(options_for("admix").si_copies(), 5);
  for (const char* bad : {"pgd+mi-fgsm", "nope", "mi-fgsm+xx", ""}) {
    try {
      options_for(bad);
      ADD_FAILURE() << bad;
    } catch (const UsageError& e) {
      EXPECT_NE(std::string(e.what()).find("--attack"), std::string::npos) << e.what();
    }
  }
  xfer::testing::expect_error_naming([&] { apply_overrides(o, {{"wobble", 1}}); }, "wobble");
}

// fgsm is one step by definition: a suite's --steps leaves it alone, and a
// flag that contradicts it on fgsm named alone is a usage error (it used to
// turn fgsm into BIM with eps/steps per step).
TEST_F(AttackTest, FgsmStaysOneStepUnderASuiteWideSteps) {
  EXPECT_EQ(fixed_settings("fgsm"), Json({{"steps", 1}, {"alpha", 0.0}, {"random_start", false}}));
  EXPECT_EQ(fixed_settings("mi-fgsm+di+ti"), Json::object());
  const Json suite = {{"steps", 10}, {"momentum", 0.5}};
  EXPECT_EQ(overrides_for("fgsm", suite), Json({{"momentum", 0.5}}));
  EXPECT_EQ(overrides_for("fgsm+di", suite), Json({{"momentum", 0.5}}));
  EXPECT_EQ(overrides_for("pgd", suite), suite);
  EXPECT_EQ(overrides_for("fgsm", {{"alpha", 0.01}, {"random_start", true}}), Json::object());
  auto o = options_for("fgsm", AttackOptions().eps(0.1));
  apply_overrides(o, overrides_for("fgsm", suite));
  EXPECT_EQ(o.steps(), 1);
  EXPECT_DOUBLE_EQ(o.step_size(), 0.1);
  EXPECT_NO_THROW(check_fixed_settings("fgsm", {{"steps", 1}, {"eps", 0.1}}));
  EXPECT_NO_THROW(check_fixed_settings("bim", suite));
  try {
    check_fixed_settings("fgsm", {{"steps", 10}});
    ADD_FAILURE() << "no exception";
  } catch (const UsageError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("--steps: fgsm fixes steps to 1, got 10"), std::string::npos) << msg;
    EXPECT_NE(msg.find("bim"), std::string::npos) << msg;
  }
}

TEST_F(AttackTest, OptionsAreValidatedWhereBuilt) {
  struct Case {
    AttackOptions o;
    const char* needle;
  };
  for (const auto& c : std::vector<Case>{{AttackOptions().eps(0), "--eps"},
                                         {AttackOptions().eps(std::nan("")), "--eps"},
                                         {AttackOptions().eps(-1), "--eps"},
                                         {AttackOptions().eps(2), "--eps"},
                                         {AttackOptions().steps(0), "--steps"},
                                         {AttackOptions().alpha(-0.1), "--alpha"},
                                         {AttackOptions().alpha_factor(0), "--alpha-factor"},
                                         {AttackOptions().norm("l1"), "--norm"},
                                         {AttackOptions().target("label:x"), "--target"},
                                         {AttackOptions().ensemble("mean"), "--ensemble"},
                                         {AttackOptions().ti_kernel(4), "--ti-kernel"},
                                         {AttackOptions().ti_kernel(100001), "--ti-kernel"},
                                         {AttackOptions().variance_samples(1001), "--variance-samples"},
                                         {AttackOptions().steps(100001), "--steps must be in [1, 100000]"},
                                         {AttackOptions().di_prob(1.5), "--di-prob"},
                                         {AttackOptions().feature(true).target("random"), "feature"}}) {
    try {
      c.o.validate();
      ADD_FAILURE() << c.needle;
    } catch (const UsageError& e) {
      EXPECT_NE(std::string(e.what()).find(c.needle), std::string::npos) << e.what();
    }
  }
  try {
    run_attack({model_}, x_, y_, AttackOptions().target("label:9"));
    ADD_FAILURE() << "label beyond the classes";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("label:9"), std::string::npos);
  }
}

TEST(AttackHelpersTest, EpsilonsAndKernels) {
  EXPECT_DOUBLE_EQ(parse_epsilon("8/255", "--eps"), 8.0 / 255.0);
  EXPECT_DOUBLE_EQ(parse_epsilon("0.03", "--eps"), 0.03);
  EXPECT_DOUBLE_EQ(parse_epsilon("1e-2", "--eps"), 0.01);
  for (const char* bad : {"", "abc", "8/", "/255", "8/0", "0.1x", "nan"}) {
    EXPECT_THROW(parse_epsilon(bad, "--eps"), UsageError) << bad;
  }
  EXPECT_EQ(ti_kernel_for(224), 15);
  EXPECT_EQ(ti_kernel_for(28), 3);
  EXPECT_EQ(ti_kernel_for(64), 5);
  auto k = gaussian_kernel(5);
  EXPECT_NEAR(k.sum().item<double>(), 1.0, 1e-6);
  EXPECT_GT(k[2][2].item<float>(), k[0][0].item<float>());
  EXPECT_TRUE(torch::allclose(k, k.t()));
  auto text = attack_list_text();
  for (const auto& a : attack_list()) EXPECT_NE(text.find(a.name), std::string::npos);
  EXPECT_NE(text.find("--ti-kernel"), std::string::npos);
  auto j = overrides_from_text({{"eps", "8/255"}, {"steps", "5"}, {"target", "random"}});
  EXPECT_DOUBLE_EQ(j["eps"].get<double>(), 8.0 / 255.0);
  EXPECT_EQ(j["steps"], 5);
  EXPECT_THROW(overrides_from_text({{"steps", "many"}}), UsageError);
}

TEST(AttackTorchScriptTest, AttacksAScriptedClassifierInEvalMode) {
  TempDir dir;
  std::string cmd = "/usr/bin/python3 '" + xfer::testing::source_dir() + "/tests/python/make_torchscript_golden.py' '" +
                    dir.path() + "' >/dev/null 2>&1";
  if (std::system(cmd.c_str()) != 0) GTEST_SKIP() << "python3-torch not available";
  models::TorchScriptClassifier m(models::load_torchscript(dir.file("classifier.pt")), "classifier",
                                  std::vector<int64_t>{1, 28, 28}, 10);
  m->train();
  auto x = torch::rand({4, 1, 28, 28});
  auto y = torch::tensor({0, 1, 2, 3}, torch::kLong);
  // Deterministic despite the module's dropout: the attack runs it in eval mode.
  auto o = options_for("mi-fgsm+ti", AttackOptions().eps(0.1));
  auto a = run_attack({m.ptr()}, x, y, o).adv;
  auto b = run_attack({m.ptr()}, x, y, o).adv;
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_LE((a - x).abs().max().item<double>(), 0.1 + 1e-6);
  EXPECT_TRUE(m->is_training());
}

}  // namespace
}  // namespace xfer::attack
