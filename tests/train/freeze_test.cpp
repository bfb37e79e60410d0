#include "xfer/train/freeze.h"

#include <cstdlib>

#include "support/errors.h"
#include "support/support.h"
#include "xfer/models/lora.h"
#include "xfer/models/registry.h"
#include "xfer/models/torchscript.h"
#include "xfer/train/trainer.h"

namespace xfer::train {
namespace {

using xfer::testing::SeededTest;
using xfer::testing::TempDir;
using xfer::testing::expect_error_naming;

models::Classifier make(const std::string& arch) {
  models::ModelOptions o;
  o.in_channels = 1;
  o.image_size = 28;
  o.num_classes = 5;
  return models::create_model(arch, o);
}

int64_t head_params(models::ClassifierImpl& m) {
  return m.head()->weight.numel() + m.head()->bias.numel();
}

class FreezeTest : public SeededTest {};

TEST_F(FreezeTest, ParsesStrategies) {
  EXPECT_EQ(Strategy::parse("linear-probe").kind, Strategy::Kind::kLinearProbe);
  EXPECT_EQ(Strategy::parse("full").str(), "full");
  EXPECT_EQ(Strategy::parse("partial:2").stages, 2);
  EXPECT_EQ(Strategy::parse("lora:8").rank, 8);
  EXPECT_DOUBLE_EQ(Strategy::parse("l2-sp:0.01").alpha, 0.01);
  EXPECT_EQ(Strategy::parse("l2-sp:0.01").str(), "l2-sp:0.01");
  // The card's strategy string reads back as the same alpha (not rounded to 6 digits).
  EXPECT_EQ(Strategy::parse("l2-sp:0.0012345678").str(), "l2-sp:0.0012345678");
  EXPECT_EQ(Strategy::parse(Strategy::parse("l2-sp:0.1").str()).alpha, 0.1);
  EXPECT_EQ(Strategy::parse("lp-ft").str(), "lp-ft");
  for (const char* bad : {"", "fool", "partial", "partial:0", "partial:x", "lora:", "lora:-1",
                          "l2-sp:nan", "l2-sp:-1", "full:3", "linear-probe:1"}) {
    try {
      Strategy::parse(bad);
      ADD_FAILURE() << "accepted " << bad;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kUsage) << bad;
      EXPECT_NE(std::string(e.what()).find("--strategy"), std::string::npos) << e.what();
    }
  }
}

TEST_F(FreezeTest, StagesCoverEveryParameterExactlyOnce) {
  for (const char* arch : {"mlp", "cnn", "resnet", "resnet18", "vit"}) {
    auto m = make(arch);
    auto stages = m->param_stages();
    ASSERT_GE(stages.size(), 2u) << arch;
    EXPECT_EQ(stages.back().name, "head");
    for (const auto& p : m->named_parameters()) {
      EXPECT_GE(models::ClassifierImpl::stage_of(stages, p.key()), 0) << arch << " " << p.key();
    }
  }
  auto r = make("resnet");
  auto names = r->param_stages();
  EXPECT_EQ(names[0].name, "stem");
  EXPECT_EQ(names[1].name, "layer1");
  EXPECT_EQ(names.size(), 5u);  // stem, layer1-3, head
  auto v = make("vit");
  EXPECT_EQ(models::ClassifierImpl::stage_of(v->param_stages(), "cls_token"), 0);
  EXPECT_EQ(models::ClassifierImpl::stage_of(v->param_stages(), "norm.weight"), 4);  // last block
}

TEST_F(FreezeTest, LinearProbeTrainsOnlyTheHeadAndPinsEveryBatchNorm) {
  auto m = make("resnet");
  auto plan = apply_freeze(*m, FreezeOptions().trainable_stages(0));
  EXPECT_EQ(plan.trainable, head_params(*m));
  EXPECT_EQ(models::count_parameters(*m, true), plan.trainable);
  EXPECT_EQ(plan.bn_eval.size(), m->batch_norm_layers().size());
  m->train();
  for (const auto& bn : m->batch_norm_layers()) EXPECT_FALSE(m->layer_is_training(bn)) << bn;
  EXPECT_TRUE(m->is_training());
}

// train() on a stage reaches its BatchNorm layers without passing through the
// model's train(): the pins must still hold by the time a batch arrives.
TEST_F(FreezeTest, PinnedBatchNormHoldsWhenOnlyAStageIsPutInTraining) {
  auto m = make("resnet");
  apply_freeze(*m, FreezeOptions().trainable_stages(0));
  m->train();
  std::vector<torch::Tensor> before;
  for (const auto& b : m->buffers()) before.push_back(b.clone());
  ASSERT_FALSE(before.empty());
  for (const auto& child : m->named_children()) child.value()->train(true);
  EXPECT_TRUE(m->layer_is_training("layer1.0.bn1"));
  m->forward(torch::rand({4, 1, 28, 28}));
  EXPECT_FALSE(m->layer_is_training("layer1.0.bn1"));
  size_t i = 0;
  for (const auto& b : m->buffers()) EXPECT_TENSOR_EQ(b, before.at(i++));
  // Unpinned (bn_mode train), the same forward pass moves the statistics.
  apply_freeze(*m, FreezeOptions().trainable_stages(0).bn_mode("train"));
  m->train();
  m->forward(torch::rand({4, 1, 28, 28}));
  EXPECT_FALSE(torch::equal(m->buffers().front(), before.front()));
}

TEST_F(FreezeTest, PartialTrainsTheLastStagesAndAutoBatchNormFollows) {
  auto m = make("resnet");
  auto plan = apply_freeze(*m, FreezeOptions().trainable_stages(1));
  int64_t layer3 = 0;
  for (const auto& p : m->named_parameters()) {
    if (p.key().rfind("layer3.", 0) == 0) layer3 += p.value().numel();
    bool expect = p.key().rfind("layer3.", 0) == 0 || p.key().rfind("fc.", 0) == 0;
    EXPECT_EQ(p.value().requires_grad(), expect) << p.key();
  }
  EXPECT_EQ(plan.trainable, layer3 + head_params(*m));
  m->train();
  EXPECT_TRUE(m->layer_is_training("layer3.0.bn1"));
  EXPECT_FALSE(m->layer_is_training("layer2.0.bn1"));
  EXPECT_FALSE(m->layer_is_training("bn1"));
  // bn_mode train leaves frozen BatchNorm in training mode (the LibTorch default).
  apply_freeze(*m, FreezeOptions().trainable_stages(1).bn_mode("train"));
  m->train();
  EXPECT_TRUE(m->layer_is_training("bn1"));
  apply_freeze(*m, FreezeOptions().trainable_stages(-1).bn_mode("eval"));
  m->train();
  EXPECT_FALSE(m->layer_is_training("layer3.0.bn1"));
  EXPECT_EQ(models::count_parameters(*m, true), models::count_parameters(*m));
  xfer::testing::expect_error_naming([&] { plan_freeze(*m, FreezeOptions().trainable_stages(9)); },
                                     "only 4 backbone stages");
}

TEST_F(FreezeTest, LayerDecayAndNoDecayGroups) {
  auto m = make("cnn");  // stages.0, stages.1, neck.1, head
  auto plan = plan_freeze(*m, FreezeOptions().layer_decay(0.5).weight_decay(0.1).head_lr_scale(2));
  std::map<std::string, const GroupPlan*> g;
  for (const auto& x : plan.groups) g[x.name] = &x;
  for (const char* k : {"stages.0", "stages.0/no-decay", "stages.1", "neck.1", "head"}) {
    ASSERT_TRUE(g.count(k)) << k;
  }
  EXPECT_DOUBLE_EQ(g["stages.0"]->lr_scale, 0.125);
  EXPECT_DOUBLE_EQ(g["stages.1"]->lr_scale, 0.25);
  EXPECT_DOUBLE_EQ(g["neck.1"]->lr_scale, 0.5);
  EXPECT_DOUBLE_EQ(g["head"]->lr_scale, 2.0);
  EXPECT_DOUBLE_EQ(g["stages.0"]->weight_decay, 0.1);
  EXPECT_DOUBLE_EQ(g["stages.0/no-decay"]->weight_decay, 0.0);
  EXPECT_EQ(g["stages.0/no-decay"]->bn, "train");
  EXPECT_EQ(g["head"]->bn, "-");
  // BatchNorm weights and biases are 1-d: never decayed.
  for (const auto& name : g["stages.0/no-decay"]->params) EXPECT_NE(name.find("stages.0"), std::string::npos);
  int64_t sum = 0;
  for (const auto& x : plan.groups) sum += x.parameters;
  EXPECT_EQ(sum, models::count_parameters(*m));
  auto text = plan.text(1e-3);
  EXPECT_NE(text.find("stages.0/no-decay"), std::string::npos);
  EXPECT_NE(text.find("0.000125"), std::string::npos) << text;
}

// timm's no_weight_decay: the ViT's class token and position embedding are
// multi-dimensional but take no decay (it pulled the pre-trained ones to zero).
TEST_F(FreezeTest, VitTokensAndPositionEmbeddingTakeNoDecay) {
  auto v = make("vit");
  auto plan = plan_freeze(*v, FreezeOptions().weight_decay(0.05));
  int found = 0;
  for (const auto& g : plan.groups) {
    for (const auto& name : g.params) {
      if (name == "cls_token" || name == "pos_embed") {
        ++found;
        EXPECT_EQ(g.weight_decay, 0.0) << name << " in " << g.name;
      }
    }
  }
  EXPECT_EQ(found, 2);
  const auto groups = split_weight_decay(*v);
  for (const char* name : {"cls_token", "pos_embed"}) {
    EXPECT_NE(std::find(groups.no_decay_names.begin(), groups.no_decay_names.end(), name),
              groups.no_decay_names.end())
        << name;
  }
  EXPECT_TRUE(takes_weight_decay("patch_embed.weight", torch::zeros({2, 2})));
  EXPECT_FALSE(takes_weight_decay("ts__backbone__pos_embed", torch::zeros({1, 2, 2})));
  EXPECT_TRUE(takes_weight_decay("my_pos_embedder.weight", torch::zeros({2, 2})));
  EXPECT_FALSE(takes_weight_decay("norm.weight", torch::zeros({2})));
}

TEST_F(FreezeTest, AdaptersOnlyTrainsLoraAndHead) {
  auto m = make("cnn");
  models::add_lora(*m, models::LoraOptions().rank(2));
  auto plan = apply_freeze(*m, FreezeOptions().adapters_only(true));
  int64_t lora = 0;
  for (const auto& p : m->named_parameters()) {
    bool is_lora = p.key().rfind("lora.", 0) == 0;
    if (is_lora) lora += p.value().numel();
    EXPECT_EQ(p.value().requires_grad(), is_lora || m->is_head_parameter(p.key())) << p.key();
  }
  EXPECT_EQ(plan.trainable, lora + head_params(*m));
  // Adapters sit in the stage of the layer they adapt.
  EXPECT_EQ(models::ClassifierImpl::stage_of(m->param_stages(), "lora.stages__1__0.A"), 1);
}

TEST_F(FreezeTest, WorksOnTorchScriptModules) {
  TempDir dir;
  std::string cmd = "/usr/bin/python3 '" + xfer::testing::source_dir() + "/tests/python/make_torchscript_golden.py' '" +
                    dir.path() + "' >/dev/null 2>&1";
  if (std::system(cmd.c_str()) != 0) GTEST_SKIP() << "python3-torch not available";
  models::TorchScriptClassifier m(models::load_torchscript(dir.file("backbone.pt")), "backbone",
                                  std::vector<int64_t>{1, 28, 28}, 3);
  auto stages = m->param_stages();
  ASSERT_EQ(stages.size(), 5u);  // conv1, bn1, conv2, proj, head
  EXPECT_EQ(stages[1].name, "bn1");
  EXPECT_EQ(m->batch_norm_layers(), (std::vector<std::string>{"ts__bn1"}));
  auto plan = apply_freeze(*m, FreezeOptions().trainable_stages(0));
  EXPECT_EQ(plan.trainable, 32 * 3 + 3);
  EXPECT_EQ(plan.bn_eval, (std::vector<std::string>{"ts__bn1"}));
  m->train();
  EXPECT_FALSE(m->layer_is_training("ts__bn1"));
  // A scripted module (not traced: a trace bakes in eval-mode BatchNorm)
  // updates running statistics only when its BatchNorm is not pinned.
  models::TorchScriptClassifier c(models::load_torchscript(dir.file("classifier.pt")), "classifier",
                                  std::vector<int64_t>{1, 28, 28}, 10);
  const std::string bn = "ts__backbone__bn1";
  ASSERT_EQ(c->batch_norm_layers(), (std::vector<std::string>{bn}));
  EXPECT_EQ(c->param_stages().size(), 2u);  // backbone, then fc as the head
  EXPECT_EQ(c->param_stages().back().prefixes, (std::vector<std::string>{"ts__fc"}));
  apply_freeze(*c, FreezeOptions().trainable_stages(0));
  c->train();
  auto mean = c->named_buffers()[bn + "__running_mean"].clone();
  c->forward(torch::rand({4, 1, 28, 28}));
  EXPECT_TENSOR_EQ(c->named_buffers()[bn + "__running_mean"], mean);
  apply_freeze(*c, FreezeOptions());
  c->train();
  EXPECT_TRUE(c->layer_is_training(bn));
  c->forward(torch::rand({4, 1, 28, 28}));
  EXPECT_FALSE(torch::equal(c->named_buffers()[bn + "__running_mean"], mean));
}

// A scripted backbone with a child named `head` (as timm's ConvNeXt keeps head.norm) and a
// BatchNorm without affine weights.
TEST_F(FreezeTest, TorchScriptChildNamedHeadAndBatchNormWithoutWeights) {
  TempDir dir;
  if (!xfer::testing::make_torchscript_golden(dir.path()))
    GTEST_SKIP() << "python3-torch not available";
  models::TorchScriptClassifier m(models::load_torchscript(dir.file("headed_backbone.pt")),
                                  "backbone", std::vector<int64_t>{1, 28, 28}, 3);
  auto stages = m->param_stages();
  ASSERT_EQ(stages.size(), 4u);  // conv1, block, the scripted head.norm, the new head
  EXPECT_EQ(stages[2].name, "backbone.head");
  EXPECT_EQ(stages[3].name, "head");
  // The new head's bias is not grouped with the scripted LayerNorm's: each stage has its rate.
  auto plan = plan_freeze(*m, FreezeOptions().layer_decay(0.5).head_lr_scale(10));
  std::map<std::string, const GroupPlan*> by_name;
  for (const auto& g : plan.groups) {
    EXPECT_TRUE(by_name.emplace(g.name, &g).second) << "two groups named " << g.name;
  }
  ASSERT_TRUE(by_name.count("head/no-decay") && by_name.count("backbone.head/no-decay"));
  EXPECT_EQ(by_name["head/no-decay"]->params, (std::vector<std::string>{"head.bias"}));
  EXPECT_TRUE(by_name["head/no-decay"]->head);
  EXPECT_DOUBLE_EQ(by_name["head/no-decay"]->lr_scale, 10);
  EXPECT_FALSE(by_name["backbone.head/no-decay"]->head);
  EXPECT_DOUBLE_EQ(by_name["backbone.head/no-decay"]->lr_scale, 0.5);
  EXPECT_EQ(by_name["backbone.head/no-decay"]->params.size(), 2u);  // the LayerNorm's weight, bias
  // The weightless BatchNorm follows its stage: training with the whole model, pinned when its
  // stage is frozen.
  const std::string bn = "ts__block__bn";
  ASSERT_EQ(m->batch_norm_layers(), (std::vector<std::string>{bn}));
  EXPECT_TRUE(apply_freeze(*m, FreezeOptions()).bn_eval.empty());
  m->train();
  EXPECT_TRUE(m->layer_is_training(bn));
  EXPECT_EQ(apply_freeze(*m, FreezeOptions().trainable_stages(1)).bn_eval,
            (std::vector<std::string>{bn}));
  EXPECT_EQ(apply_freeze(*m, FreezeOptions().trainable_stages(2)).bn_eval.size(), 0u);
  m->train();
  EXPECT_TRUE(m->layer_is_training(bn));
}

}  // namespace
}  // namespace xfer::train
