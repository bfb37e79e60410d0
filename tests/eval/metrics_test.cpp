#include "xfer/eval/metrics.h"

#include "support/support.h"
#include "xfer/core/error.h"
#include "xfer/data/spec.h"
#include "xfer/models/registry.h"

namespace xfer::eval {
namespace {

using xfer::testing::SeededTest;

TEST(MetricsTest, ConfusionMatrixCountsPairs) {
  auto labels = torch::tensor({0, 0, 1, 2, 2, 2}, torch::kLong);
  auto preds = torch::tensor({0, 1, 1, 2, 0, 2}, torch::kLong);
  auto m = confusion_matrix(labels, preds, 3);
  std::vector<std::vector<int64_t>> expected = {{1, 1, 0}, {0, 1, 0}, {1, 0, 2}};
  EXPECT_EQ(m, expected);
  EXPECT_THROW(confusion_matrix(labels, preds, 2), Error);
  EXPECT_THROW(confusion_matrix(labels, preds.slice(0, 0, 3), 3), Error);
}

TEST(MetricsTest, WilsonIntervalMatchesKnownValues) {
  // Reference values from statsmodels' proportion_confint(method="wilson").
  auto a = wilson_interval(50, 100);
  EXPECT_NEAR(a.first, 0.4038, 1e-4);
  EXPECT_NEAR(a.second, 0.5962, 1e-4);
  auto b = wilson_interval(0, 10);
  EXPECT_NEAR(b.first, 0.0, 1e-12);
  EXPECT_NEAR(b.second, 0.2775, 1e-4);
  auto c = wilson_interval(10, 10);
  EXPECT_NEAR(c.first, 0.7225, 1e-4);
  EXPECT_NEAR(c.second, 1.0, 1e-12);
  auto d = wilson_interval(0, 0);
  EXPECT_EQ(d.first, 0.0);
  EXPECT_EQ(d.second, 1.0);
  EXPECT_THROW(wilson_interval(5, 3), Error);
}

// Models tested on the same images: the interval of one model's worth of them.
TEST(MetricsTest, PooledWilsonIntervalCountsOneModelsImages) {
  // Four victims that agree on each of 100 images: 200 of 400 pooled is 50 of 100.
  const auto pooled = pooled_wilson_interval(200, 400, 4);
  const auto one = wilson_interval(50, 100);
  EXPECT_NEAR(pooled.first, one.first, 1e-12);
  EXPECT_NEAR(pooled.second, one.second, 1e-12);
  // Wider than Wilson over the pooled counts, which takes 400 independent trials.
  const auto naive = wilson_interval(200, 400);
  EXPECT_LT(pooled.first, naive.first - 0.04);
  EXPECT_GT(pooled.second, naive.second + 0.04);
  // One model is plain Wilson; the edges keep their exact bounds.
  EXPECT_EQ(pooled_wilson_interval(37, 90, 1), wilson_interval(37, 90));
  EXPECT_EQ(pooled_wilson_interval(0, 30, 3).first, 0.0);
  EXPECT_NEAR(pooled_wilson_interval(0, 30, 3).second, wilson_interval(0, 10).second, 1e-12);
  EXPECT_EQ(pooled_wilson_interval(30, 30, 3).second, 1.0);
  EXPECT_EQ(pooled_wilson_interval(0, 0, 2), std::make_pair(0.0, 1.0));
  EXPECT_THROW(pooled_wilson_interval(1, 2, 0), Error);
  EXPECT_THROW(pooled_wilson_interval(3, 2, 1), Error);
}

class EvaluateTest : public SeededTest {};

TEST_F(EvaluateTest, AgreesWithDirectComputation) {
  xfer::testing::TempDir tmp;
  auto ds = data::load(xfer::testing::write_synthetic_idx(tmp.path(), 90, 3, 10, 10, 2));
  models::ModelOptions o;
  o.image_size = 10;
  o.num_classes = 3;
  auto m = models::create_model("mlp", o);
  auto e = evaluate(*m, ds, 16);
  m->eval();
  torch::NoGradGuard ng;
  auto pred = m->forward(ds.float_images()).argmax(1);
  int64_t correct = pred.eq(ds.labels).sum().item<int64_t>();
  EXPECT_EQ(e.n, 90);
  EXPECT_EQ(e.correct, correct);
  EXPECT_DOUBLE_EQ(e.accuracy, correct / 90.0);
  int64_t total = 0, diag = 0;
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) total += e.confusion[i][j];
    diag += e.confusion[i][i];
  }
  EXPECT_EQ(total, 90);
  EXPECT_EQ(diag, correct);
  for (int c = 0; c < 3; ++c) {
    auto mask = ds.labels.eq(c);
    double acc = pred.masked_select(mask).eq(c).to(torch::kDouble).mean().item<double>();
    EXPECT_NEAR(e.per_class_accuracy[c], acc, 1e-12);
  }
  auto j = e.to_json();
  EXPECT_EQ(j["n"], 90);
  EXPECT_EQ(j["per_class"].size(), 3u);
  EXPECT_LE(j["accuracy_ci95"][0].get<double>(), e.accuracy);
  EXPECT_GE(j["accuracy_ci95"][1].get<double>(), e.accuracy);
}

TEST_F(EvaluateTest, PredictLogitsBatchesAgree) {
  auto m = models::create_model("cnn", {});
  auto x = torch::rand({37, 1, 28, 28});
  EXPECT_TENSOR_CLOSE(predict_logits(*m, x, 5), predict_logits(*m, x, 64), 1e-5);
}

}  // namespace
}  // namespace xfer::eval
