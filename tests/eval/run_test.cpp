#include "xfer/eval/run.h"

#include <filesystem>

#include "support/errors.h"
#include "support/support.h"
#include "xfer/core/error.h"
#include "xfer/data/spec.h"
#include "xfer/models/registry.h"

namespace xfer::eval {
namespace {

using xfer::testing::SeededTest;
using xfer::testing::TempDir;

class EvalRunTest : public SeededTest {
 protected:
  void SetUp() override {
    SeededTest::SetUp();
    spec_ = xfer::testing::write_synthetic_idx(dir_.path(), 40, 4, 12, 12, 9);
    models::ModelOptions o;
    o.num_classes = 4;
    o.image_size = 12;
    o.arch_options = {{"hidden", {16}}};
    model_ = models::create_model("mlp", o);
    io::ModelConfig c;
    c.arch = "mlp";
    c.arch_options = o.arch_options;
    c.num_classes = 4;
    c.input_shape = {1, 12, 12};
    io::save_model_dir(dir_.file("model"), *model_, c, {});
  }
  TempDir dir_;
  std::string spec_;
  models::Classifier model_;
};

TEST_F(EvalRunTest, ModelDirectoryWithJson) {
  EvalRunOptions o;
  o.source.dir = dir_.file("model");
  o.data = spec_;
  o.json = dir_.file("eval.json");
  auto r = run_eval(o);
  auto direct = evaluate(*model_, data::load(spec_));
  EXPECT_EQ(r.evaluation.correct, direct.correct);
  auto j = read_json(o.json);
  EXPECT_EQ(j["evaluation"]["correct"], direct.correct);
  EXPECT_EQ(j["model"]["id"], read_json(dir_.file("model/card.json"))["id"]);
  EXPECT_NE(evaluation_text(r.evaluation).find("confusion"), std::string::npos);
}

TEST_F(EvalRunTest, ImportedWeightsTakeTheShapeFromTheData) {
  EvalRunOptions o;
  o.source.weights = dir_.file("model/model.safetensors");
  o.source.arch = "mlp";
  o.source.arch_options = R"({"hidden":[16]})";
  o.data = spec_;
  auto r = run_eval(o);
  EXPECT_EQ(r.evaluation.correct, evaluate(*model_, data::load(spec_)).correct);
}

TEST_F(EvalRunTest, MismatchedDataIsRefused) {
  EvalRunOptions o;
  o.source.dir = dir_.file("model");
  std::filesystem::create_directory(dir_.file("small"));
  o.data = xfer::testing::write_synthetic_idx(dir_.file("small"), 20, 2, 10, 10, 1);
  o.json = dir_.file("eval.json");
  EXPECT_THROW(run_eval(o), Error);  // 10x10 images for a 12x12 model
  EXPECT_FALSE(std::filesystem::exists(o.json));
  o.source.dir.clear();
  EXPECT_THROW(run_eval(o), UsageError);  // no model source
}

// A model of other classes (a base of classes 0-4 on data of 5-9, relabelled
// 0-4) is refused naming both lists; imported weights, which do not know
// their classes' names, and models without names are taken as they are.
TEST_F(EvalRunTest, AModelOfOtherClassesIsRefused) {
  io::ModelConfig c;
  c.arch = "mlp";
  c.arch_options = {{"hidden", {16}}};
  c.num_classes = 4;
  c.input_shape = {1, 12, 12};
  c.class_names = {"w", "x", "y", "z"};
  io::save_model_dir(dir_.file("named"), *model_, c, {});
  EvalRunOptions o;
  o.source.dir = dir_.file("named");
  o.data = spec_;  // classes named 0-3
  xfer::testing::expect_error_containing([&] { run_eval(o); },
                                         {dir_.file("named"), "[w, x, y, z]", "mean nothing"});
  o.source.dir.clear();
  o.source.weights = dir_.file("named/model.safetensors");
  o.source.arch = "mlp";
  o.source.arch_options = R"({"hidden":[16]})";
  EXPECT_EQ(run_eval(o).evaluation.correct, evaluate(*model_, data::load(spec_)).correct);
}

}  // namespace
}  // namespace xfer::eval
