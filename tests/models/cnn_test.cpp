#include "xfer/models/cnn.h"

#include "support/support.h"
#include "xfer/core/error.h"

namespace xfer::models {
namespace {

using xfer::testing::SeededTest;
class CnnTest : public SeededTest {};

TEST_F(CnnTest, OutputAndFeatureShapes) {
  ModelOptions o;
  o.num_classes = 5;
  auto m = create_model("cnn", o);
  m->eval();
  auto x = torch::rand({3, 1, 28, 28});
  EXPECT_EQ(m->forward(x).sizes(), (std::vector<int64_t>{3, 5}));
  EXPECT_EQ(m->num_features(), 128);
  EXPECT_EQ(m->forward_features(x).sizes(), (std::vector<int64_t>{3, 128}));
}

TEST_F(CnnTest, OddImageSizesAndChannels) {
  ModelOptions o;
  o.in_channels = 3;
  o.image_size = 15;  // 15 -> 8 -> 4 with ceil-mode pooling
  o.num_classes = 2;
  o.arch_options = {{"widths", {8, 16, 32}}, {"convs", 2}, {"hidden", 20}};
  auto m = create_model("cnn", o);
  EXPECT_EQ(m->forward(torch::rand({2, 3, 15, 15})).sizes(), (std::vector<int64_t>{2, 2}));
  auto* cnn = dynamic_cast<CnnImpl*>(m.get());
  ASSERT_NE(cnn, nullptr);
  EXPECT_EQ(cnn->stages()->size(), 3u);
}

TEST_F(CnnTest, BatchNormStatisticsUpdateOnlyInTraining) {
  auto m = create_model("cnn", {});
  auto rm = [&] { return m->named_buffers()["stages.0.1.running_mean"].clone(); };
  auto before = rm();
  m->eval();
  m->forward(torch::rand({4, 1, 28, 28}));
  EXPECT_TENSOR_EQ(rm(), before);
  m->train();
  m->forward(torch::rand({4, 1, 28, 28}));
  EXPECT_FALSE(torch::equal(rm(), before));
}

TEST_F(CnnTest, BadOptionsThrow) {
  EXPECT_THROW(Cnn(CnnOptions(1, 28, 10).widths({})), Error);
  EXPECT_THROW(Cnn(CnnOptions(1, 28, 10).convs(0)), Error);
  EXPECT_THROW(Cnn(CnnOptions(1, 28, 10).dropout(-0.1)), Error);
}

}  // namespace
}  // namespace xfer::models
