#include "xfer/models/mlp.h"

#include "support/support.h"
#include "xfer/core/error.h"

namespace xfer::models {
namespace {

using xfer::testing::SeededTest;
class MlpTest : public SeededTest {};

TEST_F(MlpTest, ShapesFollowOptions) {
  ModelOptions o;
  o.in_channels = 3;
  o.image_size = 8;
  o.num_classes = 7;
  o.arch_options = {{"hidden", {32, 16}}, {"dropout", 0.0}};
  auto m = create_model("mlp", o);
  EXPECT_EQ(m->num_features(), 16);
  auto x = torch::rand({5, 3, 8, 8});
  EXPECT_EQ(m->forward(x).sizes(), (std::vector<int64_t>{5, 7}));
  // Parameters: 192*32+32 + 32*16+16 + 16*7+7.
  EXPECT_EQ(count_parameters(*m), 192 * 32 + 32 + 32 * 16 + 16 + 16 * 7 + 7);
}

TEST_F(MlpTest, DropoutOnlyInTraining) {
  ModelOptions o;
  o.arch_options = {{"dropout", 0.5}};
  auto m = create_model("mlp", o);
  auto x = torch::rand({4, 1, 28, 28});
  m->eval();
  EXPECT_TENSOR_CLOSE(m->forward(x), m->forward(x), 0.0);
  m->train();
  EXPECT_FALSE(torch::allclose(m->forward(x), m->forward(x)));
}

TEST_F(MlpTest, BadOptionsThrow) {
  EXPECT_THROW(Mlp(MlpOptions(10, 2).hidden({})), Error);
  EXPECT_THROW(Mlp(MlpOptions(10, 2).dropout(1.0)), Error);
}

TEST_F(MlpTest, GradientsReachEveryParameter) {
  auto m = create_model("mlp", {});
  m->forward(torch::rand({3, 1, 28, 28})).sum().backward();
  for (const auto& p : m->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0) << p.key();
  }
}

}  // namespace
}  // namespace xfer::models
