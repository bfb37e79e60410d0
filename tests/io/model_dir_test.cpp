#include "xfer/io/model_dir.h"

#include <filesystem>
#include <functional>
#include <fstream>
#include <regex>
#include <set>

#include "support/errors.h"
#include "support/support.h"
#include "xfer/core/error.h"
#include "xfer/core/runtime.h"
#include "xfer/core/sha256.h"
#include "xfer/models/registry.h"

namespace fs = std::filesystem;

namespace xfer::io {
namespace {

using xfer::testing::TempDir;

std::set<std::string> list_dir(const std::string& dir) {
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.insert(e.path().filename().string());
  return names;
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no xfer::Error thrown>";
}

struct ArchCase {
  std::string arch;
  int64_t channels, size, classes;
  Json options;
};

std::ostream& operator<<(std::ostream& os, const ArchCase& c) { return os << c.arch; }

ModelConfig config_for(const ArchCase& c) {
  ModelConfig cfg;
  cfg.arch = c.arch;
  cfg.arch_options = c.options;
  cfg.num_classes = c.classes;
  cfg.input_shape = {c.channels, c.size, c.size};
  for (int64_t i = 0; i < c.channels; ++i) {
    cfg.mean.push_back(0.4 + 0.05 * i);
    cfg.std.push_back(0.2 + 0.03 * i);
  }
  for (int64_t i = 0; i < c.classes; ++i) cfg.class_names.push_back("class_" + std::to_string(i));
  return cfg;
}

models::Classifier make_model(const ModelConfig& cfg) {
  models::ModelOptions o;
  o.in_channels = cfg.input_shape[0];
  o.image_size = cfg.input_shape[1];
  o.num_classes = cfg.num_classes;
  o.arch_options = cfg.arch_options;
  auto m = models::create_model(cfg.arch, o);
  m->set_normalization(cfg.mean, cfg.std);
  // A few train-mode passes move BatchNorm running statistics off their defaults,
  // so the buffers must round-trip too for eval logits to match.
  m->train();
  torch::NoGradGuard no_grad;
  for (int i = 0; i < 2; ++i) {
    m->forward(torch::rand({4, cfg.input_shape[0], cfg.input_shape[1], cfg.input_shape[2]}));
  }
  m->eval();
  return m;
}

ModelCard sample_card() {
  ModelCard card;
  card.parent = ModelCard::Parent{std::string(64, 'a'), "/models/parent"};
  card.recipe = Json{{"strategy", "finetune"}, {"epochs", 3}, {"lr", 0.01}, {"seed", 7}};
  card.data = Json{{"spec", "idx:a,b"}, {"count", 100}};
  card.metrics = Json{{"val_accuracy", 0.875}};
  return card;
}

class ModelDirRoundTrip : public testing::SeededTest,
                          public ::testing::WithParamInterface<ArchCase> {};

TEST_P(ModelDirRoundTrip, SameLogitsConfigAndCardAfterReload) {
  TempDir tmp;
  const std::string dir = tmp.file("model");
  ModelConfig cfg = config_for(GetParam());
  auto model = make_model(cfg);
  auto x = torch::rand({5, cfg.input_shape[0], cfg.input_shape[1], cfg.input_shape[2]});
  torch::Tensor before;
  {
    torch::NoGradGuard no_grad;
    before = model->forward(x);
  }
  ModelCard saved = save_model_dir(dir, *model, cfg, sample_card());

  EXPECT_EQ(list_dir(tmp.path()), std::set<std::string>{"model"});
  EXPECT_EQ(list_dir(dir),
            (std::set<std::string>{"card.json", "config.json", "model.safetensors"}));
  const std::string weights = dir + "/model.safetensors";
  EXPECT_EQ(saved.id, sha256_file(weights));
  EXPECT_EQ(saved.xfer_version, version());
  EXPECT_TRUE(std::regex_match(saved.created, std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")))
      << saved.created;

  LoadedModel lm = load_model_dir(dir);
  EXPECT_EQ(lm.path, dir);
  EXPECT_FALSE(lm.model->is_training());
  torch::Tensor after;
  {
    torch::NoGradGuard no_grad;
    after = lm.model->forward(x);
  }
  EXPECT_TENSOR_CLOSE(after, before, 1e-6);

  // Every parameter and buffer round-trips bit for bit.
  TensorFile want = state_dict(*model);
  TensorFile got = state_dict(*lm.model);
  ASSERT_EQ(got.tensors.size(), want.tensors.size());
  for (const auto& [name, t] : want.tensors) EXPECT_TENSOR_EQ(got.at(name), t) << name;

  // config.json
  EXPECT_EQ(lm.config.arch, cfg.arch);
  EXPECT_EQ(lm.config.arch_options, cfg.arch_options);
  EXPECT_EQ(lm.config.num_classes, cfg.num_classes);
  EXPECT_EQ(lm.config.input_shape, cfg.input_shape);
  EXPECT_EQ(lm.config.mean, cfg.mean);
  EXPECT_EQ(lm.config.std, cfg.std);
  EXPECT_EQ(lm.config.class_names, cfg.class_names);
  EXPECT_EQ(lm.model->mean(), cfg.mean);
  EXPECT_EQ(lm.model->std(), cfg.std);
  EXPECT_EQ(lm.model->num_classes(), cfg.num_classes);

  // card.json
  const ModelCard expected = sample_card();
  EXPECT_EQ(lm.card.id, saved.id);
  EXPECT_EQ(lm.card.id, sha256_file(weights));
  ASSERT_TRUE(lm.card.parent.has_value());
  EXPECT_EQ(lm.card.parent->id, expected.parent->id);
  EXPECT_EQ(lm.card.parent->path, expected.parent->path);
  EXPECT_EQ(lm.card.recipe, expected.recipe);
  EXPECT_EQ(lm.card.data, expected.data);
  EXPECT_EQ(lm.card.metrics, expected.metrics);
  EXPECT_EQ(lm.card.xfer_version, version());
  EXPECT_EQ(lm.card.created, saved.created);

  // The weights file records the architecture in its metadata.
  TensorFile file = read_safetensors(weights);
  EXPECT_EQ(file.metadata.at("arch"), cfg.arch);
}

INSTANTIATE_TEST_SUITE_P(
    Archs, ModelDirRoundTrip,
    ::testing::Values(ArchCase{"mlp", 1, 8, 4, Json{{"hidden", {16, 8}}}},
                      ArchCase{"cnn", 3, 12, 5, Json{{"widths", {4, 8}}, {"hidden", 16}}},
                      ArchCase{"resnet", 3, 8, 3, Json{{"widths", {4, 8}}, {"blocks", {1, 1}}}}),
    [](const ::testing::TestParamInfo<ArchCase>& info) { return info.param.arch; });

class ModelDirTest : public testing::SeededTest {
 protected:
  ArchCase mlp_case{"mlp", 1, 6, 3, Json{{"hidden", {8}}}};
  // Saves the mlp case as a model directory; returns its config.json, to edit.
  Json save_mlp(const std::string& dir) {
    ModelConfig cfg = config_for(mlp_case);
    auto m = make_model(cfg);
    save_model_dir(dir, *m, cfg, ModelCard{});
    return read_json(dir + "/config.json");
  }
};

TEST_F(ModelDirTest, CardIdIsSha256OfWeightsAndDiffersAcrossModels) {
  TempDir tmp;
  ModelConfig cfg = config_for(mlp_case);
  auto m1 = make_model(cfg);
  auto m2 = make_model(cfg);
  ModelCard c1 = save_model_dir(tmp.file("a"), *m1, cfg, ModelCard{});
  ModelCard c2 = save_model_dir(tmp.file("b"), *m2, cfg, ModelCard{});
  EXPECT_EQ(c1.id, sha256_hex(read_file(tmp.file("a/model.safetensors"))));
  EXPECT_EQ(c2.id, sha256_hex(read_file(tmp.file("b/model.safetensors"))));
  EXPECT_NE(c1.id, c2.id);
  // No parent recorded -> none read back.
  EXPECT_FALSE(load_model_dir(tmp.file("a")).card.parent.has_value());
  Json card = read_json(tmp.file("a/card.json"));
  EXPECT_TRUE(card["parent"].is_null());
  EXPECT_EQ(card["id"], c1.id);
}

TEST_F(ModelDirTest, KeepsGivenCreatedTimestamp) {
  TempDir tmp;
  ModelConfig cfg = config_for(mlp_case);
  auto m = make_model(cfg);
  ModelCard card;
  card.created = "2020-01-02T03:04:05Z";
  EXPECT_EQ(save_model_dir(tmp.file("m"), *m, cfg, card).created, "2020-01-02T03:04:05Z");
  EXPECT_EQ(load_model_dir(tmp.file("m")).card.created, "2020-01-02T03:04:05Z");
}

TEST_F(ModelDirTest, TamperedWeightsFailTheHashCheck) {
  TempDir tmp;
  const std::string dir = tmp.file("m");
  ModelConfig cfg = config_for(mlp_case);
  auto m = make_model(cfg);
  save_model_dir(dir, *m, cfg, ModelCard{});
  // Change one weight in place: the file still parses and has the same shapes.
  const std::string path = dir + "/model.safetensors";
  TensorFile f = read_safetensors(path);
  std::vector<std::pair<std::string, torch::Tensor>> changed;
  for (auto& [name, t] : f.tensors) {
    auto c = t.clone();
    if (name == "head.bias") c[0] += 1.0;
    changed.emplace_back(name, c);
  }
  f.tensors = changed;
  write_safetensors(path, f);
  std::string msg = error_of([&] { load_model_dir(dir); });
  EXPECT_NE(msg.find("sha256"), std::string::npos) << msg;
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
}

TEST_F(ModelDirTest, FlippedByteFailsTheHashCheck) {
  TempDir tmp;
  const std::string dir = tmp.file("m");
  ModelConfig cfg = config_for(mlp_case);
  auto m = make_model(cfg);
  save_model_dir(dir, *m, cfg, ModelCard{});
  const std::string path = dir + "/model.safetensors";
  std::string bytes = read_file(path);
  bytes.back() ^= 0x01;
  write_file_atomic(path, bytes);
  std::string msg = error_of([&] { load_model_dir(dir); });
  EXPECT_NE(msg.find("sha256"), std::string::npos) << msg;
}

TEST_F(ModelDirTest, MissingFilesThrow) {
  TempDir tmp;
  ModelConfig cfg = config_for(mlp_case);
  auto m = make_model(cfg);
  for (const std::string name : {"config.json", "card.json", "model.safetensors"}) {
    const std::string dir = tmp.file("m_" + name);
    save_model_dir(dir, *m, cfg, ModelCard{});
    fs::remove(dir + "/" + name);
    std::string msg = error_of([&] { load_model_dir(dir); });
    EXPECT_NE(msg.find(name), std::string::npos) << msg;
    EXPECT_NE(msg.find(dir), std::string::npos) << msg;
  }
  std::string msg = error_of([&] { load_model_dir(tmp.file("nowhere")); });
  EXPECT_NE(msg.find(tmp.file("nowhere")), std::string::npos) << msg;
}

TEST_F(ModelDirTest, UnknownArchThrows) {
  TempDir tmp;
  const std::string dir = tmp.file("m");
  Json j = save_mlp(dir);
  j["arch"] = "no_such_arch_xyz";
  write_json(dir + "/config.json", j);
  std::string msg = error_of([&] { load_model_dir(dir); });
  EXPECT_NE(msg.find("no_such_arch_xyz"), std::string::npos) << msg;
}

TEST_F(ModelDirTest, ConfigDescribingAnotherShapeFailsStrictLoad) {
  TempDir tmp;
  const std::string dir = tmp.file("m");
  Json j = save_mlp(dir);
  // Fewer classes than the weights: within their size, refused by the strict load.
  j["num_classes"] = 2;
  j.erase("class_names");
  write_json(dir + "/config.json", j);
  std::string msg = error_of([&] { load_model_dir(dir); });
  EXPECT_NE(msg.find("shape mismatch"), std::string::npos) << msg;
  EXPECT_NE(msg.find("head.weight"), std::string::npos) << msg;
  // (More classes than the weights hold: ConfigLargerThanItsWeightsIsRefusedBeforeBuilding.)
}

// A config.json describing a model far larger than its weights is refused from
// the weights' element count, before the model is built: the mlp below would
// be 2^31 x 784 floats (6.7 TB), and a merely large one would be allocated
// (and initialised) in full before the strict load noticed.
TEST_F(ModelDirTest, ConfigLargerThanItsWeightsIsRefusedBeforeBuilding) {
  TempDir tmp;
  const std::string dir = tmp.file("m");
  Json j = save_mlp(dir);
  j["arch_options"]["hidden"] = {int64_t(1) << 31};
  write_json(dir + "/config.json", j);
  std::string msg = error_of([&] { load_model_dir(dir); });
  EXPECT_NE(msg.find(dir + "/config.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("values but model.safetensors holds"), std::string::npos) << msg;
  // The bound is the exact count: one hidden unit more (40 values) is refused
  // by it, one fewer passes it and is refused by the strict load, naming the tensor.
  auto size = config_model_size(config_for(mlp_case));
  ASSERT_TRUE(size.has_value());
  EXPECT_EQ(size->total, 6 * 6 * 8 + 8 + 8 * 3 + 3);
  j["arch_options"]["hidden"] = {9};
  write_json(dir + "/config.json", j);
  msg = error_of([&] { load_model_dir(dir); });
  EXPECT_NE(msg.find("has 363 values but model.safetensors holds 323"), std::string::npos) << msg;
  j["arch_options"]["hidden"] = {7};
  write_json(dir + "/config.json", j);
  msg = error_of([&] { load_model_dir(dir); });
  EXPECT_NE(msg.find("shape mismatch"), std::string::npos) << msg;
  EXPECT_NE(msg.find("body.1.weight"), std::string::npos) << msg;
}

TEST_F(ModelDirTest, ConfigJsonRoundTripAndValidation) {
  ModelConfig cfg = config_for(ArchCase{"cnn", 3, 12, 2, Json{{"hidden", 4}}});
  ModelConfig back = ModelConfig::from_json(cfg.to_json(), "c");
  EXPECT_EQ(back.arch, cfg.arch);
  EXPECT_EQ(back.arch_options, cfg.arch_options);
  EXPECT_EQ(back.num_classes, cfg.num_classes);
  EXPECT_EQ(back.input_shape, cfg.input_shape);
  EXPECT_EQ(back.mean, cfg.mean);
  EXPECT_EQ(back.std, cfg.std);
  EXPECT_EQ(back.class_names, cfg.class_names);

  auto bad = [&](const std::function<void(Json&)>& edit, const std::string& expect) {
    Json j = cfg.to_json();
    edit(j);
    std::string msg = error_of([&] { ModelConfig::from_json(j, "cfg.json"); });
    EXPECT_NE(msg.find("cfg.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find(expect), std::string::npos) << msg;
  };
  bad([](Json& j) { j.erase("arch"); }, "missing field 'arch'");
  bad([](Json& j) { j["format"] = "xfer-model/2"; }, "is not xfer-model/1");
  bad([](Json& j) { j["format"] = 1; }, "is not xfer-model/1");
  bad([](Json& j) { j["num_classes"] = "two"; }, "'num_classes' has the wrong type");
  bad([](Json& j) { j["num_classes"] = 0; }, "num_classes");
  bad([](Json& j) { j["input_shape"] = {3, 12}; }, "input_shape");
  bad([](Json& j) { j["input_shape"] = {3, 0, 12}; }, "input_shape");
  bad([](Json& j) { j["mean"] = {0.5}; }, "mean and std");
  bad([](Json& j) { j["std"] = {0.2, 0.0, 0.3}; }, "std values must be > 0");
  bad([](Json& j) { j["mean"] = {0.5}; j["std"] = {0.5}; }, "one value per input channel");
  bad([](Json& j) { j["class_names"] = {"a", "b", "c"}; }, "class_names has 3 names");
  bad([](Json& j) { j["arch_options"] = 5; }, "arch_options");
  bad([](Json& j) { j["head"] = "cosine"; }, "head must be an object");
  bad([](Json& j) { j["head"] = {{"kind", "arcface"}}; }, "head.kind must be linear or cosine");
  bad([](Json& j) { j["head"] = {{"kind", "cosine"}, {"scale", 0}}; }, "head.scale");
  bad([](Json& j) { j["head"] = {{"kind", "cosine"}, {"scale", "big"}}; }, "'scale' has the wrong type");
  EXPECT_THROW(ModelConfig::from_json(Json::array(), "x"), Error);
  // The default linear head leaves config.json as it was; a cosine head round-trips.
  EXPECT_FALSE(cfg.to_json().contains("head"));
  cfg.head = models::HeadOptions().kind("cosine").scale(12.5);
  back = ModelConfig::from_json(cfg.to_json(), "c");
  EXPECT_EQ(back.head, cfg.head);
}

TEST_F(ModelDirTest, CosineHeadSurvivesSaveAndLoad) {
  ModelConfig cfg = config_for(ArchCase{"cnn", 1, 12, 3, Json{{"hidden", 8}}});
  cfg.head = models::HeadOptions().kind("cosine").scale(5);
  auto model = build_model(cfg);
  EXPECT_EQ(model->head_options(), cfg.head);
  model->eval();
  TempDir tmp;
  const std::string dir = tmp.file("cos");
  save_model_dir(dir, *model, cfg, ModelCard{});
  auto loaded = load_model_dir(dir);
  EXPECT_EQ(loaded.model->head_options(), cfg.head);
  loaded.model->eval();
  auto x = torch::rand({4, 1, 12, 12});
  torch::NoGradGuard ng;
  EXPECT_TENSOR_CLOSE(loaded.model->forward(x), model->forward(x), 1e-6);
  // The same weights read as a linear head give other logits: the head type is part of the model.
  loaded.model->set_head_options(models::HeadOptions());
  EXPECT_FALSE(torch::allclose(loaded.model->forward(x), model->forward(x), 1e-3, 1e-3));
}

TEST_F(ModelDirTest, CardJsonRoundTripAndValidation) {
  ModelCard card = sample_card();
  card.id = std::string(64, 'f');
  card.xfer_version = "1.2.3";
  card.created = "2021-01-01T00:00:00Z";
  ModelCard back = ModelCard::from_json(card.to_json(), "card");
  EXPECT_EQ(back.id, card.id);
  ASSERT_TRUE(back.parent.has_value());
  EXPECT_EQ(back.parent->id, card.parent->id);
  EXPECT_EQ(back.parent->path, card.parent->path);
  EXPECT_EQ(back.recipe, card.recipe);
  EXPECT_EQ(back.data, card.data);
  EXPECT_EQ(back.metrics, card.metrics);
  EXPECT_EQ(back.xfer_version, "1.2.3");
  EXPECT_EQ(back.created, card.created);

  Json j = card.to_json();
  j["id"] = "abc";
  EXPECT_THROW(ModelCard::from_json(j, "card"), Error);
  j = card.to_json();
  j["format"] = "xfer-card/9";
  xfer::testing::expect_error_naming([&] { ModelCard::from_json(j, "card"); }, "is not xfer-card/1");
  j = card.to_json();
  j["parent"] = Json{{"path", "/x"}};  // parent without id
  EXPECT_THROW(ModelCard::from_json(j, "card"), Error);
  j["parent"] = Json{{"id", std::string(64, 'b')}};  // path optional
  auto c = ModelCard::from_json(j, "card");
  ASSERT_TRUE(c.parent.has_value());
  EXPECT_EQ(c.parent->path, "");
}

TEST_F(ModelDirTest, LoadStateDictFullMatch) {
  ModelConfig cfg = config_for(mlp_case);
  auto src = make_model(cfg);
  auto dst = make_model(cfg);
  LoadReport r = load_state_dict(*dst, state_dict(*src), true, "w");
  EXPECT_TRUE(r.ok());
  EXPECT_EQ(r.summary(), "all keys matched");
  for (const auto& [name, t] : state_dict(*src).tensors) {
    EXPECT_TENSOR_EQ(state_dict(*dst).at(name), t) << name;
  }
}

TEST_F(ModelDirTest, LoadStateDictReportsAndStrictThrows) {
  ModelConfig cfg = config_for(mlp_case);
  auto src = make_model(cfg);
  auto dst = make_model(cfg);
  TensorFile full = state_dict(*src);
  const std::string head_w = src->head_name() + ".weight";
  const std::string head_b = src->head_name() + ".bias";
  ASSERT_TRUE(full.contains(head_w));
  ASSERT_TRUE(full.contains(head_b));
  TensorFile f;
  for (const auto& [name, t] : full.tensors) {
    if (name == head_b) continue;                                                // missing
    if (name == head_w) {
      f.add(name, torch::zeros({t.size(0) + 1, t.size(1)}));                    // shape mismatch
    } else {
      f.add(name, t.clone());
    }
  }
  f.add("bogus.weight", torch::ones({2}));                                      // unexpected
  TensorFile dst_before;
  for (const auto& [name, t] : state_dict(*dst).tensors) dst_before.add(name, t.clone());

  std::string msg = error_of([&] { load_state_dict(*dst, f, true, "weights.safetensors"); });
  EXPECT_NE(msg.find("weights.safetensors"), std::string::npos) << msg;
  EXPECT_NE(msg.find("missing"), std::string::npos) << msg;
  EXPECT_NE(msg.find(head_b), std::string::npos) << msg;
  EXPECT_NE(msg.find("unexpected"), std::string::npos) << msg;
  EXPECT_NE(msg.find("bogus.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("shape mismatch"), std::string::npos) << msg;
  // Strict failure copies nothing.
  for (const auto& [name, t] : dst_before.tensors) {
    EXPECT_TENSOR_EQ(state_dict(*dst).at(name), t) << name;
  }

  LoadReport r = load_state_dict(*dst, f, false, "weights.safetensors");
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.missing, std::vector<std::string>{head_b});
  EXPECT_EQ(r.unexpected, std::vector<std::string>{"bogus.weight"});
  ASSERT_EQ(r.shape_mismatch.size(), 1u);
  EXPECT_EQ(r.shape_mismatch[0].rfind(head_w, 0), 0u) << r.shape_mismatch[0];
  // Non-strict: the matching keys are loaded, the others keep their values.
  TensorFile now = state_dict(*dst);
  for (const auto& [name, t] : full.tensors) {
    if (name == head_w || name == head_b) {
      EXPECT_TENSOR_EQ(now.at(name), dst_before.at(name)) << name;
    } else {
      EXPECT_TENSOR_EQ(now.at(name), t) << name;
    }
  }
}

TEST_F(ModelDirTest, LoadStateDictConvertsDtype) {
  ModelConfig cfg = config_for(mlp_case);
  auto src = make_model(cfg);
  auto dst = make_model(cfg);
  TensorFile f;
  for (const auto& [name, t] : state_dict(*src).tensors) f.add(name, t.to(torch::kFloat64));
  EXPECT_TRUE(load_state_dict(*dst, f, true, "w").ok());
  for (const auto& [name, t] : state_dict(*src).tensors) {
    EXPECT_EQ(state_dict(*dst).at(name).scalar_type(), t.scalar_type());
    EXPECT_TENSOR_EQ(state_dict(*dst).at(name), t) << name;
  }
  // Precision converts, kind does not: integers for a float parameter are refused by name.
  TensorFile ints;
  for (const auto& [name, t] : state_dict(*src).tensors) ints.add(name, t.to(torch::kInt8));
  xfer::testing::expect_error_containing([&] { load_state_dict(*dst, ints, false, "w"); },
                                         {"w: tensor '", "expects"});
}

TEST_F(ModelDirTest, SaveIntoExistingDirNeedsOverwriteAndLeavesNoTemp) {
  TempDir tmp;
  const std::string dir = tmp.file("m");
  ModelConfig cfg = config_for(mlp_case);
  auto m1 = make_model(cfg);
  auto m2 = make_model(cfg);
  ModelCard c1 = save_model_dir(dir, *m1, cfg, ModelCard{});
  std::string msg = error_of([&] { save_model_dir(dir, *m2, cfg, ModelCard{}); });
  EXPECT_NE(msg.find("already exists"), std::string::npos) << msg;
  EXPECT_NE(msg.find(dir), std::string::npos) << msg;
  EXPECT_EQ(list_dir(tmp.path()), std::set<std::string>{"m"});
  EXPECT_EQ(load_model_dir(dir).card.id, c1.id);  // untouched

  ModelCard c2 = save_model_dir(dir, *m2, cfg, ModelCard{}, Overwrite::kYes);
  EXPECT_NE(c2.id, c1.id);
  EXPECT_EQ(list_dir(tmp.path()), std::set<std::string>{"m"});
  EXPECT_EQ(list_dir(dir),
            (std::set<std::string>{"card.json", "config.json", "model.safetensors"}));
  LoadedModel lm = load_model_dir(dir);
  EXPECT_EQ(lm.card.id, c2.id);
  auto x = torch::rand({2, 1, 6, 6});
  torch::NoGradGuard no_grad;
  EXPECT_TENSOR_CLOSE(lm.model->forward(x), m2->forward(x), 1e-6);
}

TEST_F(ModelDirTest, SaveWithClassCountMismatchWritesNothing) {
  TempDir tmp;
  ModelConfig cfg = config_for(mlp_case);
  auto m = make_model(cfg);
  ModelConfig other = cfg;
  other.num_classes = cfg.num_classes + 1;
  other.class_names.clear();
  EXPECT_THROW(save_model_dir(tmp.file("m"), *m, other, ModelCard{}), Error);
  EXPECT_TRUE(list_dir(tmp.path()).empty());
}

TEST_F(ModelDirTest, BuildModelAppliesConfig) {
  ModelConfig cfg = config_for(ArchCase{"resnet", 3, 8, 6, Json{{"widths", {4}}, {"blocks", {1}}}});
  auto m = build_model(cfg);
  EXPECT_EQ(m->num_classes(), 6);
  EXPECT_EQ(m->mean(), cfg.mean);
  EXPECT_EQ(m->std(), cfg.std);
  m->eval();
  torch::NoGradGuard no_grad;
  auto y = m->forward(torch::rand({2, 3, 8, 8}));
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 6}));
}

}  // namespace
}  // namespace xfer::io
