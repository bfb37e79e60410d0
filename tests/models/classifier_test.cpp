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

TEST_F(ClassifierTest, HeadTypeParsesAndRefusesBadValues) {
  EXPECT_EQ(HeadOptions::parse("linear").kind(), "linear");
  auto c = HeadOptions::parse("cosine");
  EXPECT_EQ(c.kind(), "cosine");
  EXPECT_DOUBLE_EQ(c.scale(), 10.0);
  EXPECT_DOUBLE_EQ(HeadOptions::parse("cosine:16.5").scale(), 16.5);
  EXPECT_EQ(HeadOptions::parse("cosine:16.5").str(), "cosine:16.5");
  EXPECT_EQ(HeadOptions::parse(HeadOptions::parse("cosine").str()), HeadOptions::parse("cosine"));
  for (const char* bad : {"", "cos", "linear:3", "cosine:", "cosine:x", "cosine:3x", "cosine:0",
                          "cosine:-2", "cosine:nan", "cosine:1e9"}) {
    try {
      HeadOptions::parse(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kUsage) << e.what();
      EXPECT_NE(std::string(e.what()).find("--head-type"), std::string::npos) << e.what();
    }
  }
}

TEST_F(ClassifierTest, CosineHeadIsScaledCosineOfFeaturesAndClassWeightsPlusBias) {
  auto m = small_cnn(4);
  m->eval();
  m->set_head_options(HeadOptions().kind("cosine").scale(7.0));
  auto f = torch::randn({6, m->num_features()});
  auto w = m->head()->weight, b = m->head()->bias;
  // cos(f_i, w_c) computed elementwise, independently of the implementation's normalize/matmul
  auto dot = (f.unsqueeze(1) * w.unsqueeze(0)).sum(2);
  auto norms = f.norm(2, 1).unsqueeze(1) * w.norm(2, 1).unsqueeze(0);
  auto expected = 7.0 * dot / norms + b;
  EXPECT_TENSOR_CLOSE(m->forward_head(f), expected, 1e-5);
  // Scale-free in the features: a feature vector and its multiple get the same logits.
  EXPECT_TENSOR_CLOSE(m->forward_head(f * 3.5), m->forward_head(f), 1e-5);
  // Logits are bounded by scale + |bias|, unlike a linear head's.
  EXPECT_LE((m->forward_head(f * 1e4) - b).abs().max().item<double>(), 7.0 + 1e-4);
  // Gradients reach the features and both head parameters.
  auto x = torch::rand({3, 1, 28, 28});
  m->train();
  m->forward(x).sum().backward();
  EXPECT_TRUE(m->head()->weight.grad().defined());
  EXPECT_GT(m->head()->weight.grad().abs().sum().item<double>(), 0);
  EXPECT_GT(m->named_parameters()["stages.0.0.weight"].grad().abs().sum().item<double>(), 0);
  // Back to linear: the Linear module again.
  m->set_head_options(HeadOptions());
  m->eval();
  torch::NoGradGuard ng;
  EXPECT_TENSOR_CLOSE(m->forward_head(f), m->head()->forward(f), 1e-6);
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
