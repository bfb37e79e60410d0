#include "xfer/data/dataset.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <set>

#include "support/errors.h"
#include "support/support.h"
#include "xfer/core/error.h"

namespace xfer::data {
namespace {

using xfer::testing::SeededTest;

/// n samples, label i % k, image i filled with value i (so samples are identifiable).
Dataset make(int64_t n, int64_t k, int64_t c = 1, int64_t h = 4, int64_t w = 4) {
  Dataset ds;
  ds.images = torch::arange(n, torch::kLong)
                  .remainder(256)
                  .view({n, 1, 1, 1})
                  .expand({n, c, h, w})
                  .to(torch::kUInt8)
                  .contiguous();
  ds.labels = torch::arange(n, torch::kLong).remainder(k);
  ds.index = torch::arange(n, torch::kLong);
  for (int64_t i = 0; i < k; ++i) ds.class_names.push_back("c" + std::to_string(i));
  ds.source = "synthetic";
  return ds;
}

std::vector<int64_t> to_vec(const torch::Tensor& t) {
  auto c = t.to(torch::kLong).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

class DatasetTest : public SeededTest {};

TEST_F(DatasetTest, ValidateAcceptsGoodAndRejectsBad) {
  auto ds = make(10, 3);
  EXPECT_NO_THROW(ds.validate());
  auto bad = ds;
  bad.labels = bad.labels.clone();
  bad.labels[0] = 3;
  EXPECT_THROW(bad.validate(), Error);
  try {
    bad.validate();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("synthetic"), std::string::npos) << e.what();
  }
  bad = ds;
  bad.images = bad.images.to(torch::kFloat);
  EXPECT_THROW(bad.validate(), Error);
  bad = ds;
  bad.index = bad.index.narrow(0, 0, 9);
  EXPECT_THROW(bad.validate(), Error);
  bad = ds;
  bad.images = torch::zeros({ds.size(), 1, 4, 0}, torch::kUInt8);  // an IDX file of 4x0 images
  EXPECT_THROW(bad.validate(), Error);
}

TEST_F(DatasetTest, SelectKeepsOrderAndIndex) {
  auto ds = make(10, 3);
  auto sub = ds.select(torch::tensor({7, 2, 5}, torch::kLong));
  EXPECT_EQ(to_vec(sub.index), (std::vector<int64_t>{7, 2, 5}));
  EXPECT_EQ(to_vec(sub.labels), (std::vector<int64_t>{1, 2, 2}));
  EXPECT_EQ(sub.images[0][0][0][0].item<int64_t>(), 7);
  EXPECT_EQ(sub.class_names, ds.class_names);
  // Index survives a second selection: it points at the original source.
  auto sub2 = sub.select(torch::tensor({2}, torch::kLong));
  EXPECT_EQ(to_vec(sub2.index), (std::vector<int64_t>{5}));
  EXPECT_THROW(ds.select(torch::tensor({10}, torch::kLong)), Error);
}

TEST_F(DatasetTest, FloatImagesInUnitRange) {
  auto ds = make(256, 2);
  auto f = ds.float_images();
  EXPECT_EQ(f.scalar_type(), torch::kFloat);
  EXPECT_FLOAT_EQ(f.max().item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(f.min().item<float>(), 0.0f);
  EXPECT_NEAR(f[51][0][0][0].item<float>(), 51.0f / 255.0f, 1e-7);
}

TEST_F(DatasetTest, ClassCounts) {
  auto ds = make(10, 4);  // labels 0,1,2,3,0,1,2,3,0,1
  EXPECT_EQ(ds.class_counts(), (std::vector<int64_t>{3, 3, 2, 2}));
  ds.class_names.push_back("empty");
  EXPECT_EQ(ds.class_counts(), (std::vector<int64_t>{3, 3, 2, 2, 0}));
}

TEST_F(DatasetTest, ContentHashTracksSamples) {
  auto a = make(10, 3);
  auto b = make(10, 3);
  EXPECT_EQ(a.content_hash(), b.content_hash());
  EXPECT_EQ(a.content_hash().size(), 64u);
  b.labels = b.labels.clone();
  b.labels[4] = 0;
  EXPECT_NE(a.content_hash(), b.content_hash());
  auto c = make(10, 3);
  c.images = c.images.clone();
  c.images[3][0][1][1] = 99;
  EXPECT_NE(a.content_hash(), c.content_hash());
  // Same bytes, different shape.
  auto d = make(10, 3);
  d.images = d.images.reshape({10, 1, 2, 8});
  EXPECT_NE(a.content_hash(), d.content_hash());
}

TEST_F(DatasetTest, SelectClassesRelabelsInGivenOrder) {
  auto ds = make(20, 10);
  auto sub = select_classes(ds, {7, 5, 9});
  EXPECT_EQ(sub.class_names, (std::vector<std::string>{"c7", "c5", "c9"}));
  EXPECT_EQ(sub.size(), 6);
  auto labels = to_vec(sub.labels);
  auto index = to_vec(sub.index);
  for (size_t i = 0; i < labels.size(); ++i) {
    int64_t original = index[i] % 10;
    int64_t expected = original == 7 ? 0 : original == 5 ? 1 : 2;
    EXPECT_EQ(labels[i], expected) << "sample " << index[i];
  }
  sub.validate();
}

TEST_F(DatasetTest, CheckSameTaskComparesShapeAndClassesInLabelOrder) {
  auto train = make(20, 10);
  EXPECT_NO_THROW(check_same_task(make(10, 10), train));
  EXPECT_NO_THROW(
      check_same_task(select_classes(make(30, 10), {5, 6}), select_classes(train, {5, 6})));
  auto names = [](const std::function<void()>& f) {
    try {
      f();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  // Same count, another order: label 0 would be c6 in one and c5 in the other.
  auto swapped = names([&] {
    check_same_task(select_classes(make(30, 10), {6, 5}), select_classes(train, {5, 6}));
  });
  EXPECT_NE(swapped.find("label 0 is 'c6', not 'c5'"), std::string::npos) << swapped;
  // A class missing (an image folder without one class directory) or one more.
  auto fewer = names([&] { check_same_task(make(10, 9), train); });
  EXPECT_NE(fewer.find("9 against 10; label 9 is missing"), std::string::npos) << fewer;
  EXPECT_THROW(check_same_task(make(12, 11), train), Error);
  auto shape = names([&] { check_same_task(make(10, 10, 1, 5, 4), train); });
  EXPECT_NE(shape.find("images are"), std::string::npos) << shape;
}

TEST_F(DatasetTest, SelectClassesRejectsUnknownAndRepeated) {
  auto ds = make(20, 10);
  EXPECT_THROW(select_classes(ds, {3, 10}), Error);
  EXPECT_THROW(select_classes(ds, {-1}), Error);
  EXPECT_THROW(select_classes(ds, {3, 3}), Error);
  EXPECT_THROW(select_classes(ds, {}), Error);
}

TEST_F(DatasetTest, SampleShotsGivesKPerClassDeterministically) {
  auto ds = make(300, 5);
  auto a = sample_shots(ds, 7, 11);
  EXPECT_EQ(a.size(), 35);
  EXPECT_EQ(a.class_counts(), (std::vector<int64_t>(5, 7)));
  // Every chosen sample is a real, distinct sample with its original label.
  auto index = to_vec(a.index);
  EXPECT_EQ(std::set<int64_t>(index.begin(), index.end()).size(), 35u);
  auto labels = to_vec(a.labels);
  for (size_t i = 0; i < index.size(); ++i) EXPECT_EQ(labels[i], index[i] % 5);
  auto b = sample_shots(ds, 7, 11);
  EXPECT_TENSOR_EQ(a.index, b.index);
  EXPECT_EQ(a.content_hash(), b.content_hash());
  auto c = sample_shots(ds, 7, 12);
  EXPECT_FALSE(torch::equal(a.index, c.index));
}

// A class-sorted file (a k-shot draw, an image folder) keeps every class in a
// limited subset: classes in turn, then sorted back into the data's order.
TEST_F(DatasetTest, BalancedPositionsTakeClassesInTurn) {
  const auto labels = torch::tensor({0, 0, 0, 0, 1, 1, 2, 2, 2, 2}, torch::kLong);
  auto v = [](const torch::Tensor& t) { return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel()); };
  EXPECT_EQ(v(balanced_positions(labels, 3)), (std::vector<int64_t>{0, 4, 6}));
  EXPECT_EQ(v(balanced_positions(labels, 5)), (std::vector<int64_t>{0, 1, 4, 5, 6}));
  // Class 1 runs out after two: the others fill the rest in turn.
  EXPECT_EQ(v(balanced_positions(labels, 8)), (std::vector<int64_t>{0, 1, 2, 4, 5, 6, 7, 8}));
  EXPECT_EQ(v(balanced_positions(labels, 10)), v(torch::arange(10, torch::kLong)));
  EXPECT_EQ(v(balanced_positions(labels, 99)), v(torch::arange(10, torch::kLong)));
  EXPECT_EQ(balanced_positions(labels, 0).numel(), 0);
  EXPECT_THROW(balanced_positions(labels, -1), Error);
}

// One seed's draws are nested, and exclude_shots leaves exactly the samples no
// draw of at most k shots under its seeds can take: a disjoint pool.
TEST_F(DatasetTest, ExcludeShotsLeavesAPoolDisjointFromEveryDrawOfThoseSeeds) {
  auto ds = make(300, 5);  // 60 per class
  EXPECT_TENSOR_EQ(shot_positions(ds, 7, 11), sample_shots(ds, 7, 11).index);
  for (uint64_t seed : {0u, 1u, 2u}) {
    auto big = to_vec(sample_shots(ds, 10, seed).index);
    for (int64_t k : {1, 4, 10}) {
      for (int64_t i : to_vec(sample_shots(ds, k, seed).index)) {
        EXPECT_EQ(std::count(big.begin(), big.end(), i), 1)
            << "seed " << seed << " k " << k << " sample " << i;
      }
    }
  }
  const auto pool = exclude_shots(ds, 10, {0, 1, 2});
  std::set<int64_t> drawn;
  for (uint64_t seed : {0u, 1u, 2u}) {
    for (int64_t i : to_vec(sample_shots(ds, 10, seed).index)) drawn.insert(i);
  }
  const auto kept = to_vec(pool.index);
  EXPECT_EQ(kept.size() + drawn.size(), 300u);  // nothing else removed
  EXPECT_TRUE(std::is_sorted(kept.begin(), kept.end()));
  for (int64_t i : kept) EXPECT_EQ(drawn.count(i), 0u) << i;
  // Labels and class names survive; a draw from the pool never meets a victim's.
  EXPECT_EQ(pool.class_names, ds.class_names);
  for (size_t i = 0; i < kept.size(); ++i) EXPECT_EQ(to_vec(pool.labels)[i], kept[i] % 5);
  for (int64_t i : to_vec(sample_shots(pool, 20, 1000).index)) EXPECT_EQ(drawn.count(i), 0u) << i;
  // Another seed's draw is not excluded: it meets the victims' (10 of 60 per class each).
  int64_t shared = 0;
  for (int64_t i : to_vec(sample_shots(ds, 10, 7).index))
    shared += static_cast<int64_t>(drawn.count(i));
  EXPECT_GT(shared, 0);
  EXPECT_THROW(exclude_shots(ds, 10, {}), Error);
  // A class left without samples is refused: by one draw of all of it, or by draws that cover it.
  xfer::testing::expect_error_containing([&] { exclude_shots(ds, 60, {0}); },
                                         {"exclude=60", "class 0", "it has 60"});
  xfer::testing::expect_error_containing([&] { exclude_shots(ds, 61, {0}); },
                                         {"exclude=61", "it has 60"});
  auto tiny = make(10, 5);  // 2 per class: two seeds' single draws often cover a class
  bool covered = false;
  for (uint64_t a = 0; a < 20 && !covered; ++a) {
    try {
      exclude_shots(tiny, 1, {a, a + 100});
    } catch (const Error& e) {
      covered = true;
      EXPECT_NE(std::string(e.what()).find("under 2 seeds removes every sample"), std::string::npos)
          << e.what();
    }
  }
  EXPECT_TRUE(covered);
}

TEST_F(DatasetTest, LimitBalancedIsTheBalancedSubsetOrEverything) {
  auto ds = make(30, 3);
  EXPECT_EQ(limit_balanced(ds, 0).size(), 30);
  EXPECT_EQ(limit_balanced(ds, 30).size(), 30);
  EXPECT_EQ(limit_balanced(ds, 99).size(), 30);
  auto six = limit_balanced(ds, 6);
  EXPECT_TENSOR_EQ(six.index, balanced_positions(ds.labels, 6));
  EXPECT_EQ(six.class_counts(), (std::vector<int64_t>{2, 2, 2}));
  EXPECT_THROW(limit_balanced(ds, -1), Error);
}

TEST_F(DatasetTest, SampleShotsRejectsTooFew) {
  auto ds = make(12, 5);  // classes 0,1 have 3; classes 2,3,4 have 2
  EXPECT_NO_THROW(sample_shots(ds, 2, 0));
  try {
    sample_shots(ds, 3, 0);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("class 2"), std::string::npos) << msg;
    EXPECT_NE(msg.find("c2"), std::string::npos) << msg;
    EXPECT_NE(msg.find("has 2"), std::string::npos) << msg;
  }
  EXPECT_THROW(sample_shots(ds, 0, 0), Error);
  // Far more shots than samples: the class count error, not an allocation failure.
  try {
    sample_shots(ds, int64_t(1) << 40, 0);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("fewer than"), std::string::npos) << e.what();
  }
}

TEST_F(DatasetTest, StratifiedSplitKeepsProportions) {
  auto ds = make(100, 4);  // 25 per class
  auto [train, val] = stratified_split(ds, 0.2, 3);
  EXPECT_EQ(val.class_counts(), (std::vector<int64_t>(4, 5)));
  EXPECT_EQ(train.class_counts(), (std::vector<int64_t>(4, 20)));
  // Disjoint and covering.
  auto ti = to_vec(train.index), vi = to_vec(val.index);
  std::set<int64_t> all(ti.begin(), ti.end());
  for (auto v : vi) EXPECT_TRUE(all.insert(v).second) << "sample " << v << " in both";
  EXPECT_EQ(all.size(), 100u);
  // Deterministic under the seed, different under another.
  auto again = stratified_split(ds, 0.2, 3);
  EXPECT_TENSOR_EQ(again.second.index, val.index);
  auto other = stratified_split(ds, 0.2, 4);
  EXPECT_FALSE(torch::equal(other.second.index, val.index));
}

TEST_F(DatasetTest, StratifiedSplitSmallClassesGetOneValSample) {
  auto ds = make(6, 3);  // 2 per class
  auto [train, val] = stratified_split(ds, 0.1, 0);
  EXPECT_EQ(val.class_counts(), (std::vector<int64_t>(3, 1)));
  EXPECT_EQ(train.class_counts(), (std::vector<int64_t>(3, 1)));
  auto none = stratified_split(ds, 0.0, 0);
  EXPECT_EQ(none.second.size(), 0);
  EXPECT_EQ(none.first.size(), 6);
  EXPECT_THROW(stratified_split(ds, 1.5, 0), Error);
}

TEST_F(DatasetTest, StatsOnKnownData) {
  Dataset ds;
  // Channel 0: half the pixels 0, half 255 -> mean 0.5, std 0.5.
  // Channel 1: all 51 -> mean 0.2, std 0.
  auto img = torch::zeros({2, 2, 2, 2}, torch::kUInt8);
  img.select(1, 0).select(1, 0).fill_(255);
  img.select(1, 1).fill_(51);
  ds.images = img;
  ds.labels = torch::zeros({2}, torch::kLong);
  ds.index = torch::arange(2, torch::kLong);
  ds.class_names = {"a"};
  auto s = compute_stats(ds);
  ASSERT_EQ(s.mean.size(), 2u);
  EXPECT_NEAR(s.mean[0], 0.5, 1e-9);
  EXPECT_NEAR(s.std[0], 0.5, 1e-9);
  EXPECT_NEAR(s.mean[1], 0.2, 1e-9);
  EXPECT_NEAR(s.std[1], 0.0, 1e-6);
  auto [lo, hi] = value_range(ds);
  EXPECT_DOUBLE_EQ(lo, 0.0);
  EXPECT_DOUBLE_EQ(hi, 1.0);
}

TEST_F(DatasetTest, StatsMatchTorchOnRandomData) {
  auto ds = make(10, 2, 3, 5, 5);
  ds.images = torch::randint(0, 256, {10, 3, 5, 5}, torch::kLong).to(torch::kUInt8);
  auto s = compute_stats(ds);
  auto f = ds.images.to(torch::kDouble) / 255.0;
  for (int64_t c = 0; c < 3; ++c) {
    auto ch = f.select(1, c);
    EXPECT_NEAR(s.mean[c], ch.mean().item<double>(), 1e-9);
    EXPECT_NEAR(s.std[c], ch.std(/*unbiased=*/false).item<double>(), 1e-9);
  }
  auto [lo, hi] = value_range(ds);
  EXPECT_DOUBLE_EQ(lo, ds.images.min().item<int64_t>() / 255.0);
  EXPECT_DOUBLE_EQ(hi, ds.images.max().item<int64_t>() / 255.0);
}

}  // namespace
}  // namespace xfer::data
