#include "xfer/data/spec.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>

#include "support/errors.h"
#include "support/support.h"
#include "xfer/core/error.h"
#include "xfer/core/fs.h"
#include "xfer/data/idx.h"
#include "xfer/data/image_folder.h"

namespace fs = std::filesystem;

namespace xfer::data {
namespace {

using xfer::testing::have_fashion_mnist;
using xfer::testing::SeededTest;
using xfer::testing::TempDir;

class SpecTest : public SeededTest {};

/// Expects parse(text) to throw a UsageError whose message names the spec and `part`.
void expect_bad(const std::string& text, const std::string& part) {
  try {
    DataSpec::parse(text);
    ADD_FAILURE() << "expected '" << text << "' to be rejected";
  } catch (const UsageError& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(text), std::string::npos) << msg;
    EXPECT_NE(msg.find(part), std::string::npos) << msg;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "'" << text << "': expected UsageError, got " << e.what();
  }
}

std::vector<int64_t> to_vec(const torch::Tensor& t) {
  auto c = t.to(torch::kLong).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

TEST_F(SpecTest, ParsesFashionMnist) {
  auto s = DataSpec::parse("fashion-mnist");
  EXPECT_EQ(s.kind, DataSpec::Kind::kFashionMnist);
  EXPECT_EQ(s.split, "train");
  EXPECT_TRUE(s.classes.empty());
  EXPECT_FALSE(s.shots.has_value());
  EXPECT_EQ(s.seed, 0u);

  s = DataSpec::parse("fashion-mnist:test:classes=5-9:shots=10:seed=3");
  EXPECT_EQ(s.split, "test");
  EXPECT_EQ(s.classes, (std::vector<int64_t>{5, 6, 7, 8, 9}));
  ASSERT_TRUE(s.shots.has_value());
  EXPECT_EQ(*s.shots, 10);
  EXPECT_EQ(s.seed, 3u);
}

TEST_F(SpecTest, ClassListForms) {
  EXPECT_EQ(DataSpec::parse("fashion-mnist:classes=0,2,4").classes,
            (std::vector<int64_t>{0, 2, 4}));
  EXPECT_EQ(DataSpec::parse("fashion-mnist:classes=1-3,7").classes,
            (std::vector<int64_t>{1, 2, 3, 7}));
  EXPECT_EQ(DataSpec::parse("fashion-mnist:classes=9,0").classes, (std::vector<int64_t>{9, 0}));
  EXPECT_EQ(DataSpec::parse("fashion-mnist:classes=4").classes, (std::vector<int64_t>{4}));
}

TEST_F(SpecTest, ParsesIdxAndFolder) {
  auto s = DataSpec::parse("idx:/d/img.gz,/d/lab.gz:classes=0-1:shots=2");
  EXPECT_EQ(s.kind, DataSpec::Kind::kIdx);
  EXPECT_EQ(s.paths, (std::vector<std::string>{"/d/img.gz", "/d/lab.gz"}));
  EXPECT_EQ(s.classes, (std::vector<int64_t>{0, 1}));
  s = DataSpec::parse("folder:/data/pets:size=64:channels=3:seed=9");
  EXPECT_EQ(s.kind, DataSpec::Kind::kFolder);
  EXPECT_EQ(s.paths, (std::vector<std::string>{"/data/pets"}));
  EXPECT_EQ(s.image_size, 64);
  EXPECT_EQ(s.channels, 3);
  EXPECT_EQ(s.seed, 9u);
}

TEST_F(SpecTest, StrIsCanonicalAndRoundTrips) {
  EXPECT_EQ(DataSpec::parse("fashion-mnist").str(), "fashion-mnist:train");
  EXPECT_EQ(DataSpec::parse("fashion-mnist:seed=3:shots=10:classes=5,6,7,8,9:test").str(),
            "fashion-mnist:test:classes=5-9:shots=10:seed=3");
  EXPECT_EQ(DataSpec::parse("fashion-mnist:classes=0,2,3,4,9").str(),
            "fashion-mnist:train:classes=0,2-4,9");
  for (const std::string text :
       {"fashion-mnist:train", "fashion-mnist:test:classes=5-9:shots=10:seed=3",
        "fashion-mnist:train:classes=9,1-3", "idx:/a/b.gz,/a/c.gz:shots=4:seed=1",
        "folder:/x/y:size=32:channels=1:classes=0-1",
        "fashion-mnist:train:classes=5-9:exclude=100@0-2:shots=50:seed=1000",
        "idx:/a/b.gz,/a/c.gz:exclude=3@0-1,7,18446744073709551614-18446744073709551615"}) {
    auto s = DataSpec::parse(text);
    EXPECT_EQ(s.str(), text);
    auto again = DataSpec::parse(s.str());
    EXPECT_EQ(again.str(), s.str());
    EXPECT_EQ(again.classes, s.classes);
    EXPECT_EQ(again.paths, s.paths);
  }
}

TEST_F(SpecTest, RejectsBadSpecs) {
  expect_bad("", "empty");
  expect_bad("mnist", "mnist");
  expect_bad("fashion-mnist:validation", "validation");
  expect_bad("fashion-mnist:colour=red", "colour=red");
  expect_bad("fashion-mnist:shots=0", "shots=0");
  expect_bad("fashion-mnist:shots=-3", "shots=-3");
  expect_bad("fashion-mnist:shots=ten", "shots=ten");
  expect_bad("fashion-mnist:shots=", "shots=");
  expect_bad("fashion-mnist:seed=1.5", "seed=1.5");
  expect_bad("fashion-mnist:seed=99999999999999999999999", "seed=");
  expect_bad("fashion-mnist:classes=", "classes=");
  expect_bad("fashion-mnist:classes=5-", "classes=5-");
  expect_bad("fashion-mnist:classes=9-5", "classes=9-5");
  expect_bad("fashion-mnist:classes=1,,2", "classes=1,,2");
  expect_bad("fashion-mnist:classes=1,1", "classes=1,1");
  expect_bad("fashion-mnist:classes=a-b", "classes=a-b");
  expect_bad("fashion-mnist:train:test", "test");
  expect_bad("fashion-mnist:shots=1:shots=2", "shots=2");
  expect_bad("fashion-mnist:size=32", "size=32");
  expect_bad("fashion-mnist::train", "stray");
  expect_bad("idx:only-one.gz", "only-one.gz");
  expect_bad("idx:", "idx");
  expect_bad("idx:a,b:train", "train");
  expect_bad("folder:", "folder");
  expect_bad("folder:/x:channels=2", "channels=2");
  expect_bad("folder:/x:size=0", "size=0");
  expect_bad("folder:/x:size=27000", "size=27000");  // past --image-size's cap (the resizer's ints)
  expect_bad("fashion-mnist:exclude=100", "exclude=100");
  expect_bad("fashion-mnist:exclude=0@1", "exclude=0@1");
  expect_bad("fashion-mnist:exclude=@1", "exclude=@1");
  expect_bad("fashion-mnist:exclude=5@", "exclude=5@");
  expect_bad("fashion-mnist:exclude=5@1,1", "exclude=5@1,1");
  expect_bad("fashion-mnist:exclude=5@2-1", "exclude=5@2-1");
  // Each seed costs a shuffle of every class: at most 256, checked before a range is expanded.
  expect_bad("fashion-mnist:exclude=5@0-256", "exclude=5@0-256");
  expect_bad("fashion-mnist:exclude=5@0-18446744073709551615", "more than 256");
  expect_bad("fashion-mnist:exclude=5@0:exclude=5@1", "given twice");
}

TEST_F(SpecTest, ExcludeParsesSeedListsAndAppliesBeforeShots) {
  auto s = DataSpec::parse("fashion-mnist:exclude=100@0-2,9");
  ASSERT_TRUE(s.exclude_shots.has_value());
  EXPECT_EQ(*s.exclude_shots, 100);
  EXPECT_EQ(s.exclude_seeds, (std::vector<uint64_t>{0, 1, 2, 9}));
  // A set: any order is the same spec.
  EXPECT_EQ(DataSpec::parse("fashion-mnist:exclude=100@9,2,0-1").str(),
            "fashion-mnist:train:exclude=100@0-2,9");
  EXPECT_EQ(DataSpec::parse("fashion-mnist:exclude=1@18446744073709551615,0").str(),
            "fashion-mnist:train:exclude=1@0,18446744073709551615");
  EXPECT_EQ(DataSpec::parse("fashion-mnist:exclude=1@0-255").exclude_seeds.size(), 256u);
  EXPECT_EQ(DataSpec::parse("fashion-mnist:exclude=1@0-255").str(),
            "fashion-mnist:train:exclude=1@0-255");

  TempDir dir;
  const std::string spec =
      xfer::testing::write_synthetic_idx(dir.path(), 60, 3, 8, 8);  // 20 per class
  const auto victims = to_vec(load(spec + ":classes=2,0:shots=5:seed=1").index);
  const auto pool = load(spec + ":classes=2,0:exclude=5@1");
  EXPECT_EQ(pool.size(), 30);
  EXPECT_EQ(pool.class_names, (std::vector<std::string>{"2", "0"}));
  // The attacker's draw: from the pool, never a victim's sample, and the draw
  // is the pool's (classes, then exclude, then shots).
  const auto attacker = load(spec + ":classes=2,0:exclude=5@1:shots=15:seed=1000");
  EXPECT_EQ(attacker.class_counts(), (std::vector<int64_t>{15, 15}));
  for (int64_t i : to_vec(attacker.index)) {
    EXPECT_EQ(std::count(victims.begin(), victims.end(), i), 0) << i;
  }
  EXPECT_TENSOR_EQ(attacker.index, sample_shots(pool, 15, 1000).index);
  // Without the exclusion, the same draw meets the victims' samples.
  const auto plain = to_vec(load(spec + ":classes=2,0:shots=15:seed=1000").index);
  int64_t shared = 0;
  for (int64_t i : plain) shared += std::count(victims.begin(), victims.end(), i);
  EXPECT_GT(shared, 0);
  // More than the pool holds: the class count error, naming the spec.
  try {
    load(spec + ":classes=2,0:exclude=5@1:shots=16");
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("exclude=5@1"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("fewer than the 16 shots"), std::string::npos) << e.what();
  }
  // An exclusion that leaves a class empty is refused, naming exclude= (not shots=).
  xfer::testing::expect_error_containing(
      [&] { load(spec + ":classes=2,0:exclude=20@1:shots=1"); },
      {"exclude=20 would remove every sample of class 0", "it has 20"});
  xfer::testing::expect_error_containing([&] { load(spec + ":exclude=25@1"); },
                                         {"exclude=25", "it has 20"});
}

TEST_F(SpecTest, FashionMnistClassNames) {
  const auto& names = fashion_mnist_classes();
  ASSERT_EQ(names.size(), 10u);
  EXPECT_EQ(names[0], "T-shirt/top");
  EXPECT_EQ(names[5], "Sandal");
  EXPECT_EQ(names[9], "Ankle boot");
}

TEST_F(SpecTest, FashionMnistDirFromEnvironment) {
  const char* old = std::getenv("XFER_FASHION_MNIST_DIR");
  std::string saved = old ? old : "";
  setenv("XFER_FASHION_MNIST_DIR", "/some/where", 1);
  EXPECT_EQ(fashion_mnist_dir(), "/some/where");
  unsetenv("XFER_FASHION_MNIST_DIR");
  EXPECT_EQ(fashion_mnist_dir(), "/usr/share/datasets/fashion-mnist");
  if (old) setenv("XFER_FASHION_MNIST_DIR", saved.c_str(), 1);
}

TEST_F(SpecTest, MissingFashionMnistNamesTheSpec) {
  TempDir dir;
  const char* old = std::getenv("XFER_FASHION_MNIST_DIR");
  std::string saved = old ? old : "";
  setenv("XFER_FASHION_MNIST_DIR", dir.path().c_str(), 1);
  try {
    load("fashion-mnist:test");
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("fashion-mnist:test"), std::string::npos) << msg;
    EXPECT_NE(msg.find(dir.path()), std::string::npos) << msg;
  }
  // With the images there, the error names the labels file that is missing.
  write_file_atomic(dir.file("t10k-images-idx3-ubyte.gz"), "x");
  xfer::testing::expect_error_naming([] { load("fashion-mnist:test"); },
                                     "t10k-labels-idx1-ubyte.gz not found");
  if (old) {
    setenv("XFER_FASHION_MNIST_DIR", saved.c_str(), 1);
  } else {
    unsetenv("XFER_FASHION_MNIST_DIR");
  }
}

TEST_F(SpecTest, ASpecThatIsNotUtf8IsRefused) {
  xfer::testing::expect_error_naming([] { DataSpec::parse("folder:/data/caf\xe9"); },
                                     "not valid UTF-8");
  EXPECT_EQ(DataSpec::parse("folder:/data/caf\xc3\xa9").paths.at(0), "/data/caf\xc3\xa9");
}

TEST_F(SpecTest, LoadsIdxWithClassesAndShots) {
  TempDir dir;
  std::string spec = xfer::testing::write_synthetic_idx(dir.path(), 60, 6, 8, 8);
  auto all = load(spec);
  EXPECT_EQ(all.size(), 60);
  EXPECT_EQ(all.num_classes(), 6);
  EXPECT_EQ(all.source, DataSpec::parse(spec).str());

  auto sub = load(spec + ":classes=4,1:shots=3:seed=5");
  EXPECT_EQ(sub.size(), 6);
  EXPECT_EQ(sub.class_names, (std::vector<std::string>{"4", "1"}));
  EXPECT_EQ(sub.class_counts(), (std::vector<int64_t>{3, 3}));
  auto labels = to_vec(sub.labels), index = to_vec(sub.index);
  for (size_t i = 0; i < labels.size(); ++i) {
    EXPECT_EQ(index[i] % 6, labels[i] == 0 ? 4 : 1) << "index " << index[i];
  }
  // Same seed, same samples; another seed, other samples.
  EXPECT_TENSOR_EQ(load(spec + ":classes=4,1:shots=3:seed=5").index, sub.index);
  EXPECT_FALSE(torch::equal(load(spec + ":classes=4,1:shots=3:seed=6").index, sub.index));

  // A class the data lacks, or more shots than a class has.
  try {
    load(spec + ":classes=2-6");
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("classes=2-6"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("class 6"), std::string::npos) << e.what();
  }
  EXPECT_THROW(load(spec + ":shots=11"), Error);
}

TEST_F(SpecTest, LoadsFolder) {
  TempDir dir;
  for (const char* cls : {"x", "y"}) {
    fs::create_directories(dir.file(cls));
    for (int i = 0; i < 3; ++i) {
      write_png(dir.file(std::string(cls) + "/" + std::to_string(i) + ".png"),
                torch::randint(0, 256, {1, 5, 5}, torch::kLong).to(torch::kUInt8));
    }
  }
  auto ds = load("folder:" + dir.path() + ":size=8:channels=3:shots=2:seed=1");
  EXPECT_EQ(ds.images.sizes(), (std::vector<int64_t>{4, 3, 8, 8}));
  EXPECT_EQ(ds.class_names, (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(ds.class_counts(), (std::vector<int64_t>{2, 2}));
}

TEST_F(SpecTest, RealFashionMnistSubset) {
  if (!have_fashion_mnist()) GTEST_SKIP() << "Fashion-MNIST not installed";
  auto ds = load("fashion-mnist:train:classes=5-9:shots=10:seed=3");
  EXPECT_EQ(ds.size(), 50);
  EXPECT_EQ(ds.images.sizes(), (std::vector<int64_t>{50, 1, 28, 28}));
  EXPECT_EQ(ds.class_counts(), (std::vector<int64_t>(5, 10)));
  EXPECT_EQ(ds.labels.min().item<int64_t>(), 0);
  EXPECT_EQ(ds.labels.max().item<int64_t>(), 4);
  EXPECT_EQ(ds.class_names,
            (std::vector<std::string>{"Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"}));
  EXPECT_EQ(ds.source, "fashion-mnist:train:classes=5-9:shots=10:seed=3");
  EXPECT_LT(ds.index.max().item<int64_t>(), 60000);
  auto again = load("fashion-mnist:train:classes=5-9:shots=10:seed=3");
  EXPECT_EQ(again.content_hash(), ds.content_hash());
  auto other = load("fashion-mnist:train:classes=5-9:shots=10:seed=4");
  EXPECT_NE(other.content_hash(), ds.content_hash());
}

TEST_F(SpecTest, RealFashionMnistTest) {
  if (!have_fashion_mnist()) GTEST_SKIP() << "Fashion-MNIST not installed";
  auto ds = load("fashion-mnist:test");
  EXPECT_EQ(ds.size(), 10000);
  EXPECT_EQ(ds.num_classes(), 10);
  EXPECT_EQ(ds.class_counts(), (std::vector<int64_t>(10, 1000)));
  EXPECT_EQ(ds.images.sizes(), (std::vector<int64_t>{10000, 1, 28, 28}));
  try {
    load("fashion-mnist:test:shots=1001");
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("fashion-mnist:test:shots=1001"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace xfer::data
