#include "xfer/models/registry.h"

#include "support/support.h"
#include "xfer/core/error.h"

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
