#include "xfer/eval/predictors.h"

#include <cmath>

#include <gtest/gtest.h>

#include "support/support.h"
#include "xfer/models/registry.h"

namespace xfer::eval {
namespace {

using xfer::testing::SeededTest;

// The kernel (Gram) form of linear CKA, written independently of the
// feature-space form the library uses: HSIC(K, L) = tr(K H L H).
double cka_gram(const torch::Tensor& x, const torch::Tensor& y) {
  auto xd = x.to(torch::kDouble), yd = y.to(torch::kDouble);
  const int64_t n = xd.size(0);
  auto h = torch::eye(n, torch::kDouble) - torch::full({n, n}, 1.0 / double(n), torch::kDouble);
  auto k = h.mm(xd.mm(xd.t())).mm(h);
  auto l = h.mm(yd.mm(yd.t())).mm(h);
  auto hsic = [](const torch::Tensor& a, const torch::Tensor& b) { return (a * b).sum().item<double>(); };
  return hsic(k, l) / std::sqrt(hsic(k, k) * hsic(l, l));
}

class PredictorsTest : public SeededTest {};

TEST_F(PredictorsTest, LinearCkaIsOneForTheSameFeaturesAndInvariant) {
  auto x = torch::randn({64, 12});
  EXPECT_NEAR(linear_cka(x, x), 1.0, 1e-12);
  auto q = std::get<0>(torch::linalg_qr(torch::randn({12, 12}, torch::kDouble)));
  EXPECT_NEAR(linear_cka(x, x.to(torch::kDouble).mm(q)), 1.0, 1e-10);  // orthogonal transform
  EXPECT_NEAR(linear_cka(x, 3.7 * x + 2.0), 1.0, 1e-10);               // isotropic scale, shift
  // An anisotropic scaling is not an invariance: CKA drops below 1.
  auto s = torch::ones({12});
  s[0] = 25;
  EXPECT_LT(linear_cka(x, x * s), 0.99);
  auto y = torch::randn({64, 5});
  const double independent = linear_cka(x, y);
  EXPECT_GT(independent, 0.0);
  EXPECT_LT(independent, 0.6);
  EXPECT_NEAR(independent, cka_gram(x, y), 1e-10);
  auto related = x.slice(1, 0, 5) + 0.3 * torch::randn({64, 5});
  EXPECT_NEAR(linear_cka(x, related), cka_gram(x, related), 1e-10);
  EXPECT_GT(linear_cka(x, related), independent);
  EXPECT_TRUE(std::isnan(linear_cka(x, torch::ones({64, 3}))));  // no variance
}

TEST_F(PredictorsTest, SpearmanUsesAverageRanks) {
  // Ranks of b: 1, 2, 3.5, 5, 3.5 -> rho = 8 / sqrt(10 * 9.5).
  EXPECT_NEAR(spearman({1, 2, 3, 4, 5}, {5, 6, 7, 8, 7}), 8.0 / std::sqrt(95.0), 1e-12);
  EXPECT_NEAR(spearman({1, 2, 3, 4}, {1, 8, 27, 1000}), 1.0, 1e-12);  // any monotone map
  EXPECT_NEAR(spearman({1, 2, 3, 4}, {4, 3, 2, 1}), -1.0, 1e-12);
  EXPECT_TRUE(std::isnan(spearman({1, 2}, {1, 2})));        // too few pairs
  EXPECT_TRUE(std::isnan(spearman({1, 2, 3}, {5, 5, 5})));  // constant side
  // Non-finite pairs are dropped, not ranked.
  EXPECT_NEAR(spearman({1, 2, NAN, 3, 4}, {2, 4, 100, 6, 8}), 1.0, 1e-12);
  EXPECT_EQ(spearman_pairs({1, 2, NAN, 3, 4}, {2, 4, 100, 6, INFINITY}), 3);
  EXPECT_EQ(spearman_pairs({1, 2}, {1, 2}), 2);
  EXPECT_THROW(spearman_pairs({1, 2}, {1}), Error);
}

TEST_F(PredictorsTest, GradientAlignmentAndAgreement) {
  auto g = torch::randn({10, 20});
  EXPECT_NEAR(gradient_alignment(g, g), 1.0, 1e-12);
  EXPECT_NEAR(gradient_alignment(g, -2 * g), -1.0, 1e-12);
  auto z = g.clone();
  z[3].zero_();  // a saturated sample has no direction: skipped, not counted as 0
  EXPECT_NEAR(gradient_alignment(g, z), 1.0, 1e-12);
  EXPECT_TRUE(std::isnan(gradient_alignment(torch::zeros({2, 3}), torch::ones({2, 3}))));
  EXPECT_DOUBLE_EQ(prediction_agreement(torch::tensor({0, 1, 2, 3}), torch::tensor({0, 1, 0, 3})), 0.75);
}

TEST_F(PredictorsTest, ProbeOfAModelWithItselfAndBatchIndependence) {
  models::ModelOptions mo;
  mo.in_channels = 1;
  mo.image_size = 8;
  mo.num_classes = 3;
  mo.arch_options = {{"hidden", {16}}};
  auto a = models::create_model("mlp", mo);
  auto b = models::create_model("mlp", mo);
  auto x = torch::rand({13, 1, 8, 8});
  auto y = torch::randint(0, 3, {13}, torch::kLong);
  auto pa = probe_model(*a, x, y, 4);
  auto pa1 = probe_model(*a, x, y, 1);
  EXPECT_TENSOR_CLOSE(pa.gradients, pa1.gradients, 1e-6);  // per-sample, whatever the batch
  EXPECT_EQ(pa.gradients.sizes(), (std::vector<int64_t>{13, 64}));
  EXPECT_EQ(pa.features.sizes(), (std::vector<int64_t>{13, 16}));
  EXPECT_FALSE(pa.features_are_logits);
  // The input gradient of one sample equals autograd on that sample alone.
  auto xi = x.slice(0, 5, 6).clone().requires_grad_(true);
  auto loss = torch::nn::functional::cross_entropy(a->forward(xi), y.slice(0, 5, 6));
  auto gi = torch::autograd::grad({loss}, {xi})[0].flatten(1);
  EXPECT_TENSOR_CLOSE(pa.gradients.slice(0, 5, 6), gi, 1e-6);
  auto self = pair_predictors(pa, pa);
  EXPECT_NEAR(self.gradient_alignment, 1.0, 1e-9);
  EXPECT_NEAR(self.cka, 1.0, 1e-9);
  EXPECT_DOUBLE_EQ(self.agreement, 1.0);
  auto other = pair_predictors(pa, probe_model(*b, x, y, 4));
  EXPECT_LT(other.gradient_alignment, 0.99);
  EXPECT_LT(other.cka, 0.999);
  auto j = other.to_json();
  EXPECT_TRUE(j["cka"].is_number());
  EXPECT_EQ(predictor_names().size(), 3u);
  EXPECT_DOUBLE_EQ(predictor_value(other, "agreement"), other.agreement);
  // A model of other classes: no label-based predictor, CKA as before.
  auto foreign = pair_predictors(pa, probe_model(*b, x, y, 4), /*same_labels=*/false);
  EXPECT_TRUE(std::isnan(foreign.gradient_alignment));
  EXPECT_TRUE(std::isnan(foreign.agreement));
  EXPECT_DOUBLE_EQ(foreign.cka, other.cka);
  EXPECT_TRUE(foreign.to_json()["agreement"].is_null());
}

}  // namespace
}  // namespace xfer::eval
