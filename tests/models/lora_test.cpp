#include "xfer/models/lora.h"

#include "support/errors.h"
#include "support/support.h"
#include "xfer/core/error.h"
#include "xfer/io/model_dir.h"
#include "xfer/models/registry.h"

namespace xfer::models {
namespace {

using xfer::testing::SeededTest;
using xfer::testing::TempDir;

Classifier make(const std::string& arch) {
  ModelOptions o;
  o.in_channels = 1;
  o.image_size = 28;
  o.num_classes = 5;
  return create_model(arch, o);
}

class LoraTest : public SeededTest {};

TEST_F(LoraTest, FreshAdaptersLeaveTheFunctionUnchanged) {
  for (const char* arch : {"cnn", "resnet", "vit", "mlp"}) {
    auto m = make(arch);
    m->eval();
    auto x = torch::rand({4, 1, 28, 28});
    torch::NoGradGuard ng;
    auto before = m->forward(x);
    auto adapters = add_lora(*m, LoraOptions().rank(4));
    EXPECT_GT(adapters->layers().size(), 0u) << arch;
    EXPECT_TENSOR_EQ(m->forward(x), before);
  }
}

TEST_F(LoraTest, AdaptsBackboneLinearAndConvButNotTheHead) {
  auto m = make("cnn");
  auto targets = lora_eligible(*m, LoraOptions());
  // cnn: two stage convs and the neck's Linear; the head is not adapted.
  EXPECT_EQ(targets, (std::vector<std::string>{"stages.0.0", "stages.1.0", "neck.1"}));
  EXPECT_EQ(lora_eligible(*m, LoraOptions().conv(false)), (std::vector<std::string>{"neck.1"}));
  add_lora(*m, LoraOptions().rank(2));
  auto params = m->named_parameters(true);
  ASSERT_TRUE(params.contains("lora.stages__0__0.A"));
  EXPECT_EQ(params["lora.stages__0__0.A"].sizes(), (std::vector<int64_t>{2, 1 * 3 * 3}));
  EXPECT_EQ(params["lora.stages__0__0.B"].sizes(), (std::vector<int64_t>{32, 2}));
  EXPECT_EQ(params["lora.neck__1.B"].abs().sum().item<double>(), 0.0);
}

TEST_F(LoraTest, GradientsReachTheAdaptersAndScaleIsAlphaOverRank) {
  auto m = make("mlp");
  auto adapters = add_lora(*m, LoraOptions().rank(2).alpha(8));
  EXPECT_DOUBLE_EQ(adapters->options().scale(), 4.0);
  auto& layer = adapters->layers().front();
  {
    torch::NoGradGuard ng;
    layer.b.normal_();
  }
  auto loss = m->forward(torch::rand({3, 1, 28, 28})).pow(2).sum();
  loss.backward();
  EXPECT_TRUE(layer.a.grad().defined());
  EXPECT_GT(layer.a.grad().abs().sum().item<double>(), 0.0);
  // The effective weight is W0 + 4 * B A.
  auto* lin = layer.module->as<torch::nn::Linear>();
  EXPECT_TENSOR_CLOSE(lin->weight.detach(), layer.base + 4.0 * torch::mm(layer.b, layer.a), 1e-6);
}

TEST_F(LoraTest, MergedModelEqualsUnmergedWithin1e5) {
  for (const char* arch : {"resnet", "vit", "cnn"}) {
    auto m = make(arch);
    m->eval();
    auto adapters = add_lora(*m, LoraOptions().rank(4));
    {
      torch::NoGradGuard ng;
      for (auto& l : adapters->layers()) l.b.normal_(0, 0.05);
    }
    auto x = torch::rand({4, 1, 28, 28});
    torch::NoGradGuard ng;
    auto unmerged = m->forward(x);
    auto base_keys = m->named_parameters().size();
    merge_lora(*m);
    EXPECT_EQ(m->lora(), nullptr);
    EXPECT_LT(m->named_parameters().size(), base_keys);
    for (const auto& p : m->named_parameters()) EXPECT_EQ(p.key().rfind("lora.", 0), std::string::npos);
    EXPECT_TENSOR_CLOSE(m->forward(x), unmerged, 1e-5);
  }
}

TEST_F(LoraTest, SeparateAdaptersRoundTripThroughAModelDirectory) {
  TempDir tmp;
  io::ModelConfig config;
  config.arch = "cnn";
  config.num_classes = 5;
  config.input_shape = {1, 28, 28};
  auto m = io::build_model(config);
  auto adapters = add_lora(*m, LoraOptions().rank(3).alpha(6));
  {
    torch::NoGradGuard ng;
    for (auto& l : adapters->layers()) l.b.normal_(0, 0.05);
  }
  config.lora = adapters->options();
  config.lora_targets = adapters->targets();
  m->eval();
  io::save_model_dir(tmp.file("m"), *m, config, {});
  auto loaded = io::load_model_dir(tmp.file("m"));
  ASSERT_NE(loaded.model->lora(), nullptr);
  EXPECT_EQ(loaded.model->lora()->targets(), adapters->targets());
  EXPECT_DOUBLE_EQ(loaded.model->lora()->options().scale(), 2.0);
  auto x = torch::rand({2, 1, 28, 28});
  torch::NoGradGuard ng;
  EXPECT_TENSOR_CLOSE(loaded.model->forward(x), m->forward(x), 1e-6);
}

TEST_F(LoraTest, RefusesBadOptionsAndModelsWithoutEligibleLayers) {
  auto m = make("mlp");
  xfer::testing::expect_error_naming([&] { add_lora(*m, LoraOptions().rank(0)); }, "rank");
  xfer::testing::expect_error_naming(
      [&] { add_lora(*m, LoraOptions().linear(false).conv(true)); }, "no eligible layer");
  xfer::testing::expect_error_naming([&] { add_lora(*m, LoraOptions(), {"head"}); },
                                         "not an eligible layer");
  const auto first = lora_eligible(*m, LoraOptions()).front();
  xfer::testing::expect_error_naming([&] { add_lora(*make("mlp"), LoraOptions(), {first, first}); },
                                     "named twice");
  add_lora(*m, LoraOptions());
  xfer::testing::expect_error_naming([&] { add_lora(*m, LoraOptions()); }, "already");
}

}  // namespace
}  // namespace xfer::models
