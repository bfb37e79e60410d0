#include "xfer/models/vit.h"

#include <sys/wait.h>

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
class VitTest : public SeededTest {};

ModelOptions vit_options(Json arch = Json::object()) {
  ModelOptions o;  // 1x28x28, 10 classes
  o.arch_options = std::move(arch);
  return o;
}

TEST_F(VitTest, TimmKeyNamesAndShapes) {
  auto m = create_model("vit", vit_options());  // defaults: patch 7, dim 64, depth 4, heads 4, mlp 2
  auto p = m->named_parameters();
  EXPECT_EQ(p["cls_token"].sizes(), (std::vector<int64_t>{1, 1, 64}));
  EXPECT_EQ(p["pos_embed"].sizes(), (std::vector<int64_t>{1, 17, 64}));  // 1 + (28/7)^2
  EXPECT_EQ(p["patch_embed.proj.weight"].sizes(), (std::vector<int64_t>{64, 1, 7, 7}));
  EXPECT_TRUE(p.contains("patch_embed.proj.bias"));
  EXPECT_EQ(p["blocks.0.attn.qkv.weight"].sizes(), (std::vector<int64_t>{192, 64}));
  EXPECT_EQ(p["blocks.0.attn.qkv.bias"].sizes(), (std::vector<int64_t>{192}));
  EXPECT_EQ(p["blocks.3.attn.proj.weight"].sizes(), (std::vector<int64_t>{64, 64}));
  EXPECT_EQ(p["blocks.3.mlp.fc1.weight"].sizes(), (std::vector<int64_t>{128, 64}));
  EXPECT_EQ(p["blocks.3.mlp.fc2.weight"].sizes(), (std::vector<int64_t>{64, 128}));
  for (const char* k : {"blocks.2.norm1.weight", "blocks.2.norm1.bias", "blocks.2.norm2.weight",
                        "norm.weight", "norm.bias", "head.weight", "head.bias"}) {
    EXPECT_TRUE(p.contains(k)) << k;
  }
  EXPECT_FALSE(p.contains("blocks.4.norm1.weight"));
  // 4 top-level + 12 per block + 2 norm + 2 head; no buffers.
  EXPECT_EQ(p.size(), 4u + 4u * 12u + 2u + 2u);
  EXPECT_EQ(m->named_buffers().size(), 0u);
  EXPECT_EQ(m->head_name(), "head");
  EXPECT_EQ(m->num_features(), 64);
  EXPECT_TRUE(m->is_head_parameter("head.weight"));
  EXPECT_FALSE(m->is_head_parameter("blocks.0.attn.qkv.weight"));

  m->eval();
  torch::NoGradGuard no_grad;
  auto x = torch::rand({3, 1, 28, 28});
  EXPECT_EQ(m->forward(x).sizes(), (std::vector<int64_t>{3, 10}));
  auto f = m->features(x);
  EXPECT_EQ(f.sizes(), (std::vector<int64_t>{3, 64}));  // class token, width dim
  auto* v = dynamic_cast<VitImpl*>(m.get());
  ASSERT_NE(v, nullptr);
  auto tokens = v->forward_tokens(x);
  EXPECT_EQ(tokens.sizes(), (std::vector<int64_t>{3, 17, 64}));
  EXPECT_TENSOR_CLOSE(f, tokens.select(1, 0), 0);
  // Final LayerNorm (weight 1, bias 0 at init): each token has mean 0, variance 1.
  EXPECT_TENSOR_CLOSE(f.mean(1), torch::zeros({3}), 1e-5);
  EXPECT_TENSOR_CLOSE(f.var(1, /*unbiased=*/false), torch::ones({3}), 1e-3);
  EXPECT_EQ(v->num_patches(), 16);
  EXPECT_EQ(v->depth(), 4);
}

