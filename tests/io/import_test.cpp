#include "xfer/io/import.h"

#include <cctype>

#include "support/errors.h"
#include "support/support.h"
#include "xfer/core/error.h"
#include "xfer/core/fs.h"
#include "xfer/core/sha256.h"
#include "xfer/io/model_dir.h"
#include "xfer/models/registry.h"

namespace xfer::io {
namespace {

using xfer::testing::SeededTest;
using xfer::testing::TempDir;

models::Classifier cnn(int64_t classes, int64_t channels = 1) {
  models::ModelOptions o;
  o.num_classes = classes;
  o.in_channels = channels;
  return models::create_model("cnn", o);
}

class ImportTest : public SeededTest {
 protected:
  std::string save(models::ClassifierImpl& m, const std::string& prefix = "") {
    TensorFile f = state_dict(m);
    for (auto& kv : f.tensors) kv.first = prefix + kv.first;
    std::string path = dir_.file("w" + std::to_string(counter_++) + ".safetensors");
    write_safetensors(path, f);
    return path;
  }
  TempDir dir_;
  int counter_ = 0;
};

TEST_F(ImportTest, StripsDataParallelAndCompilePrefixes) {
  TensorFile f;
  f.add("module._orig_mod.a", torch::zeros({1}));
  f.add("module.b", torch::zeros({1}));
  f.add("c", torch::zeros({1}));
  auto removed = strip_prefixes(f);
  EXPECT_EQ(f.tensors[0].first, "a");
  EXPECT_EQ(f.tensors[1].first, "b");
  EXPECT_EQ(f.tensors[2].first, "c");
  EXPECT_EQ(removed.size(), 2u);
  TensorFile clash;
  clash.add("module.a", torch::zeros({1}));
  clash.add("a", torch::zeros({1}));
  EXPECT_THROW(strip_prefixes(clash), Error);
}

TEST_F(ImportTest, AdaptInputConvPreservesGrayResponses) {
  auto w = torch::randn({8, 3, 3, 3});
  auto gray = torch::rand({2, 1, 10, 10});
  // A gray image replicated to RGB through the RGB weights == gray through the summed weights.
  auto rgb_out = torch::conv2d(gray.repeat({1, 3, 1, 1}), w);
  auto gray_out = torch::conv2d(gray, adapt_input_conv(w, 1));
  EXPECT_TENSOR_CLOSE(rgb_out, gray_out, 1e-5);
  auto w5 = adapt_input_conv(w, 5);
  EXPECT_EQ(w5.sizes(), (std::vector<int64_t>{8, 5, 3, 3}));
  EXPECT_TENSOR_CLOSE(w5.slice(1, 0, 3), w * 0.6, 1e-6);
  EXPECT_TENSOR_CLOSE(w5.slice(1, 3, 5), w.slice(1, 0, 2) * 0.6, 1e-6);
  EXPECT_TENSOR_EQ(adapt_input_conv(w, 3), w);
}

TEST_F(ImportTest, RoundTripWithPrefixesMatchesExactly) {
  auto a = cnn(10);
  auto b = cnn(10);
  auto r = import_weights(*b, save(*a, "module."));
  EXPECT_TRUE(r.load.ok()) << r.summary();
  EXPECT_EQ(r.stripped_prefixes, std::vector<std::string>{"module."});
  a->eval();
  b->eval();
  auto x = torch::rand({2, 1, 28, 28});
  EXPECT_TENSOR_CLOSE(a->forward(x), b->forward(x), 0.0);
}

TEST_F(ImportTest, HeadIsDroppedWhenClassCountDiffers) {
  auto a = cnn(10);
  auto b = cnn(5);
  auto head_before = b->head()->weight.clone();
  auto r = import_weights(*b, save(*a));
  EXPECT_TRUE(r.head_dropped);
  EXPECT_TENSOR_EQ(b->head()->weight, head_before);
  a->eval();
  b->eval();
  auto x = torch::rand({2, 1, 28, 28});
  EXPECT_TENSOR_CLOSE(a->forward_features(x), b->forward_features(x), 0.0);
}

TEST_F(ImportTest, FirstConvIsAdaptedToChannels) {
  auto rgb = cnn(10, 3);
  auto gray = cnn(10, 1);
  auto r = import_weights(*gray, save(*rgb));
  EXPECT_TRUE(r.input_conv_adapted);
  EXPECT_EQ(r.input_conv_key, "stages.0.0.weight");
  EXPECT_TENSOR_CLOSE(gray->named_parameters()["stages.0.0.weight"],
                      rgb->named_parameters()["stages.0.0.weight"].sum(1, true), 1e-6);
}

TEST_F(ImportTest, MismatchesNameTheKeys) {
  auto a = cnn(10);
  TensorFile f = state_dict(*a);
  f.tensors.erase(f.tensors.begin());  // drop one key
  f.add("extra.weight", torch::zeros({2}));
  write_safetensors(dir_.file("bad.safetensors"), f);
  auto b = cnn(10);
  try {
    import_weights(*b, dir_.file("bad.safetensors"));
    FAIL() << "no exception";
  } catch (const Error& e) {
    std::string w = e.what();
    EXPECT_NE(w.find("bad.safetensors"), std::string::npos) << w;
    EXPECT_NE(w.find("missing"), std::string::npos) << w;
    EXPECT_NE(w.find("extra.weight"), std::string::npos) << w;
  }
  auto r = import_weights(*b, dir_.file("bad.safetensors"), ImportOptions().strict(false));
  EXPECT_EQ(r.load.missing.size(), 1u);
  EXPECT_EQ(r.load.unexpected, std::vector<std::string>{"extra.weight"});
}

TEST_F(ImportTest, ShapeMismatchIsReported) {
  models::ModelOptions o;
  o.num_classes = 10;
  o.arch_options = {{"hidden", 64}};
  auto narrow = models::create_model("cnn", o);
  auto wide = cnn(10);
  try {
    import_weights(*wide, save(*narrow));
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("shape mismatch"), std::string::npos) << e.what();
  }
}

TEST_F(ImportTest, WrongDtypeForAParameterIsRefused) {
  auto a = cnn(10);
  TensorFile f = state_dict(*a);
  for (auto& kv : f.tensors) {
    if (kv.first == "neck.1.weight") kv.second = kv.second.to(torch::kLong);
  }
  write_safetensors(dir_.file("dtype.safetensors"), f);
  try {
    import_weights(*cnn(10), dir_.file("dtype.safetensors"));
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("neck.1.weight"), std::string::npos) << e.what();
  }
  // Half precision converts.
  for (auto& kv : f.tensors) {
    if (kv.second.is_floating_point() || kv.first == "neck.1.weight") {
      kv.second = kv.second.to(torch::kHalf);
    }
  }
  write_safetensors(dir_.file("half.safetensors"), f);
  EXPECT_NO_THROW(import_weights(*cnn(10), dir_.file("half.safetensors")));
}

