#pragma once
// Shared test helpers: a seeding fixture, tensor-close assertions, temporary
// directories and a runner for the xfer binary.

#include <cstdint>
#include <functional>
#include <string>

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace xfer::testing {

/// Seeds torch (and anything else global) before each test.
class SeededTest : public ::testing::Test {
 protected:
  void SetUp() override;
  static constexpr uint64_t kSeed = 1234;
};

/// A fresh directory under the system temp folder, removed at destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

/// max |a - b| <= atol + rtol * |b| elementwise, shapes equal; explains on failure.
::testing::AssertionResult tensors_close(const torch::Tensor& a, const torch::Tensor& b,
                                         double atol = 1e-6, double rtol = 0);
/// Same shape, dtype and values exactly.
::testing::AssertionResult tensors_equal(const torch::Tensor& a, const torch::Tensor& b);

#define EXPECT_TENSOR_CLOSE(a, b, ...) EXPECT_TRUE(::xfer::testing::tensors_close(a, b, ##__VA_ARGS__))
#define EXPECT_TENSOR_EQ(a, b) EXPECT_TRUE(::xfer::testing::tensors_equal(a, b))

/// Result of running the xfer binary.
struct RunResult {
  int exit_code = -1;
  std::string out, err;
};
/// Runs build/xfer with the arguments (a shell-quoted string), capturing stdout
/// and stderr; `env` ("NAME=value ...") is added to its environment and the
/// shell commands `prefix` (e.g. "ulimit -f 128") run first in its shell.
RunResult run_xfer(const std::string& args, const std::string& env = "", const std::string& prefix = "");
/// Starts build/xfer with the arguments (output discarded), polls `stop`
/// every 10 ms and SIGKILLs the process once it returns true. Returns whether
/// it was killed (false: it exited first).
bool run_xfer_until(const std::string& args, const std::function<bool()>& stop, const std::string& env = "");

/// Every file under dir is complete: files named like a temporary (".tmp-")
/// are skipped (the next run removes them); every other .json parses, every
/// .safetensors parses, and a folder with card.json and model.safetensors has
/// the card id equal to the weights' sha256. What a crash may leave behind.
::testing::AssertionResult files_complete(const std::string& dir);

/// Runs tests/python/make_torchscript_golden.py into dir (classifier.pt,
/// backbone.pt, io.safetensors); false when Debian's python3-torch is missing.
bool make_torchscript_golden(const std::string& dir);

/// Copies the model directory `from` to `to` (a new path) with its config.json's
/// class names replaced: the same weights as a model of another task.
void copy_model_renaming_classes(const std::string& from, const std::string& to,
                                 const std::vector<std::string>& class_names);

/// Whether the Fashion-MNIST package files are installed.
bool have_fashion_mnist();

/// Writes a small synthetic IDX pair (n images of size hxw, k classes, gzip)
/// into dir and returns the data spec "idx:IMAGES,LABELS".
std::string write_synthetic_idx(const std::string& dir, int64_t n, int64_t k, int64_t h = 28,
                                int64_t w = 28, uint64_t seed = 0);

/// The source tree (tests/python, fuzz/, docs/) and the xfer binary under test.
/// Only support.cpp is compiled with these absolute paths, so every other test
/// file's compile command is the same in any clone and ccache can share it.
const std::string& source_dir();
const std::string& xfer_binary();

}  // namespace xfer::testing
