#include "xfer/eval/predict.h"

#include <filesystem>

#include "support/support.h"
#include "xfer/core/error.h"
#include "xfer/data/image_folder.h"
#include "xfer/models/registry.h"

namespace xfer::eval {
namespace {

using xfer::testing::SeededTest;
using xfer::testing::TempDir;
namespace fs = std::filesystem;

class PredictTest : public SeededTest {
 protected:
  void SetUp() override {
    SeededTest::SetUp();
    models::ModelOptions o;
    o.num_classes = 4;
    o.image_size = 12;
    o.arch_options = {{"widths", {8}}, {"hidden", 16}};
    model_ = models::create_model("cnn", o);
    model_->set_normalization({0.5}, {0.25});
    io::ModelConfig c;
    c.arch = "cnn";
    c.arch_options = o.arch_options;
    c.num_classes = 4;
    c.input_shape = {1, 12, 12};
    c.mean = {0.5};
    c.std = {0.25};
    c.class_names = {"a", "b", "c", "d"};
    io::save_model_dir(dir_.file("model"), *model_, c, {});
    model_->eval();
    images_ = torch::rand({5, 1, 12, 12});
    io::TensorFile in;
    in.add("images", images_);
    io::write_safetensors(dir_.file("in.safetensors"), in);
  }
  TempDir dir_;
  models::Classifier model_;
  torch::Tensor images_;
};

TEST_F(PredictTest, ModelDirectoryOnSafetensorsInput) {
  PredictOptions o;
  o.source.dir = dir_.file("model");
  o.input = dir_.file("in.safetensors");
  o.out = dir_.file("out.safetensors");
  auto r = run_predict(o);
  torch::NoGradGuard ng;
  auto expected = model_->forward(images_);
  auto f = io::read_safetensors(o.out);
  EXPECT_TENSOR_CLOSE(f.at("logits"), expected, 1e-5);
  EXPECT_TENSOR_CLOSE(f.at("probabilities"), torch::softmax(expected, 1), 1e-6);
  EXPECT_TENSOR_EQ(f.at("predictions"), expected.argmax(1));
  EXPECT_TENSOR_CLOSE(f.at("probabilities").sum(1), torch::ones({5}), 1e-5);
  EXPECT_EQ(f.metadata.at("model_id"), r.model_id);
  EXPECT_EQ(Json::parse(f.metadata.at("class_names"))[2], "c");
}

TEST_F(PredictTest, FolderOfPngsInSortedOrder) {
  fs::create_directory(dir_.file("pngs"));
  for (int i = 0; i < 3; ++i) {
    data::write_png(dir_.file("pngs/img" + std::to_string(2 - i) + ".png"), images_[i]);
  }
  PredictOptions o;
  o.source.dir = dir_.file("model");
  o.input = dir_.file("pngs");
  o.out = dir_.file("out.safetensors");
  auto r = run_predict(o);
  ASSERT_EQ(r.files.size(), 3u);
  EXPECT_NE(r.files[0].find("img0.png"), std::string::npos);
  // PNG quantises to 1/255; img0 holds images_[2].
  torch::NoGradGuard ng;
  auto q = (images_.slice(0, 0, 3) * 255).round() / 255;
  auto expected = model_->forward(q.flip(0));
  EXPECT_TENSOR_CLOSE(r.logits, expected, 1e-4);
}

TEST_F(PredictTest, WeightsSourceNeedsNoModelDirectory) {
  io::TensorFile w = io::state_dict(*model_);
  io::write_safetensors(dir_.file("w.safetensors"), w);
  PredictOptions o;
  o.source.weights = dir_.file("w.safetensors");
  o.source.arch = "cnn";
  o.source.arch_options = R"({"widths":[8],"hidden":16})";
  o.source.mean = {0.5};
  o.source.std = {0.25};
  o.input = dir_.file("in.safetensors");
  o.out = dir_.file("out.safetensors");
  auto r = run_predict(o);
  torch::NoGradGuard ng;
  EXPECT_TENSOR_CLOSE(r.logits, model_->forward(images_), 1e-5);
}

TEST_F(PredictTest, BadInputsAreRefusedWithoutOutput) {
  PredictOptions o;
  o.source.dir = dir_.file("model");
  o.out = dir_.file("out.safetensors");
  io::TensorFile bad;
  bad.add("images", images_ * 2);
  io::write_safetensors(dir_.file("range.safetensors"), bad);
  o.input = dir_.file("range.safetensors");
  EXPECT_THROW(run_predict(o), Error);
  io::TensorFile wrong;
  wrong.add("images", torch::rand({2, 1, 10, 10}));
  io::write_safetensors(dir_.file("shape.safetensors"), wrong);
  o.input = dir_.file("shape.safetensors");
  EXPECT_THROW(run_predict(o), Error);
  io::TensorFile none;
  none.add("pixels", images_);
  io::write_safetensors(dir_.file("none.safetensors"), none);
  o.input = dir_.file("none.safetensors");
  EXPECT_THROW(run_predict(o), Error);
  EXPECT_FALSE(fs::exists(o.out));
}

TEST_F(PredictTest, TorchScriptSourceMatchesPyTorch) {
  std::string cmd = "/usr/bin/python3 '" + xfer::testing::source_dir() +
                    "/tests/python/make_torchscript_golden.py' '" + dir_.path() + "' >/dev/null 2>&1";
  if (std::system(cmd.c_str()) != 0) GTEST_SKIP() << "python3-torch not available";
  auto golden = io::read_safetensors(dir_.file("io.safetensors"));
  io::TensorFile in;
  in.add("images", golden.at("input"));
  io::write_safetensors(dir_.file("ts_in.safetensors"), in);
  PredictOptions o;
  o.source.torchscript = dir_.file("classifier.pt");
  o.input = dir_.file("ts_in.safetensors");
  o.out = dir_.file("ts_out.safetensors");
  auto r = run_predict(o);
  EXPECT_TENSOR_CLOSE(r.logits, golden.at("logits"), 1e-5);
}

}  // namespace
}  // namespace xfer::eval
