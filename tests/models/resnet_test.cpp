#include "xfer/models/resnet.h"

#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

#include "support/support.h"
#include "xfer/core/error.h"
#include "xfer/io/model_dir.h"
#include "xfer/io/safetensors.h"

namespace xfer::models {
namespace {

using xfer::testing::SeededTest;
using xfer::testing::TempDir;
class ResnetTest : public SeededTest {};

ModelOptions rgb_options(int64_t image_size, int64_t num_classes) {
  ModelOptions o;
  o.in_channels = 3;
  o.image_size = image_size;
  o.num_classes = num_classes;
  return o;
}

/// Runs tests/python/make_model_golden.py MODEL DIR with Debian's python3
/// (torch + torchvision). Returns the exit code; 77 means "torch/torchvision
/// not importable" (the caller skips).
int make_golden(const std::string& model, const std::string& dir, std::string* log) {
  const std::string log_file = dir + "/golden.log";
  const std::string cmd = "/usr/bin/python3 '" + xfer::testing::source_dir() + "/tests/python/make_model_golden.py' " +
                          model + " '" + dir + "' >'" + log_file + "' 2>&1";
  int status = std::system(cmd.c_str());
  std::ifstream in(log_file);
  std::stringstream ss;
  ss << in.rdbuf();
  *log = ss.str();
  if (status == -1 || !WIFEXITED(status)) return -1;
  int code = WEXITSTATUS(status);
  return code == 127 ? 77 : code;  // no /usr/bin/python3 at all: skip as well
}

/// torchvision parity: same weights, same input, logits within 1e-4.
void check_torchvision_parity(const std::string& arch) {
  TempDir tmp;
  std::string log;
  int code = make_golden(arch, tmp.path(), &log);
  if (code == 77) GTEST_SKIP() << "/usr/bin/python3 has no torch/torchvision: " << log;
  ASSERT_EQ(code, 0) << log;
  auto io = io::read_safetensors(tmp.file("io.safetensors"));
  auto model = create_model(arch, rgb_options(64, 10));
  // strict: every torchvision key (incl. num_batches_tracked) must exist with the same shape.
  auto report = io::load_state_dict(*model, io::read_safetensors(tmp.file("weights.safetensors")),
                                    /*strict=*/true, "golden");
  EXPECT_TRUE(report.ok()) << report.summary();
  model->eval();
  torch::NoGradGuard no_grad;
  auto logits = model->forward(io.at("input"));
  const auto& expected = io.at("logits");
  ASSERT_EQ(logits.sizes(), expected.sizes());
  double err = (logits - expected).abs().max().item<double>();
  std::cout << "[ parity ] " << arch << " vs torchvision: max abs logits error " << err
            << " (logits abs max " << expected.abs().max().item<double>() << ")" << std::endl;
  ::testing::Test::RecordProperty("max_abs_error", std::to_string(err));
  EXPECT_TENSOR_CLOSE(logits, expected, 1e-4);
  // The loaded weights matter: a freshly initialised model is far off.
  auto fresh = create_model(arch, rgb_options(64, 10));
  fresh->eval();
  EXPECT_GT((fresh->forward(io.at("input")) - expected).abs().max().item<double>(), 1e-2);
}

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

TEST_F(ResnetTest, PoolStagesConcatenatesNormalisedStageFeatures) {
  ModelOptions o;
  o.num_classes = 3;
  o.arch_options = {{"widths", {4, 8, 16}}, {"blocks", {1, 1, 1}}};
  auto one = create_model("resnet", o);
  o.arch_options["pool_stages"] = 2;
  auto two = create_model("resnet", o);
  EXPECT_EQ(two->num_features(), 8 + 16);
  EXPECT_EQ(two->head()->weight.size(1), 24);
  // Same parameters but the head: weights of one load into the other.
  torch::NoGradGuard g;
  auto src = one->named_parameters();
  for (auto& p : two->named_parameters()) {
    if (p.key().rfind("fc.", 0) == 0) continue;
    ASSERT_TRUE(src.contains(p.key())) << p.key();
    p.value().copy_(src[p.key()]);
  }
  EXPECT_EQ(one->named_parameters().size(), two->named_parameters().size());
  one->eval();
  two->eval();
  auto x = torch::rand({5, 1, 28, 28});
  auto f = two->features(x);
  ASSERT_EQ(f.sizes(), (std::vector<int64_t>{5, 24}));
  // Each stage's block has unit norm; the last is the 1-stage features normalised.
  EXPECT_TENSOR_CLOSE(f.slice(1, 0, 8).norm(2, 1), torch::ones({5}), 1e-5);
  EXPECT_TENSOR_CLOSE(f.slice(1, 8, 24).norm(2, 1), torch::ones({5}), 1e-5);
  auto last = one->features(x);
  EXPECT_TENSOR_CLOSE(f.slice(1, 8, 24), last / last.norm(2, 1, true), 1e-5);
  EXPECT_EQ(two->forward(x).sizes(), (std::vector<int64_t>{5, 3}));
  for (int bad : {0, 4}) {
    o.arch_options["pool_stages"] = bad;
    EXPECT_THROW(create_model("resnet", o), Error) << bad;
  }
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

TEST_F(ResnetTest, Resnet18TorchvisionKeysAndShapes) {
  auto m = create_model("resnet18", rgb_options(64, 10));
  auto params = m->named_parameters();
  auto buffers = m->named_buffers();
  // torchvision.models.resnet18(num_classes=10).state_dict() has 122 entries
  // (62 parameters, 60 BatchNorm buffers).
  EXPECT_EQ(params.size() + buffers.size(), 122u);
  EXPECT_EQ(params["conv1.weight"].sizes(), (std::vector<int64_t>{64, 3, 7, 7}));
  EXPECT_EQ(params["layer2.0.downsample.0.weight"].sizes(), (std::vector<int64_t>{128, 64, 1, 1}));
  EXPECT_EQ(params["layer4.1.conv2.weight"].sizes(), (std::vector<int64_t>{512, 512, 3, 3}));
  EXPECT_TRUE(params.contains("layer2.0.downsample.1.weight"));
  EXPECT_FALSE(params.contains("layer1.0.downsample.0.weight"));
  EXPECT_FALSE(params.contains("layer1.2.conv1.weight"));  // 2 blocks per stage
  EXPECT_TRUE(buffers.contains("layer4.1.bn2.num_batches_tracked"));
  EXPECT_EQ(params["fc.weight"].sizes(), (std::vector<int64_t>{10, 512}));
  EXPECT_EQ(m->num_features(), 512);
  EXPECT_EQ(m->head_name(), "fc");
  EXPECT_TRUE(m->is_head_parameter("fc.bias"));
  auto* r = dynamic_cast<ResNetImpl*>(m.get());
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->num_stages(), 4);
  EXPECT_EQ(r->named_children().size(), 9u);  // conv1 bn1 relu maxpool layer1-4 fc
  m->eval();
  torch::NoGradGuard no_grad;
  auto x = torch::rand({2, 3, 64, 64});
  EXPECT_EQ(m->forward(x).sizes(), (std::vector<int64_t>{2, 10}));
  EXPECT_EQ(m->features(x).sizes(), (std::vector<int64_t>{2, 512}));
  // /32 overall: a 32x32 input reaches layer4 as 1x1 and still works.
  EXPECT_EQ(m->forward(torch::rand({1, 3, 32, 32})).sizes(), (std::vector<int64_t>{1, 10}));
  EXPECT_THROW(m->forward(torch::rand({1, 1, 64, 64})), Error);  // wrong channel count
}

TEST_F(ResnetTest, Resnet34And50Structure) {
  auto r34 = create_model("resnet34", rgb_options(32, 7));
  auto p34 = r34->named_parameters();
  EXPECT_TRUE(p34.contains("layer3.5.conv2.weight"));  // 3, 4, 6, 3 blocks
  EXPECT_FALSE(p34.contains("layer3.6.conv2.weight"));
  EXPECT_FALSE(p34.contains("layer1.0.conv3.weight"));  // BasicBlocks
  EXPECT_EQ(r34->num_features(), 512);

  auto r50 = create_model("resnet50", rgb_options(32, 7));
  auto p50 = r50->named_parameters();
  // torchvision.models.resnet50().state_dict() has 320 entries.
  EXPECT_EQ(p50.size() + r50->named_buffers().size(), 320u);
  EXPECT_EQ(r50->num_features(), 2048);
  EXPECT_EQ(p50["fc.weight"].sizes(), (std::vector<int64_t>{7, 2048}));
  EXPECT_EQ(p50["layer1.0.conv1.weight"].sizes(), (std::vector<int64_t>{64, 64, 1, 1}));
  EXPECT_EQ(p50["layer1.0.conv3.weight"].sizes(), (std::vector<int64_t>{256, 64, 1, 1}));
  // layer1.0 changes the width 64 -> 256: it has a downsample even at stride 1.
  EXPECT_EQ(p50["layer1.0.downsample.0.weight"].sizes(), (std::vector<int64_t>{256, 64, 1, 1}));
  EXPECT_FALSE(p50.contains("layer1.1.downsample.0.weight"));
  EXPECT_EQ(p50["layer2.0.conv2.weight"].sizes(), (std::vector<int64_t>{128, 128, 3, 3}));
  EXPECT_EQ(p50["layer3.5.conv3.weight"].sizes(), (std::vector<int64_t>{1024, 256, 1, 1}));
  r50->eval();
  torch::NoGradGuard no_grad;
  EXPECT_EQ(r50->forward(torch::rand({2, 3, 32, 32})).sizes(), (std::vector<int64_t>{2, 7}));
}

TEST_F(ResnetTest, Resnet18SmallInputStem) {
  ModelOptions o;  // 1x28x28
  o.num_classes = 5;
  o.arch_options = {{"small_input", true}};
  auto m = create_model("resnet18", o);
  auto params = m->named_parameters();
  EXPECT_EQ(params["conv1.weight"].sizes(), (std::vector<int64_t>{64, 1, 3, 3}));
  auto* r = dynamic_cast<ResNetImpl*>(m.get());
  ASSERT_NE(r, nullptr);
  bool has_maxpool = false;
  for (const auto& c : r->named_children()) {
    has_maxpool = has_maxpool || c.key() == "maxpool";
    if (c.key() == "conv1") {
      auto* conv = c.value()->as<torch::nn::Conv2d>();
      ASSERT_NE(conv, nullptr);
      EXPECT_EQ((*conv->options.stride())[0], 1);  // keeps 28x28 into layer1
    }
  }
  EXPECT_FALSE(has_maxpool);
  auto x = torch::rand({2, 1, 28, 28});
  {
    m->eval();
    torch::NoGradGuard no_grad;
    EXPECT_EQ(m->forward(x).sizes(), (std::vector<int64_t>{2, 5}));
    // layer1 runs at full resolution.
    EXPECT_EQ(r->stage(0)->forward(torch::rand({2, 64, 28, 28})).sizes(),
              (std::vector<int64_t>{2, 64, 28, 28}));
  }
  // Trains: gradients reach the stem.
  m->train();
  auto loss = torch::nn::functional::cross_entropy(m->forward(x), torch::tensor({0, 3}));
  loss.backward();
  EXPECT_GT(params["conv1.weight"].grad().abs().sum().item<double>(), 0.0);

  ModelOptions bad = o;
  bad.arch_options = {{"small_inputs", true}};
  EXPECT_THROW(create_model("resnet18", bad), UsageError);
  bad.arch_options = {{"small_input", "yes"}};
  EXPECT_THROW(create_model("resnet18", bad), Error);
  auto d = model_description("resnet50");
  EXPECT_NE(d.find("torchvision"), std::string::npos) << d;
}

TEST_F(ResnetTest, TorchvisionInitialisation) {
  auto m = create_model("resnet18", rgb_options(32, 10));
  auto params = m->named_parameters();
  // kaiming_normal_(fan_out, relu): std = sqrt(2 / (out_channels * k * k)).
  auto w = params["layer3.0.conv2.weight"];  // 256 x 256 x 3 x 3
  double expected = std::sqrt(2.0 / (256 * 9));
  EXPECT_NEAR(w.std().item<double>(), expected, 0.03 * expected);
  EXPECT_NEAR(w.mean().item<double>(), 0.0, 0.03 * expected);
  EXPECT_TENSOR_EQ(params["layer3.0.bn2.weight"], torch::ones({256}));
  EXPECT_TENSOR_EQ(params["layer3.0.bn2.bias"], torch::zeros({256}));
}

TEST_F(ResnetTest, BottleneckIsResidual) {
  // With conv3's weights zeroed, bn3 outputs its bias (0), so out = relu(x).
  Bottleneck block(16, 4, 1);  // 16 -> 4 -> 4 -> 16: identity shortcut
  block->eval();
  bool has_downsample = false;
  for (auto& p : block->named_parameters()) {
    if (p.key() == "conv3.weight") p.value().data().zero_();
    has_downsample = has_downsample || p.key().rfind("downsample", 0) == 0;
  }
  EXPECT_FALSE(has_downsample);
  auto x = torch::randn({2, 16, 6, 6});
  EXPECT_TENSOR_CLOSE(block->forward(x), torch::relu(x), 1e-6);
  // Stride 2 on the 3x3 conv (v1.5) and a projection shortcut.
  Bottleneck down(16, 8, 2);
  auto params = down->named_parameters();
  EXPECT_EQ(params["downsample.0.weight"].sizes(), (std::vector<int64_t>{32, 16, 1, 1}));
  EXPECT_EQ(down->forward(x).sizes(), (std::vector<int64_t>{2, 32, 3, 3}));
}

TEST_F(ResnetTest, Resnet18MatchesTorchvision) { check_torchvision_parity("resnet18"); }

TEST_F(ResnetTest, Resnet50MatchesTorchvision) { check_torchvision_parity("resnet50"); }

}  // namespace
}  // namespace xfer::models