TEST_F(ImportTest, Sha256IsChecked) {
  auto a = cnn(10);
  auto path = save(*a);
  EXPECT_NO_THROW(import_weights(*cnn(10), path, ImportOptions().expected_sha256(sha256_file(path))));
  try {
    import_weights(*cnn(10), path, ImportOptions().expected_sha256(std::string(64, '0')));
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sha256"), std::string::npos);
  }
}

// Zero-sized tensors are valid safetensors; they must not divide by zero or size the model.
TEST_F(ImportTest, EmptyAndOversizedHeaderTensorsAreRefused) {
  EXPECT_THROW(adapt_input_conv(torch::empty({8, 0, 3, 3}), 3), Error);
  EXPECT_THROW(adapt_input_conv(torch::empty({8, 0, 3, 3}), 1), Error);
  auto a = cnn(7);
  for (const std::vector<int64_t>& shape :
       {std::vector<int64_t>{int64_t(1) << 40, 0}, std::vector<int64_t>{7, 0}}) {
    TensorFile f = state_dict(*a);
    for (auto& kv : f.tensors) {
      if (kv.first == a->head_name() + ".weight") kv.second = torch::empty(shape);
    }
    const std::string path = dir_.file("head" + std::to_string(shape[0]) + ".safetensors");
    write_safetensors(path, f);
    ModelSource s;
    s.weights = path;
    s.arch = "cnn";
    s.input_shape = {1, 28, 28};
    xfer::testing::expect_error_naming([&] { load_model_source(s); }, "has shape");
  }
}

TEST_F(ImportTest, ModelSourceFromWeightsTakesClassCountFromHead) {
  auto a = cnn(7);
  ModelSource s;
  s.weights = save(*a);
  s.arch = "cnn";
  s.input_shape = {1, 28, 28};
  auto lm = load_model_source(s);
  EXPECT_EQ(lm.config.num_classes, 7);
  EXPECT_EQ(lm.card.id, sha256_file(s.weights));
  a->eval();
  auto x = torch::rand({2, 1, 28, 28});
  EXPECT_TENSOR_CLOSE(lm.model->forward(x), a->forward(x), 0.0);
}

// --arch-options that describe a backbone with more values than the file has
// bytes are refused before anything is built (a cnn with a 2^33-unit neck
// would otherwise be allocated to learn that it does not fit); a pinned file
// is checked against its pin first.
TEST_F(ImportTest, ArchOptionsLargerThanTheFileAreRefusedBeforeBuilding) {
  auto a = cnn(7);
  ModelSource s;
  s.weights = save(*a);
  s.arch = "cnn";
  s.input_shape = {1, 28, 28};
  s.arch_options = R"({"hidden": 8589934592})";
  xfer::testing::expect_error_containing([&] { load_model_source(s); },
                                         {s.weights, "weights do not match the model",
                                          "values before its head, more than the file holds"});
  s.replace_head = true;
  xfer::testing::expect_error_naming([&] { load_model_source(s); }, "more than the file holds");
  s.weights_sha256 = std::string(64, 'a');
  xfer::testing::expect_error_naming([&] { load_model_source(s); }, "differs from the expected");
  // Slightly wider than the file's model still fits the byte bound; the strict
  // load then names the tensor.
  s.weights_sha256.clear();
  s.replace_head = false;
  s.arch_options = R"({"hidden": 129})";
  xfer::testing::expect_error_naming([&] { load_model_source(s); }, "shape mismatch");
}

