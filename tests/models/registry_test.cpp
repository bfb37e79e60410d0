#include "xfer/models/registry.h"

#include "support/support.h"
#include "xfer/core/error.h"
#include "xfer/models/mlp.h"

namespace xfer::models {
namespace {

TEST(RegistryTest, BuiltinsAreRegistered) {
  auto names = model_names();
  for (const char* n : {"mlp", "cnn", "resnet"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
    EXPECT_FALSE(model_description(n).empty());
  }
}

TEST(RegistryTest, UnknownArchIsAUsageErrorListingKnownNames) {
  try {
    create_model("transformerx", {});
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUsage);
    EXPECT_NE(std::string(e.what()).find("transformerx"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("cnn"), std::string::npos);
  }
}

TEST(RegistryTest, UnknownArchOptionIsRejected) {
  ModelOptions o;
  o.arch_options = {{"widht", 3}};
  EXPECT_THROW(create_model("cnn", o), UsageError);
  o.arch_options = {{"widths", "wide"}};
  EXPECT_THROW(create_model("cnn", o), Error);
}

TEST(RegistryTest, OptionsAreChecked) {
  ModelOptions o;
  o.num_classes = 0;
  EXPECT_THROW(create_model("mlp", o), Error);
  o.num_classes = 3;
  o.in_channels = 0;
  EXPECT_THROW(create_model("mlp", o), Error);
}

// model_size must count what the factory builds, tensor for tensor: it is the
// bound a model directory's weights are held to before the model is built.
TEST(RegistryTest, ModelSizeCountsTheStateDictOfEveryBuiltin) {
  struct Case {
    std::string arch;
    int64_t channels, size, classes;
    Json options;
  };
  const std::vector<Case> cases = {
      {"mlp", 1, 28, 10, Json::object()},
      {"mlp", 3, 12, 4, {{"hidden", {16, 8, 5}}}},
      {"cnn", 1, 28, 5, Json::object()},
      {"cnn", 3, 13, 7, {{"widths", {4, 6, 8}}, {"convs", 2}, {"hidden", 9}}},
      {"resnet", 1, 28, 5, Json::object()},
      {"resnet", 2, 20, 3, {{"widths", {4, 4, 8, 12}}, {"blocks", {1, 2, 1, 3}}, {"pool_stages", 3}}},
      {"resnet18", 3, 32, 6, Json::object()},
      {"resnet18", 1, 28, 2, {{"small_input", true}}},
      {"resnet34", 3, 32, 3, Json::object()},
      {"resnet50", 2, 32, 11, {{"small_input", true}}},
      {"vit", 1, 28, 5, Json::object()},
      {"vit", 3, 12, 4, {{"patch_size", 3}, {"dim", 12}, {"depth", 2}, {"heads", 3}, {"mlp_ratio", 2.67}}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.arch + " " + c.options.dump());
    ModelOptions o;
    o.in_channels = c.channels;
    o.image_size = c.size;
    o.num_classes = c.classes;
    o.arch_options = c.options;
    auto m = create_model(c.arch, o);
    double total = 0, head = 0;
    for (const auto& item : m->named_parameters(true)) {
      total += static_cast<double>(item.value().numel());
      if (m->is_head_parameter(item.key())) head += static_cast<double>(item.value().numel());
    }
    for (const auto& item : m->named_buffers(true)) total += static_cast<double>(item.value().numel());
    auto size = model_size(c.arch, o);
    ASSERT_TRUE(size.has_value());
    EXPECT_EQ(size->total, total);
    EXPECT_EQ(size->head, head);
  }
}

TEST(RegistryTest, ModelSizeOfAbsurdOptionsNeitherOverflowsNorAllocates) {
  ModelOptions o;
  o.arch_options = {{"hidden", {int64_t(1) << 40, int64_t(1) << 40}}};
  auto size = model_size("mlp", o);
  ASSERT_TRUE(size.has_value());
  EXPECT_GT(size->total, 1e24);  // 2^80 weights in the second layer
  // A trillion blocks are counted at once (closed form), not looped over.
  o.arch_options = {{"widths", {8}}, {"blocks", {int64_t(1) << 40}}};
  size = model_size("resnet", o);
  ASSERT_TRUE(size.has_value());
  EXPECT_GT(size->total, 1e15);
  // A width of 0 or below cannot cancel a huge one in the count: refused first.
  for (const Json& bad : {Json{{"hidden", {int64_t(1) << 34, -(int64_t(1) << 40)}}}, Json{{"hidden", {0}}}}) {
    o.arch_options = bad;
    EXPECT_THROW(model_size("mlp", o), Error) << bad.dump();
  }
  o.arch_options = {{"widths", {32768, 32768, -(int64_t(1) << 40)}}, {"blocks", {1, 1, 1}}};
  EXPECT_THROW(model_size("resnet", o), Error);
  o.arch_options = {{"widths", {8}}, {"blocks", {0}}};
  EXPECT_THROW(model_size("resnet", o), Error);
  o.arch_options = {{"convs", 1000000000000000}};
  EXPECT_THROW(model_size("cnn", o), Error);
  o.arch_options = {{"widths", {4, -4}}};
  EXPECT_THROW(model_size("cnn", o), Error);
  o.arch_options = {{"hidden", "wide"}};
  EXPECT_THROW(model_size("mlp", o), Error);
  EXPECT_THROW(model_size("no-such-arch", o), UsageError);
  register_model("uncounted-mlp", make_mlp, "no size counter");
  EXPECT_FALSE(model_size("uncounted-mlp", ModelOptions{}).has_value());
}

TEST(RegistryTest, CustomFactoryCanBeRegistered) {
  register_model("tiny-mlp", [](const ModelOptions& o) {
    ModelOptions p = o;
    p.arch_options = {{"hidden", {8}}};
    return create_model("mlp", p);
  }, "an 8-unit mlp");
  ModelOptions o;
  o.num_classes = 4;
  auto m = create_model("tiny-mlp", o);
  EXPECT_EQ(m->num_features(), 8);
  EXPECT_EQ(m->num_classes(), 4);
}

}  // namespace
}  // namespace xfer::models
