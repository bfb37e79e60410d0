#include "xfer/models/classifier.h"

#include "support/support.h"
#include "xfer/core/error.h"
#include "xfer/models/registry.h"

namespace xfer::models {
namespace {

using xfer::testing::SeededTest;

class ClassifierTest : public SeededTest {};

Classifier small_cnn(int64_t classes = 5) {
  ModelOptions o;
  o.num_classes = classes;
  return create_model("cnn", o);
}

TEST_F(ClassifierTest, ForwardIsHeadOfFeaturesOfNormalizedInput) {
  auto m = small_cnn();
  m->set_normalization({0.3}, {0.4});
  m->eval();
  auto x = torch::rand({4, 1, 28, 28});
  auto logits = m->forward(x);
  auto manual = m->forward_head(m->forward_features((x - 0.3) / 0.4));
  EXPECT_TENSOR_CLOSE(logits, manual, 1e-6);
  EXPECT_TENSOR_CLOSE(m->features(x), m->forward_features((x - 0.3) / 0.4), 1e-6);
  EXPECT_EQ(m->features(x).sizes(), (std::vector<int64_t>{4, m->num_features()}));
}

TEST_F(ClassifierTest, NormalizationChangesOutput) {
  auto m = small_cnn();
  m->eval();
  auto x = torch::rand({2, 1, 28, 28});
  auto plain = m->forward(x);
  m->set_normalization({0.5}, {0.25});
  EXPECT_FALSE(torch::allclose(plain, m->forward(x)));
}

TEST_F(ClassifierTest, NormalizationChecksChannelsAndStd) {
  auto m = small_cnn();
  EXPECT_THROW(m->set_normalization({0.5, 0.5}, {0.2}), Error);
  EXPECT_THROW(m->set_normalization({0.5}, {0.0}), Error);
  m->set_normalization({0.5, 0.5, 0.5}, {0.2, 0.2, 0.2});
  EXPECT_THROW(m->forward(torch::rand({1, 1, 28, 28})), Error);
}

TEST_F(ClassifierTest, ResetClassifierReplacesOnlyTheHead) {
  auto m = small_cnn(10);
  auto before = m->named_parameters();
  auto conv_before = m->named_parameters()["stages.0.0.weight"].clone();
  m->reset_classifier(3);
  EXPECT_EQ(m->num_classes(), 3);
  EXPECT_EQ(m->head()->weight.size(0), 3);
  EXPECT_EQ(m->forward(torch::rand({2, 1, 28, 28})).size(1), 3);
  EXPECT_TENSOR_EQ(m->named_parameters()["stages.0.0.weight"], conv_before);
  // The head is still registered once, under its name.
  int64_t head_params = 0;
  for (const auto& p : m->named_parameters()) head_params += m->is_head_parameter(p.key());
  EXPECT_EQ(head_params, 2);
  EXPECT_THROW(m->reset_classifier(0), Error);
}

TEST_F(ClassifierTest, CountParametersRespectsRequiresGrad) {
  auto m = small_cnn();
  int64_t all = count_parameters(*m);
  int64_t head = m->head()->weight.numel() + m->head()->bias.numel();
  for (auto& p : m->named_parameters()) {
    if (!m->is_head_parameter(p.key())) p.value().set_requires_grad(false);
  }
  EXPECT_EQ(count_parameters(*m, true), head);
  EXPECT_EQ(count_parameters(*m, false), all);
}

}  // namespace
}  // namespace xfer::models