TEST_F(VitTest, ArchOptionsAndPatch4) {
  auto m = create_model("vit", vit_options({{"patch_size", 4}, {"dim", 32}, {"depth", 2},
                                            {"heads", 2}, {"mlp_ratio", 3.0}}));
  auto p = m->named_parameters();
  EXPECT_EQ(p["pos_embed"].sizes(), (std::vector<int64_t>{1, 50, 32}));  // 1 + 7 * 7
  EXPECT_EQ(p["blocks.1.mlp.fc1.weight"].sizes(), (std::vector<int64_t>{96, 32}));
  EXPECT_FALSE(p.contains("blocks.2.norm1.weight"));
  m->eval();
  torch::NoGradGuard no_grad;
  EXPECT_EQ(m->features(torch::rand({2, 1, 28, 28})).sizes(), (std::vector<int64_t>{2, 32}));
  EXPECT_NE(model_description("vit").find("patch_size"), std::string::npos);
  // timm sizes the MLP as int(dim * mlp_ratio): 64 x 2.67 = 170.88 gives 170, not 171.
  auto odd = create_model("vit", vit_options({{"patch_size", 4}, {"dim", 64}, {"depth", 1},
                                              {"heads", 2}, {"mlp_ratio", 2.67}}));
  EXPECT_EQ(odd->named_parameters()["blocks.0.mlp.fc1.weight"].sizes(), (std::vector<int64_t>{170, 64}));
}

TEST_F(VitTest, BadOptionsThrow) {
  // 28 is not divisible by 5.
  try {
    create_model("vit", vit_options({{"patch_size", 5}}));
    ADD_FAILURE() << "expected xfer::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("divisible"), std::string::npos) << e.what();
  }
  ModelOptions o = vit_options();
  o.image_size = 30;  // default patch 7 does not divide 30
  EXPECT_THROW(create_model("vit", o), Error);
  EXPECT_THROW(create_model("vit", vit_options({{"dim", 30}, {"heads", 4}})), Error);
  EXPECT_THROW(create_model("vit", vit_options({{"depth", 0}})), Error);
  EXPECT_THROW(create_model("vit", vit_options({{"dropout", 1.0}})), Error);
  EXPECT_THROW(create_model("vit", vit_options({{"patch", 4}})), UsageError);
  // Input of the wrong size is rejected clearly, not by a shape error deep inside.
  auto m = create_model("vit", vit_options());
  EXPECT_THROW(m->forward(torch::rand({1, 1, 32, 32})), Error);
  EXPECT_THROW(m->forward(torch::rand({1, 3, 28, 28})), Error);
}

TEST_F(VitTest, AttentionRowsAreDistributionsAndMixTokens) {
  VitAttention attn(16, 4, 0.0);
  auto x = torch::randn({2, 5, 16});
  auto w = attn->attention_weights(x);
  EXPECT_EQ(w.sizes(), (std::vector<int64_t>{2, 4, 5, 5}));
  EXPECT_TENSOR_CLOSE(w.sum(-1), torch::ones({2, 4, 5}), 1e-5);
  // Attention mixes tokens: changing token 4 changes the output of token 0.
  auto y = attn->forward(x);
  auto x2 = x.clone();
  x2.select(1, 4).add_(1.0);
  auto y2 = attn->forward(x2);
  EXPECT_GT((y.select(1, 0) - y2.select(1, 0)).abs().max().item<double>(), 1e-4);
  // ... and is equivariant to permuting the tokens.
  auto perm = torch::tensor({4, 2, 0, 1, 3});
  EXPECT_TENSOR_CLOSE(attn->forward(x.index_select(1, perm)), y.index_select(1, perm), 1e-5);
}

TEST_F(VitTest, DropoutOnlyInTraining) {
  auto m = create_model("vit", vit_options({{"dropout", 0.3}, {"depth", 1}}));
  auto x = torch::rand({4, 1, 28, 28});
  torch::NoGradGuard no_grad;
  m->eval();
  EXPECT_TENSOR_EQ(m->forward(x), m->forward(x));
  m->train();
  EXPECT_GT((m->forward(x) - m->forward(x)).abs().max().item<double>(), 1e-6);
}

