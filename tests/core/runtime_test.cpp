#include "xfer/core/runtime.h"

#include <algorithm>
#include <map>
#include <numeric>
#include <regex>
#include <set>
#include <thread>

#include "support/support.h"
#include "xfer/core/error.h"

namespace xfer {
namespace {

class RuntimeThreadsTest : public ::testing::Test {
 protected:
  void SetUp() override { saved_ = torch::get_num_threads(); }
  void TearDown() override { torch::set_num_threads(saved_); }
  int saved_ = 1;
};

TEST_F(RuntimeThreadsTest, ZeroMeansHardwareConcurrency) {
  int expected = static_cast<int>(std::thread::hardware_concurrency());
  if (expected <= 0) expected = 1;
  EXPECT_EQ(set_threads(0), expected);
  EXPECT_EQ(torch::get_num_threads(), expected);
}

TEST_F(RuntimeThreadsTest, NegativeMeansHardwareConcurrency) {
  int expected = static_cast<int>(std::thread::hardware_concurrency());
  if (expected <= 0) expected = 1;
  EXPECT_EQ(set_threads(-4), expected);
  EXPECT_EQ(torch::get_num_threads(), expected);
}

TEST_F(RuntimeThreadsTest, ExplicitCountIsApplied) {
  EXPECT_EQ(set_threads(1), 1);
  EXPECT_EQ(torch::get_num_threads(), 1);
  EXPECT_EQ(set_threads(3), 3);
  EXPECT_EQ(torch::get_num_threads(), 3);
  EXPECT_EQ(set_threads(1), 1);
  EXPECT_EQ(torch::get_num_threads(), 1);
}

TEST(RuntimeTest, VersionStringsLookLikeVersions) {
  std::regex semver(R"(\d+\.\d+\.\d+)");
  EXPECT_TRUE(std::regex_match(version(), semver)) << version();
  EXPECT_TRUE(std::regex_match(torch_version(), semver)) << torch_version();
}

TEST(RuntimeTest, SeedEverythingMakesTorchRandReproducible) {
  seed_everything(42);
  auto a = torch::rand({64});
  auto a2 = torch::randn({3, 5});
  seed_everything(42);
  auto b = torch::rand({64});
  auto b2 = torch::randn({3, 5});
  EXPECT_TENSOR_EQ(a, b);
  EXPECT_TENSOR_EQ(a2, b2);
  seed_everything(43);
  auto c = torch::rand({64});
  EXPECT_FALSE(torch::equal(a, c)) << "different seeds gave the same numbers";
  // The stream continues after seeding rather than restarting on each call.
  seed_everything(42);
  auto d1 = torch::rand({64});
  auto d2 = torch::rand({64});
  EXPECT_FALSE(torch::equal(d1, d2));
}

TEST(RuntimeTest, ParseDeviceCpu) {
  auto d = parse_device("cpu");
  EXPECT_TRUE(d.is_cpu());
  EXPECT_EQ(d.type(), torch::kCPU);
}

TEST(RuntimeTest, ParseDeviceAuto) {
  auto d = parse_device("auto");
  if (torch::cuda::is_available()) {
    EXPECT_TRUE(d.is_cuda());
  } else {
    EXPECT_TRUE(d.is_cpu());
  }
}

TEST(RuntimeTest, ParseDeviceCudaWithoutCudaIsUsageError) {
  if (torch::cuda::is_available()) {
    EXPECT_TRUE(parse_device("cuda").is_cuda());
    EXPECT_EQ(parse_device("cuda:0").index(), 0);
    return;
  }
  try {
    parse_device("cuda");
    FAIL() << "parse_device(\"cuda\") did not throw without CUDA";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUsage);
    EXPECT_NE(std::string(e.what()).find("cuda"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_device("cuda:1"), UsageError);
}

TEST(RuntimeTest, ParseDeviceBadNamesAreUsageErrors) {
  for (const std::string name : {"gpu", "", "tpu0", "cuda:abc", "cpu cpu", "automatic"}) {
    try {
      parse_device(name);
      ADD_FAILURE() << "parse_device('" << name << "') did not throw";
    } catch (const UsageError& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kUsage);
      std::string msg = e.what();
      EXPECT_NE(msg.find("'" + name + "'"), std::string::npos) << msg;
      EXPECT_NE(msg.find("--device"), std::string::npos) << msg;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "parse_device('" << name << "') threw a non-UsageError: " << e.what();
    }
  }
}

TEST(RngTest, MatchesSplitmix64Reference) {
  // Reference outputs of splitmix64 (Steele, Lea, Flood 2014; Vigna's C code) from state 0.
  Rng rng(0);
  EXPECT_EQ(rng.next(), 0xe220a8397b1dcdafULL);
  EXPECT_EQ(rng.next(), 0x6e789e6aa1b965f4ULL);
  EXPECT_EQ(rng.next(), 0x06c45d188009454fULL);
}

TEST(RngTest, DeterministicPerSeed) {
  Rng a(2024), b(2024), c(2025);
  bool any_diff = false;
  for (int i = 0; i < 100; ++i) {
    uint64_t x = a.next();
    EXPECT_EQ(x, b.next());
    any_diff = any_diff || x != c.next();
  }
  EXPECT_TRUE(any_diff);
  EXPECT_EQ(a.state(), b.state());
  EXPECT_NE(a.state(), c.state());
}

TEST(RngTest, UniformStaysInRange) {
  Rng rng(7);
  for (uint64_t n : std::initializer_list<uint64_t>{1, 2, 3, 7, 1000, (uint64_t(1) << 63) + 12345, UINT64_MAX}) {
    for (int i = 0; i < 200; ++i) {
      uint64_t x = rng.uniform(n);
      ASSERT_LT(x, n) << "n = " << n;
    }
  }
  EXPECT_EQ(Rng(99).uniform(1), 0u);
}

TEST(RngTest, UniformZeroThrows) {
  Rng rng(1);
  EXPECT_THROW(rng.uniform(0), Error);
}

TEST(RngTest, UniformIsRoughlyUniform) {
  // Chi-square over 10 buckets (9 degrees of freedom): the 99.99% quantile is ~33.7.
  constexpr int kBuckets = 10;
  constexpr int kSamples = 100000;
  Rng rng(12345);
  std::vector<int> counts(kBuckets, 0);
  for (int i = 0; i < kSamples; ++i) counts[rng.uniform(kBuckets)]++;
  double expected = double(kSamples) / kBuckets;
  double chi2 = 0;
  for (int c : counts) chi2 += (c - expected) * (c - expected) / expected;
  EXPECT_LT(chi2, 40.0);
  for (int c : counts) EXPECT_GT(c, 0);
}

TEST(RngTest, Uniform01InUnitIntervalWithMeanHalf) {
  Rng rng(3);
  double sum = 0, lo = 1, hi = 0;
  constexpr int kN = 100000;
  for (int i = 0; i < kN; ++i) {
    double u = rng.uniform01();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
    lo = std::min(lo, u);
    hi = std::max(hi, u);
  }
  EXPECT_NEAR(sum / kN, 0.5, 0.01);
  EXPECT_LT(lo, 0.01);
  EXPECT_GT(hi, 0.99);
}

TEST(RngTest, PermutationIsAPermutation) {
  Rng rng(11);
  for (int64_t n : {0, 1, 2, 5, 100, 1000}) {
    auto p = permutation(n, rng);
    ASSERT_EQ(static_cast<int64_t>(p.size()), n);
    std::vector<int64_t> sorted = p;
    std::sort(sorted.begin(), sorted.end());
    std::vector<int64_t> iota(static_cast<size_t>(n));
    std::iota(iota.begin(), iota.end(), 0);
    EXPECT_EQ(sorted, iota) << "n = " << n;
  }
}

TEST(RngTest, PermutationShufflesAndIsDeterministic) {
  Rng a(5), b(5), c(6);
  auto pa = permutation(50, a);
  auto pb = permutation(50, b);
  auto pc = permutation(50, c);
  EXPECT_EQ(pa, pb);
  EXPECT_NE(pa, pc);
  std::vector<int64_t> iota(50);
  std::iota(iota.begin(), iota.end(), 0);
  EXPECT_NE(pa, iota);
}

TEST(RngTest, PermutationOfThreeIsRoughlyUniform) {
  // All 6 orders of 3 items should come up about equally often.
  Rng rng(77);
  std::map<std::vector<int64_t>, int> counts;
  constexpr int kTrials = 60000;
  for (int i = 0; i < kTrials; ++i) counts[permutation(3, rng)]++;
  ASSERT_EQ(counts.size(), 6u);
  double expected = kTrials / 6.0;
  double chi2 = 0;
  for (const auto& [p, c] : counts) chi2 += (c - expected) * (c - expected) / expected;
  EXPECT_LT(chi2, 30.0);  // 5 dof; 99.99% quantile ~25.7
}

}  // namespace
}  // namespace xfer
