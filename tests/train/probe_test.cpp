#include "xfer/train/probe.h"

#include <map>

#include "support/errors.h"
#include "support/support.h"
#include "xfer/core/error.h"
#include "xfer/core/runtime.h"
#include "xfer/data/spec.h"
#include "xfer/models/registry.h"

namespace xfer::train {
namespace {

using xfer::testing::SeededTest;
using xfer::testing::TempDir;
namespace F = torch::nn::functional;

class ProbeTest : public SeededTest {
 protected:
  void SetUp() override {
    SeededTest::SetUp();
    auto all = data::load(xfer::testing::write_synthetic_idx(tmp_.path(), 150, 3, 12, 12, 4));
    std::tie(train_, val_) = data::stratified_split(all, 0.2, 1);
  }
  // A cnn with BatchNorm: the probe must leave its running statistics alone.
  models::Classifier cnn() {
    models::ModelOptions o;
    o.image_size = 12;
    o.num_classes = 3;
    o.arch_options = {{"widths", {4, 8}}, {"hidden", 16}, {"dropout", 0.25}};
    return models::create_model("cnn", o);
  }
  static std::map<std::string, torch::Tensor> backbone(models::ClassifierImpl& m) {
    std::map<std::string, torch::Tensor> t;
    for (const auto& p : m.named_parameters()) {
      if (!m.is_head_parameter(p.key())) t[p.key()] = p.value().detach().clone();
    }
    for (const auto& b : m.named_buffers()) t[b.key()] = b.value().clone();
    return t;
  }
  // Class probabilities of the head on features: unique at the optimum of the
  // convex objective (the biases only up to a common shift).
  static torch::Tensor probabilities(models::ClassifierImpl& m, const torch::Tensor& f) {
    torch::NoGradGuard g;
    return torch::softmax(m.forward_head(f.to(torch::kFloat)).to(torch::kDouble), 1);
  }
  TempDir tmp_;
  data::Dataset train_, val_;
};

TEST_F(ProbeTest, EmbedEqualsFeaturesInEvalModeAndRestoresTheMode) {
  auto m = cnn();
  m->train();
  auto f = embed(*m, train_, 7);  // batches of 7: a ragged last batch
  EXPECT_TRUE(m->is_training());
  ASSERT_EQ(f.sizes(), (std::vector<int64_t>{train_.size(), m->num_features()}));
  m->eval();
  torch::NoGradGuard g;
  EXPECT_TENSOR_CLOSE(f, m->features(train_.float_images()), 1e-5);
}

// Golden check against an independent solver: plain gradient descent with a
// safe fixed step on the same objective, in double, from zero.
TEST_F(ProbeTest, LinearHeadReachesTheOptimumOfTheConvexObjective) {
  auto m = cnn();
  const double l2 = 0.05;
  auto before = backbone(*m);
  auto r = fit_probe(*m, train_, val_, ProbeOptions().l2(l2));
  auto after = backbone(*m);
  for (const auto& [k, v] : before) EXPECT_TENSOR_EQ(after[k], v) << k;  // BN statistics included

  auto feats = embed(*m, train_, 64).to(torch::kDouble);
  auto y = train_.labels;
  const int64_t n = feats.size(0), c = 3;
  auto aug = torch::cat({feats, torch::ones({n, 1}, torch::kDouble)}, 1);
  const double sigma = torch::linalg_matrix_norm(aug, 2).item<double>();
  const double step = 1.0 / (0.5 * sigma * sigma / double(n) + 2 * l2);
  auto W = torch::zeros({c, feats.size(1)}, torch::kDouble);
  auto b = torch::zeros({c}, torch::kDouble);
  auto onehot = F::one_hot(y, c).to(torch::kDouble);
  for (int i = 0; i < 20000; ++i) {
    auto p = torch::softmax(feats.matmul(W.t()) + b, 1);
    auto g = (p - onehot) / double(n);
    W -= step * (g.t().matmul(feats) + 2 * l2 * W);
    b -= step * g.sum(0);
  }
  auto reference = torch::softmax(feats.matmul(W.t()) + b, 1);
  EXPECT_TENSOR_CLOSE(probabilities(*m, feats), reference, 2e-4);

  ASSERT_EQ(r.history.size(), 1u);
  EXPECT_EQ(r.solver["name"], "lbfgs");
  EXPECT_LT(r.solver["grad_max"].get<double>(), 1e-5);
  EXPECT_EQ(r.trainable_parameters, 16 * 3 + 3);
  EXPECT_GE(r.history[0].val_accuracy, 0.0);
  EXPECT_NEAR(r.history[0].val_accuracy, evaluate_loss(*m, val_).accuracy, 1e-12);
  EXPECT_NEAR(r.history[0].train_accuracy, evaluate_loss(*m, train_).accuracy, 1e-12);
  // The penalty pulls the weights in: a 100x larger one gives a smaller head.
  const double norm = m->head()->weight.norm().item<double>();
  fit_probe(*m, train_, val_, ProbeOptions().l2(100 * l2));
  EXPECT_LT(m->head()->weight.norm().item<double>(), 0.5 * norm);
}

TEST_F(ProbeTest, SolutionDoesNotDependOnTheStartingHead) {
  auto m = cnn();
  fit_probe(*m, train_, {}, ProbeOptions().l2(0.01));
  auto feats = embed(*m, train_, 64);
  auto first = probabilities(*m, feats);
  {
    torch::NoGradGuard g;
    m->head()->weight.normal_(0, 3);
    m->head()->bias.uniform_(-2, 2);
  }
  EXPECT_FALSE(::xfer::testing::tensors_close(probabilities(*m, feats), first, 1e-2));
  fit_probe(*m, train_, {}, ProbeOptions().l2(0.01));
  EXPECT_TENSOR_CLOSE(probabilities(*m, feats), first, 1e-5);
  EXPECT_EQ(m->head()->weight.scalar_type(), torch::kFloat);  // fitted in double, stored as it was
  EXPECT_FALSE(m->head()->weight.grad().defined());
}

TEST_F(ProbeTest, CosineHeadFitsWithoutAPenaltyAndRefusesOne) {
  auto m = cnn();
  m->set_head_options(models::HeadOptions().kind("cosine").scale(5));
  auto feats = embed(*m, train_, 64);
  auto y = train_.labels;
  double start = 0;
  {
    torch::NoGradGuard g;
    start = F::cross_entropy(m->forward_head(feats), y).item<double>();
  }
  xfer::testing::expect_error_naming([&] { fit_probe(*m, train_, {}, ProbeOptions().l2(1e-3)); },
                                     "--probe-l2");
  auto r = fit_probe(*m, train_, {}, ProbeOptions().l2(0));
  EXPECT_LT(r.history[0].train_loss, start - 0.1);
  EXPECT_LT(r.solver["grad_max"].get<double>(), 1e-4);
  EXPECT_EQ(r.history[0].val_accuracy, -1);  // no validation set
}

TEST_F(ProbeTest, RefusesBadOptions) {
  auto m = cnn();
  xfer::testing::expect_error_naming([&] { fit_probe(*m, train_, {}, ProbeOptions().l2(-1)); },
                                     "--probe-l2");
  xfer::testing::expect_error_naming([&] { fit_probe(*m, train_, {}, ProbeOptions().max_iter(0)); },
                                     "--probe-iters");
  xfer::testing::expect_error_naming([&] { fit_probe(*m, data::Dataset{}, {}, ProbeOptions()); },
                                     "no training samples");
  // --device is checked as everywhere (not handed to torch::Device raw).
  EXPECT_THROW(fit_probe(*m, train_, {}, ProbeOptions().device("tpu")), UsageError);
}

// --device auto (the CLI's spelling) picks the device as the trainer does: the same fit as "cpu"
// where there is no GPU.
TEST_F(ProbeTest, DeviceAutoIsAccepted) {
  if (torch::cuda::is_available())
    GTEST_SKIP() << "the comparison with cpu is for a CPU-only build";
  ::xfer::seed_everything(5);
  auto a = cnn();
  ::xfer::seed_everything(5);
  auto b = cnn();
  fit_probe(*a, train_, {}, ProbeOptions().device("auto"));
  fit_probe(*b, train_, {}, ProbeOptions().device("cpu"));
  EXPECT_TENSOR_EQ(a->head()->weight, b->head()->weight);
}

}  // namespace
}  // namespace xfer::train