TEST_F(VitTest, LearnsASmallTask) {
  // Class = which half of the image is bright; a few Adam steps must fit it.
  auto m = create_model("vit", vit_options({{"depth", 2}, {"dim", 32}, {"heads", 2}}));
  auto x = torch::rand({64, 1, 28, 28}) * 0.3;
  auto y = torch::randint(0, 2, {64}, torch::kLong);
  for (int64_t i = 0; i < 64; ++i) {
    auto half = y[i].item<int64_t>() == 0 ? x[i].narrow(1, 0, 14) : x[i].narrow(1, 14, 14);
    half.add_(0.7);
  }
  torch::optim::AdamW opt(m->parameters(), torch::optim::AdamWOptions(3e-3));
  m->train();
  double first = 0, last = 0;
  for (int step = 0; step < 30; ++step) {
    opt.zero_grad();
    auto loss = torch::nn::functional::cross_entropy(m->forward(x), y);
    loss.backward();
    opt.step();
    if (step == 0) first = loss.item<double>();
    last = loss.item<double>();
  }
  EXPECT_LT(last, 0.5 * first) << "first " << first << " last " << last;
  m->eval();
  torch::NoGradGuard no_grad;
  auto acc = (m->forward(x).argmax(1) == y).to(torch::kDouble).mean().item<double>();
  EXPECT_GT(acc, 0.9);
}

TEST_F(VitTest, MatchesTimmStyleReference) {
  // tests/python/make_model_golden.py vit: a PyTorch reimplementation of timm's
  // VisionTransformer (same keys and math), 2x32x32 input, patch 8, dim 48,
  // depth 2, 3 heads, mlp_ratio 2, 5 classes, random non-default weights.
  TempDir tmp;
  const std::string log_file = tmp.file("golden.log");
  const std::string cmd = "/usr/bin/python3 '" + xfer::testing::source_dir() +
                          "/tests/python/make_model_golden.py' vit '" +
                          tmp.path() + "' >'" + log_file + "' 2>&1";
  int status = std::system(cmd.c_str());
  std::stringstream log;
  log << std::ifstream(log_file).rdbuf();
  ASSERT_TRUE(status != -1 && WIFEXITED(status)) << log.str();
  int code = WEXITSTATUS(status);
  if (code == 77 || code == 127) GTEST_SKIP() << "/usr/bin/python3 has no torch: " << log.str();
  ASSERT_EQ(code, 0) << log.str();

  ModelOptions o;
  o.in_channels = 2;
  o.image_size = 32;
  o.num_classes = 5;
  o.arch_options = {{"patch_size", 8}, {"dim", 48}, {"depth", 2}, {"heads", 3}, {"mlp_ratio", 2.0}};
  auto m = create_model("vit", o);
  auto report = io::load_state_dict(*m, io::read_safetensors(tmp.file("weights.safetensors")),
                                    /*strict=*/true, "golden");
  EXPECT_TRUE(report.ok()) << report.summary();
  auto io = io::read_safetensors(tmp.file("io.safetensors"));
  m->eval();
  torch::NoGradGuard no_grad;
  auto features = m->features(io.at("input"));
  auto logits = m->forward(io.at("input"));
  double err = (logits - io.at("logits")).abs().max().item<double>();
  std::cout << "[ parity ] vit vs timm-style reference: max abs logits error " << err
            << ", features error " << (features - io.at("features")).abs().max().item<double>()
            << std::endl;
  RecordProperty("max_abs_error", std::to_string(err));
  EXPECT_TENSOR_CLOSE(features, io.at("features"), 1e-4);
  EXPECT_TENSOR_CLOSE(logits, io.at("logits"), 1e-4);
}

}  // namespace
}  // namespace xfer::models
