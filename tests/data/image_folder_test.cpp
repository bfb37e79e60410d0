#include "xfer/data/image_folder.h"

#include <filesystem>
#include <map>

#include "support/errors.h"
#include "support/support.h"
#include "xfer/core/error.h"
#include "xfer/core/fs.h"

namespace fs = std::filesystem;

namespace xfer::data {
namespace {

using xfer::testing::SeededTest;
using xfer::testing::TempDir;
using xfer::testing::expect_error_naming;


torch::Tensor random_image(int64_t c, int64_t h, int64_t w) {
  return torch::randint(0, 256, {c, h, w}, torch::kLong).to(torch::kUInt8);
}

class ImageFolderTest : public SeededTest {};

TEST_F(ImageFolderTest, PngRoundTripGrayAndRgb) {
  TempDir dir;
  auto gray = random_image(1, 5, 7);
  auto rgb = random_image(3, 6, 4);
  write_png(dir.file("g.png"), gray);
  write_png(dir.file("c.png"), rgb);
  EXPECT_TENSOR_EQ(read_image(dir.file("g.png")), gray);
  EXPECT_TENSOR_EQ(read_image(dir.file("c.png")), rgb);
  // Forced channel counts: gray replicated to RGB.
  EXPECT_TENSOR_EQ(read_image(dir.file("g.png"), 3), gray.expand({3, 5, 7}));
  EXPECT_EQ(read_image(dir.file("c.png"), 1).sizes(), (std::vector<int64_t>{1, 6, 4}));
}

TEST_F(ImageFolderTest, WritePngFromFloat) {
  TempDir dir;
  auto u8 = random_image(3, 4, 4);
  write_png(dir.file("f.png"), u8.to(torch::kFloat) / 255.0);
  EXPECT_TENSOR_EQ(read_image(dir.file("f.png")), u8);
  EXPECT_THROW(write_png(dir.file("bad.png"), torch::zeros({2, 4, 4})), Error);
  EXPECT_FALSE(fs::exists(dir.file("bad.png")));
}

TEST_F(ImageFolderTest, FolderRoundTrip) {
  TempDir dir;
  // Classes sorted by name, files sorted by name; extensions case-insensitive;
  // other files ignored.
  std::vector<std::pair<std::string, std::string>> files = {
      {"cat", "b.png"}, {"cat", "a.PNG"}, {"ant", "z.png"}, {"bee", "x.png"}, {"bee", "y.png"}};
  std::map<std::string, torch::Tensor> written;
  for (const auto& [cls, name] : files) {
    fs::create_directories(dir.file(cls));
    auto img = random_image(1, 8, 6);
    write_png(dir.file(cls + "/" + name), img);
    written[cls + "/" + name] = img;
  }
  write_file_atomic(dir.file("cat/notes.txt"), "not an image");
  auto ds = read_image_folder(dir.path());
  ds.validate();
  EXPECT_EQ(ds.class_names, (std::vector<std::string>{"ant", "bee", "cat"}));
  ASSERT_EQ(ds.size(), 5);
  EXPECT_EQ(ds.channels(), 1);
  EXPECT_EQ(ds.height(), 8);
  EXPECT_EQ(ds.width(), 6);
  std::vector<std::string> order = {"ant/z.png", "bee/x.png", "bee/y.png", "cat/a.PNG",
                                    "cat/b.png"};
  std::vector<int64_t> labels = {0, 1, 1, 2, 2};
  for (int64_t i = 0; i < 5; ++i) {
    EXPECT_TENSOR_EQ(ds.images[i], written[order[i]]);
    EXPECT_EQ(ds.labels[i].item<int64_t>(), labels[i]);
  }
  EXPECT_TENSOR_EQ(ds.index, torch::arange(5, torch::kLong));
}

TEST_F(ImageFolderTest, GrayWhenAllGrayElseRgb) {
  TempDir dir;
  fs::create_directories(dir.file("a"));
  fs::create_directories(dir.file("b"));
  auto g = random_image(1, 4, 4);
  auto c = random_image(3, 4, 4);
  write_png(dir.file("a/1.png"), g);
  write_png(dir.file("b/1.png"), g);
  EXPECT_EQ(read_image_folder(dir.path()).channels(), 1);
  write_png(dir.file("b/2.png"), c);
  auto ds = read_image_folder(dir.path());
  EXPECT_EQ(ds.channels(), 3);
  EXPECT_TENSOR_EQ(ds.images[0], g.expand({3, 4, 4}));
  EXPECT_TENSOR_EQ(ds.images[2], c);
  ImageFolderOptions opt;
  opt.channels = 1;
  EXPECT_EQ(read_image_folder(dir.path(), opt).channels(), 1);
}

TEST_F(ImageFolderTest, MismatchedSizesNeedResize) {
  TempDir dir;
  fs::create_directories(dir.file("a"));
  write_png(dir.file("a/1.png"), random_image(1, 4, 4));
  write_png(dir.file("a/2.png"), random_image(1, 6, 5));
  expect_error_naming([&] { read_image_folder(dir.path()); }, dir.file("a/2.png"));
  ImageFolderOptions opt;
  opt.image_size = 9;
  auto ds = read_image_folder(dir.path(), opt);
  EXPECT_EQ(ds.images.sizes(), (std::vector<int64_t>{2, 1, 9, 9}));
}

TEST_F(ImageFolderTest, ResizeIsBilinearAndKeepsConstants) {
  auto flat = torch::full({3, 5, 5}, 77, torch::kUInt8);
  EXPECT_TENSOR_EQ(resize_image(flat, 11, 7), torch::full({3, 11, 7}, 77, torch::kUInt8));
  // A horizontal ramp stays monotone and within its range when enlarged.
  auto ramp = torch::arange(0, 250, 50, torch::kLong).to(torch::kUInt8).view({1, 1, 5}).expand(
      {1, 2, 5});
  auto big = resize_image(ramp.contiguous(), 2, 10).to(torch::kLong);
  auto row = big[0][0];
  EXPECT_TRUE((row.slice(0, 1) >= row.slice(0, 0, -1)).all().item<bool>()) << row;
  EXPECT_EQ(row[0].item<int64_t>(), 0);
  EXPECT_EQ(row[-1].item<int64_t>(), 200);
  EXPECT_TENSOR_EQ(resize_image(flat, 5, 5), flat);
}

TEST_F(ImageFolderTest, MissingOrEmptyRoot) {
  TempDir dir;
  expect_error_naming([&] { read_image_folder(dir.file("nope")); }, dir.file("nope"));
  expect_error_naming([&] { read_image_folder(dir.path()); }, dir.path());
}

TEST_F(ImageFolderTest, ClassFolderWithoutImages) {
  TempDir dir;
  fs::create_directories(dir.file("a"));
  fs::create_directories(dir.file("b"));
  write_png(dir.file("a/1.png"), random_image(1, 4, 4));
  write_file_atomic(dir.file("b/readme.txt"), "x");
  expect_error_naming([&] { read_image_folder(dir.path()); }, dir.file("b"));
}

// A class folder named in Latin-1 (not UTF-8) cannot go into config.json:
// refused when the data is read, naming the folder, not after training.
TEST_F(ImageFolderTest, ClassFolderNameThatIsNotUtf8) {
  TempDir dir;
  fs::create_directories(dir.file("caf\xe9"));
  write_png(dir.file("caf\xe9/1.png"), random_image(1, 4, 4));
  expect_error_naming([&] { read_image_folder(dir.path()); }, "not valid UTF-8");
  fs::rename(dir.file("caf\xe9"), dir.file("caf\xc3\xa9"));
  EXPECT_EQ(read_image_folder(dir.path()).class_names, (std::vector<std::string>{"caf\xc3\xa9"}));
}

TEST_F(ImageFolderTest, UndecodableImage) {
  TempDir dir;
  fs::create_directories(dir.file("a"));
  write_png(dir.file("a/1.png"), random_image(1, 4, 4));
  write_file_atomic(dir.file("a/2.jpg"), "this is not a jpeg");
  expect_error_naming([&] { read_image_folder(dir.path()); }, dir.file("a/2.jpg"));
  // A truncated PNG too.
  auto png = read_file(dir.file("a/1.png"));
  write_file_atomic(dir.file("cut.png"), png.substr(0, png.size() / 2));
  expect_error_naming([&] { read_image(dir.file("cut.png")); }, dir.file("cut.png"));
}

}  // namespace
}  // namespace xfer::data
