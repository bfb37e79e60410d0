#include "xfer/models/resnet.h"

#include "support/support.h"
#include "xfer/core/error.h"

namespace xfer::models {
namespace {

using xfer::testing::SeededTest;
class ResnetTest : public SeededTest {};

TEST_F(ResnetTest, TorchvisionKeyNames) {
  ModelOptions o;
  o.num_classes = 10;
  auto m = create_model("resnet", o);
  auto params = m->named_parameters();
  for (const char* k : {"conv1.weight", "bn1.weight", "bn1.bias", "layer1.0.conv1.weight",
                        "layer1.0.bn2.bias", "layer2.0.downsample.0.weight",
                        "layer2.0.downsample.1.weight", "layer3.0.conv2.weight", "fc.weight",
                        "fc.bias"}) {
    EXPECT_TRUE(params.contains(k)) << k;
  }
  EXPECT_TRUE(m->named_buffers().contains("bn1.running_var"));
  EXPECT_TRUE(m->named_buffers().contains("bn1.num_batches_tracked"));
  EXPECT_FALSE(params.contains("layer1.0.downsample.0.weight"));  // same shape: identity shortcut
  EXPECT_EQ(m->head_name(), "fc");
  EXPECT_TRUE(m->is_head_parameter("fc.weight"));
  EXPECT_FALSE(m->is_head_parameter("layer1.0.conv1.weight"));
}

TEST_F(ResnetTest, ShapesAndStages) {
  ModelOptions o;
  o.num_classes = 4;
  o.arch_options = {{"widths", {8, 16}}, {"blocks", {2, 1}}};
  auto m = create_model("resnet", o);
  m->eval();
  auto x = torch::rand({2, 1, 28, 28});
  EXPECT_EQ(m->forward(x).sizes(), (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(m->num_features(), 16);
  auto* r = dynamic_cast<SmallResNetImpl*>(m.get());
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->num_stages(), 2);
  EXPECT_TRUE(m->named_parameters().contains("layer1.1.conv1.weight"));
}

TEST_F(ResnetTest, BasicBlockIsResidual) {
  // With conv2's weights zeroed, bn2 outputs its bias (0), so out = relu(x).
  BasicBlock block(4, 4, 1);
  block->eval();
  for (auto& p : block->named_parameters()) {
    if (p.key() == "conv2.weight") p.value().data().zero_();
  }
  auto x = torch::randn({2, 4, 6, 6});
  EXPECT_TENSOR_CLOSE(block->forward(x), torch::relu(x), 1e-6);
}

TEST_F(ResnetTest, MismatchedWidthsAndBlocksThrow) {
  ModelOptions o;
  o.arch_options = {{"widths", {8, 16}}, {"blocks", {1}}};
  EXPECT_THROW(create_model("resnet", o), Error);
}

}  // namespace
}  // namespace xfer::models
