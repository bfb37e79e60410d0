#include "xfer/io/checkpoint.h"

#include <filesystem>

#include "support/errors.h"
#include "support/support.h"
#include "xfer/core/fs.h"

namespace xfer::io {
namespace {

using xfer::testing::TempDir;
namespace fs = std::filesystem;

TEST(CheckpointTest, RoundTripsStateAndTensorsInOneFile) {
  TempDir tmp;
  const std::string dir = tmp.file("ck");
  EXPECT_FALSE(has_checkpoint(dir));
  Checkpoint c;
  c.state = {{"epoch", 3}, {"loss_sum", 0.1 + 0.2}, {"history", Json::array({1, 2})}};
  c.tensors.add("model.0", torch::randn({3, 4}));
  c.tensors.add("rng.cpu", torch::arange(10, torch::kUInt8));
  write_checkpoint(dir, c);
  EXPECT_TRUE(has_checkpoint(dir));
  // One file, nothing temporary beside it.
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir)) files += e.is_regular_file();
  EXPECT_EQ(files, 1);
  auto r = read_checkpoint(dir);
  EXPECT_EQ(r.state["epoch"], 3);
  EXPECT_EQ(r.state["loss_sum"].get<double>(), 0.1 + 0.2);  // doubles round-trip exactly
  EXPECT_EQ(r.state["format"], "xfer-checkpoint/2");
  EXPECT_TENSOR_EQ(r.tensors.at("model.0"), c.tensors.at("model.0"));
  EXPECT_TENSOR_EQ(r.tensors.at("rng.cpu"), c.tensors.at("rng.cpu"));
  EXPECT_TRUE(r.tensors.metadata.empty());
  // Replacing it keeps one file.
  c.state["epoch"] = 4;
  write_checkpoint(dir, c);
  EXPECT_EQ(read_checkpoint(dir).state["epoch"], 4);
}

TEST(CheckpointTest, RefusesFilesThatAreNotCheckpoints) {
  TempDir tmp;
  xfer::testing::expect_error_naming([&] { read_checkpoint(tmp.file("none")); }, "no checkpoint");
  fs::create_directories(tmp.file("plain"));
  TensorFile f;
  f.add("x", torch::zeros({2}));
  write_safetensors(checkpoint_file(tmp.file("plain")), f);
  xfer::testing::expect_error_naming([&] { read_checkpoint(tmp.file("plain")); }, "not an xfer checkpoint");
  f.metadata["xfer_checkpoint"] = "{not json";
  write_safetensors(checkpoint_file(tmp.file("plain")), f);
  xfer::testing::expect_error_naming([&] { read_checkpoint(tmp.file("plain")); }, "not valid JSON");
  f.metadata["xfer_checkpoint"] = R"({"format": "other/9"})";
  write_safetensors(checkpoint_file(tmp.file("plain")), f);
  xfer::testing::expect_error_naming([&] { read_checkpoint(tmp.file("plain")); }, "unsupported checkpoint");
  for (const char* state : {R"({"format": 2})", R"({"format": null})", R"([1])"}) {
    f.metadata["xfer_checkpoint"] = state;
    write_safetensors(checkpoint_file(tmp.file("plain")), f);
    xfer::testing::expect_error_naming([&] { read_checkpoint(tmp.file("plain")); }, "unsupported checkpoint");
  }
  write_file_atomic(checkpoint_file(tmp.file("plain")), "garbage");
  xfer::testing::expect_error_naming([&] { read_checkpoint(tmp.file("plain")); },
                                     checkpoint_file(tmp.file("plain")));
}

}  // namespace
}  // namespace xfer::io
