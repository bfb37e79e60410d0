#include "xfer/data/info.h"

#include "support/support.h"
#include "xfer/data/spec.h"

namespace xfer::data {
namespace {

TEST(DataInfoTest, DescribesCountsShapeRangeAndHash) {
  xfer::testing::TempDir tmp;
  auto ds = load(xfer::testing::write_synthetic_idx(tmp.path(), 30, 3, 8, 8, 1));
  auto j = describe(ds);
  EXPECT_EQ(j["samples"], 30);
  EXPECT_EQ(j["shape"], Json::array({1, 8, 8}));
  ASSERT_EQ(j["classes"].size(), 3u);
  for (const auto& c : j["classes"]) EXPECT_EQ(c["count"], 10);
  auto fl = ds.float_images();
  EXPECT_NEAR(j["value_range"][0].get<double>(), fl.min().item<double>(), 1e-6);
  EXPECT_NEAR(j["value_range"][1].get<double>(), fl.max().item<double>(), 1e-6);
  EXPECT_NEAR(j["mean"][0].get<double>(), fl.mean().item<double>(), 1e-5);
  EXPECT_EQ(j["sha256"], ds.content_hash());
  auto text = describe_text(j);
  EXPECT_NE(text.find("samples:  30"), std::string::npos) << text;
  EXPECT_NE(text.find("1x8x8"), std::string::npos) << text;
}

TEST(DataInfoTest, FashionMnistSubsetKeepsOriginalNames) {
  if (!xfer::testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist not installed";
  auto j = describe(load("fashion-mnist:train:classes=5-9:shots=10:seed=3"));
  EXPECT_EQ(j["samples"], 50);
  std::vector<std::string> names = {"Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};
  for (int c = 0; c < 5; ++c) {
    EXPECT_EQ(j["classes"][c]["label"], c);
    EXPECT_EQ(j["classes"][c]["name"], names[c]);
    EXPECT_EQ(j["classes"][c]["count"], 10);
  }
}

}  // namespace
}  // namespace xfer::data
