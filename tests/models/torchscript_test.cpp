#include "xfer/models/torchscript.h"

#include <fstream>

#include "support/errors.h"
#include "support/support.h"
#include "xfer/core/error.h"
#include "xfer/core/fs.h"
#include "xfer/core/sha256.h"
#include "xfer/io/safetensors.h"

namespace xfer::models {
namespace {

using xfer::testing::TempDir;

class TorchScriptTest : public xfer::testing::SeededTest {
 protected:
  void SetUp() override {
    SeededTest::SetUp();
    if (!xfer::testing::make_torchscript_golden(dir_.path())) GTEST_SKIP() << "python3-torch not available";
    io_ = io::read_safetensors(dir_.file("io.safetensors"));
  }
  TempDir dir_;
  io::TensorFile io_;
};

TEST_F(TorchScriptTest, ClassifierModeMatchesPyTorchLogits) {
  TorchScriptClassifier m(load_torchscript(dir_.file("classifier.pt")), "classifier",
                          std::vector<int64_t>{1, 28, 28}, 0);
  m->eval();
  EXPECT_FALSE(m->has_head());
  EXPECT_EQ(m->num_classes(), 10);
  torch::NoGradGuard ng;
  auto logits = m->forward(io_.at("input"));
  EXPECT_TENSOR_CLOSE(logits, io_.at("logits"), 1e-5);
  std::cout << "torchscript classifier max abs error: "
            << (logits - io_.at("logits")).abs().max().item<double>() << "\n";
}

TEST_F(TorchScriptTest, BackboneModeDetectsWidthAndAddsHead) {
  TorchScriptClassifier m(load_torchscript(dir_.file("backbone.pt")), "backbone",
                          std::vector<int64_t>{1, 28, 28}, 5);
  m->eval();
  EXPECT_TRUE(m->has_head());
  EXPECT_EQ(m->num_features(), 32);
  EXPECT_EQ(m->num_classes(), 5);
  torch::NoGradGuard ng;
  EXPECT_TENSOR_CLOSE(m->forward_features(io_.at("input")), io_.at("features"), 1e-5);
  EXPECT_EQ(m->forward(io_.at("input")).sizes(), (std::vector<int64_t>{3, 5}));
}

TEST_F(TorchScriptTest, ParametersAreAliasedAndTrainable) {
  TorchScriptClassifier m(load_torchscript(dir_.file("classifier.pt")), "classifier",
                          std::vector<int64_t>{1, 28, 28}, 0);
  int64_t scripted = 0;
  for (const auto& p : m->module().parameters()) scripted += p.numel();
  EXPECT_EQ(count_parameters(*m), scripted);
  m->eval();
  auto x = io_.at("input");
  auto before = m->forward(x).detach();
  torch::optim::SGD opt(m->parameters(), torch::optim::SGDOptions(0.1));
  auto loss = torch::nn::functional::cross_entropy(m->forward(x), torch::tensor({1, 2, 3}));
  loss.backward();
  for (const auto& p : m->parameters()) ASSERT_TRUE(p.grad().defined());
  opt.step();
  // The step changed the scripted module itself.
  torch::NoGradGuard ng;
  EXPECT_FALSE(torch::allclose(m->module().forward({x}).toTensor(), before));
}

TEST_F(TorchScriptTest, TrainModeReachesScriptedDropout) {
  TorchScriptClassifier m(load_torchscript(dir_.file("classifier.pt")), "classifier",
                          std::vector<int64_t>{1, 28, 28}, 0);
  torch::NoGradGuard ng;
  auto x = io_.at("input");
  m->train();
  EXPECT_FALSE(torch::allclose(m->forward(x), m->forward(x)));
  m->eval();
  EXPECT_TENSOR_CLOSE(m->forward(x), m->forward(x), 0.0);
}

TEST_F(TorchScriptTest, LoadChecksThePinOnTheBytesItLoads) {
  const std::string path = dir_.file("classifier.pt");
  const std::string digest = sha256_file(path);
  std::string seen;
  auto module = load_torchscript(path, digest, &seen);
  EXPECT_EQ(seen, digest);
  TorchScriptClassifier m(module, "classifier", std::vector<int64_t>{1, 28, 28}, 0);
  m->eval();
  EXPECT_TENSOR_CLOSE(m->forward(io_.at("input")), io_.at("logits"), 1e-5);
  std::string wrong = digest;
  wrong[0] = wrong[0] == '0' ? '1' : '0';
  seen.clear();
  xfer::testing::expect_error_containing([&] { load_torchscript(path, wrong, &seen); },
                                         {"classifier.pt", "differs from the expected"});
  EXPECT_TRUE(seen.empty());  // nothing is reported for a refused file
}

TEST(TorchScriptLoadTest, NonTorchScriptAndTruncatedFilesAreRefused) {
  TempDir dir;
  write_file_atomic(dir.file("junk.pt"), "this is not a zip archive at all");
  try {
    load_torchscript(dir.file("junk.pt"));
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("junk.pt"), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
  }
  EXPECT_THROW(load_torchscript(dir.file("missing.pt")), Error);
  if (!xfer::testing::make_torchscript_golden(dir.path())) GTEST_SKIP() << "python3-torch not available";
  std::string bytes = read_file(dir.file("classifier.pt"));
  write_file_atomic(dir.file("truncated.pt"), bytes.substr(0, bytes.size() / 2));
  EXPECT_THROW(load_torchscript(dir.file("truncated.pt")), Error);
}

}  // namespace
}  // namespace xfer::models
