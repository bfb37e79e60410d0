#include "xfer/data/transforms.h"

#include "support/support.h"
#include "xfer/core/error.h"

namespace xfer::data {
namespace {

using xfer::testing::SeededTest;

class TransformsTest : public SeededTest {};

torch::Generator make_gen(uint64_t seed) { return at::detail::createCPUGenerator(seed); }

TEST_F(TransformsTest, DisabledIsIdentity) {
  auto x = torch::rand({4, 3, 8, 8});
  auto gen = make_gen(0);
  AugmentOptions off;
  off.crop_padding = 0;
  off.hflip = false;
  EXPECT_FALSE(off.enabled());
  EXPECT_TENSOR_EQ(augment(x, off, gen), x);
}

TEST_F(TransformsTest, KeepsShapeAndRange) {
  auto x = torch::rand({16, 3, 10, 12});
  AugmentOptions opt;
  opt.crop_padding = 3;
  opt.hflip = true;
  auto gen = make_gen(1);
  auto y = augment(x, opt, gen);
  EXPECT_EQ(y.sizes(), x.sizes());
  EXPECT_GE(y.min().item<float>(), 0.0f);
  EXPECT_LE(y.max().item<float>(), 1.0f);
  EXPECT_FALSE(torch::equal(y, x));
}

TEST_F(TransformsTest, CropIsAShiftWithZeroFill) {
  // Each output sample is its input shifted by at most `pad` pixels, with zeros
  // where the shift uncovers the border.
  const int64_t pad = 2, n = 32, h = 6, w = 7;
  auto x = torch::rand({n, 2, h, w}).add_(0.01);  // strictly positive
  AugmentOptions opt;
  opt.crop_padding = pad;
  auto gen = make_gen(7);
  auto y = augment(x, opt, gen);
  int shifted = 0;
  for (int64_t i = 0; i < n; ++i) {
    bool found = false;
    auto padded = torch::constant_pad_nd(x[i], {pad, pad, pad, pad}, 0);
    for (int64_t dy = 0; dy <= 2 * pad && !found; ++dy) {
      for (int64_t dx = 0; dx <= 2 * pad && !found; ++dx) {
        if (torch::equal(padded.slice(1, dy, dy + h).slice(2, dx, dx + w), y[i])) {
          found = true;
          if (dy != pad || dx != pad) ++shifted;
        }
      }
    }
    EXPECT_TRUE(found) << "sample " << i << " is not a padded crop of its input";
  }
  EXPECT_GT(shifted, n / 2);  // offsets are random, not all centred
}

TEST_F(TransformsTest, FlipOnlyFlipsAboutHalf) {
  const int64_t n = 400;
  auto x = torch::rand({n, 1, 3, 5});
  AugmentOptions opt;
  opt.hflip = true;
  auto gen = make_gen(3);
  auto y = augment(x, opt, gen);
  int64_t flipped = 0;
  for (int64_t i = 0; i < n; ++i) {
    bool same = torch::equal(y[i], x[i]);
    bool flip = torch::equal(y[i], x[i].flip({2}));
    EXPECT_TRUE(same || flip) << "sample " << i;
    flipped += flip;
  }
  EXPECT_GT(flipped, 150);
  EXPECT_LT(flipped, 250);
}

TEST_F(TransformsTest, SeedReproducible) {
  auto x = torch::rand({8, 3, 9, 9});
  AugmentOptions opt;
  opt.crop_padding = 2;
  opt.hflip = true;
  auto g1 = make_gen(42), g2 = make_gen(42), g3 = make_gen(43);
  auto a = augment(x, opt, g1);
  auto b = augment(x, opt, g2);
  auto c = augment(x, opt, g3);
  EXPECT_TENSOR_EQ(a, b);
  EXPECT_FALSE(torch::equal(a, c));
}

TEST_F(TransformsTest, RejectsBadInput) {
  auto gen = make_gen(0);
  AugmentOptions opt;
  opt.hflip = true;
  EXPECT_THROW(augment(torch::rand({3, 8, 8}), opt, gen), Error);
  opt.crop_padding = -1;
  EXPECT_THROW(augment(torch::rand({1, 3, 8, 8}), opt, gen), Error);
}

TEST_F(TransformsTest, Normalize) {
  auto x = torch::rand({2, 3, 4, 4});
  std::vector<double> mean = {0.1, 0.2, 0.3}, std = {0.5, 0.25, 2.0};
  auto y = normalize(x, mean, std);
  for (int64_t c = 0; c < 3; ++c) {
    EXPECT_TENSOR_CLOSE(y.select(1, c), (x.select(1, c) - mean[c]) / std[c], 1e-6);
  }
  EXPECT_THROW(normalize(x, {0.5}, {0.5}), Error);
  EXPECT_THROW(normalize(x, mean, {1.0, 0.0, 1.0}), Error);
}

TEST_F(TransformsTest, ViewWithoutRandomnessIsTheIdentityAndFlipIsAMirror) {
  auto x = torch::rand({6, 2, 9, 9});
  ViewOptions fixed;
  fixed.min_scale = fixed.max_scale = 1.0;
  fixed.max_ratio = 1.0;
  fixed.hflip = false;
  fixed.contrast = fixed.brightness = 0;
  auto gen = make_gen(5);
  EXPECT_TENSOR_CLOSE(random_view(x, fixed, gen), x, 1e-5, 1e-5);
  fixed.hflip = true;
  auto y = random_view(x, fixed, gen);
  int flipped = 0;
  for (int64_t i = 0; i < x.size(0); ++i) {
    const bool same = torch::allclose(y[i], x[i], 1e-5, 1e-5);
    const bool mirror = torch::allclose(y[i], x[i].flip({2}), 1e-5, 1e-5);
    EXPECT_TRUE(same || mirror) << i;
    flipped += mirror && !same;
  }
  EXPECT_GT(flipped, 0);
  EXPECT_LT(flipped, 6);
}

TEST_F(TransformsTest, ViewsStayInRangeDifferPerImageAndRepeatUnderASeed) {
  auto x = torch::rand({32, 1, 14, 14});
  ViewOptions o;
  auto g1 = make_gen(11), g2 = make_gen(11), g3 = make_gen(12);
  auto a = random_view(x, o, g1), b = random_view(x, o, g2), c = random_view(x, o, g3);
  EXPECT_EQ(a.sizes(), x.sizes());
  EXPECT_GE(a.min().item<float>(), 0.0f);
  EXPECT_LE(a.max().item<float>(), 1.0f);
  EXPECT_TENSOR_EQ(a, b);
  EXPECT_FALSE(torch::allclose(a, c));
  // The next draw of the same generator is another view.
  EXPECT_FALSE(torch::allclose(random_view(x, o, g1), a));
  // A crop of at most 30-100% of the area magnifies: the view is not the image.
  EXPECT_GT((a - x).abs().mean().item<float>(), 0.01f);
}

TEST_F(TransformsTest, ViewOptionsAreValidated) {
  auto x = torch::rand({2, 1, 8, 8});
  auto gen = make_gen(0);
  ViewOptions bad;
  bad.min_scale = 0;
  EXPECT_THROW(random_view(x, bad, gen), UsageError);
  bad = ViewOptions();
  bad.min_scale = 0.9;
  bad.max_scale = 0.5;
  EXPECT_THROW(bad.validate(), UsageError);
  bad = ViewOptions();
  bad.max_ratio = 0.5;
  EXPECT_THROW(bad.validate(), UsageError);
  bad = ViewOptions();
  bad.contrast = 1.0;
  EXPECT_THROW(bad.validate(), UsageError);
  EXPECT_THROW(random_view(torch::rand({8, 8}), ViewOptions(), gen), Error);
}

}  // namespace
}  // namespace xfer::data