// finetune --head new: the file's head is not loaded even when its width differs
// (a resnet read with pool_stages 2 has wider features than the file's head).
TEST_F(ImportTest, ReplaceHeadLoadsABackboneUnderAWiderHead) {
  models::ModelOptions o;
  o.num_classes = 128;
  o.arch_options = {{"widths", {4, 8, 16}}};
  auto a = models::create_model("resnet", o);
  ModelSource s;
  s.weights = save(*a);
  s.arch = "resnet";
  s.arch_options = R"({"widths": [4, 8, 16], "pool_stages": 2})";
  s.input_shape = {1, 28, 28};
  // Without replace_head the shapes disagree: refused, naming the head.
  try {
    load_model_source(s);
    ADD_FAILURE() << "loaded a head of the wrong width";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("fc.weight"), std::string::npos) << e.what();
  }
  s.replace_head = true;
  ImportReport report;
  auto lm = load_model_source(s, &report);
  EXPECT_TRUE(report.head_dropped);
  EXPECT_EQ(lm.model->num_features(), 24);
  a->eval();
  lm.model->eval();
  auto x = torch::rand({2, 1, 28, 28});
  auto last = a->features(x);
  EXPECT_TENSOR_CLOSE(lm.model->features(x).slice(1, 8, 24), last / last.norm(2, 1, true), 1e-5);
  // A backbone-only file (no head at all) loads too.
  TensorFile f = state_dict(*a);
  TensorFile body;
  for (auto& kv : f.tensors) {
    if (kv.first.rfind("fc.", 0) != 0) body.add(kv.first, kv.second);
  }
  s.weights = dir_.file("body.safetensors");
  write_safetensors(s.weights, body);
  EXPECT_EQ(load_model_source(s).model->num_features(), 24);
}

TEST_F(ImportTest, ModelSourceValidation) {
  ModelSource s;
  EXPECT_THROW(s.validate(), UsageError);
  s.dir = "a";
  s.weights = "b";
  EXPECT_THROW(s.validate(), UsageError);
  s.dir.clear();
  s.input_shape = {1, 28, 28};
  EXPECT_THROW(s.validate(), UsageError);  // --weights needs --arch
  s.arch = "cnn";
  EXPECT_NO_THROW(s.validate());
  s.mean = {0.5, 0.5};
  s.std = {0.2, 0.2};
  EXPECT_THROW(s.validate(), UsageError);  // one value per channel
}

// --weights-sha256 pins a model directory too (by its id, the sha256 of its
// weights), in either case; anything but 64 hex digits is refused.
TEST_F(ImportTest, Sha256PinsAModelDirectoryInEitherCase) {
  auto m = cnn(3);
  ModelConfig c;
  c.arch = "cnn";
  c.num_classes = 3;
  c.input_shape = {1, 28, 28};
  const std::string dir = dir_.file("model");
  const auto card = save_model_dir(dir, *m, c, {});
  ModelSource s;
  s.dir = dir;
  s.weights_sha256 = card.id;
  EXPECT_EQ(load_model_source(s).card.id, card.id);
  for (auto& ch : s.weights_sha256) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  EXPECT_EQ(load_model_source(s).card.id, card.id);
  s.weights_sha256 = std::string(64, 'a');
  xfer::testing::expect_error_naming([&] { load_model_source(s); }, "differs from the expected aaaa");
  for (const std::string bad : {std::string("abc"), std::string(63, 'a') + "g", std::string(65, 'a')}) {
    s.weights_sha256 = bad;
    EXPECT_THROW(s.validate(), UsageError) << bad;
  }
}

// The pin is checked on the bytes before they are parsed as an archive (and
// before the module runs): bytes that are no archive at all fail on the hash.
TEST_F(ImportTest, TorchScriptIsPinnedBeforeItIsLoaded) {
  write_file_atomic(dir_.file("x.pt"), "not an archive");
  ModelSource s;
  s.torchscript = dir_.file("x.pt");
  s.input_shape = {1, 28, 28};
  s.weights_sha256 = std::string(64, 'a');
  xfer::testing::expect_error_containing([&] { load_model_source(s); },
                                         {dir_.file("x.pt"), "differs from the expected"});
  s.weights_sha256 = sha256_hex(std::string("not an archive"));
  xfer::testing::expect_error_containing([&] { load_model_source(s); },
                                         {dir_.file("x.pt"), "not a readable TorchScript archive"});
}

}  // namespace
}  // namespace xfer::io
