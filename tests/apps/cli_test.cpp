// End-to-end tests of the xfer binary: flags, exit codes, the one-line error
// contract and "no partial output" for the bad inputs of the foundation issue.

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <cstdlib>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "support/support.h"
#include "xfer/core/fs.h"
#include "xfer/core/json.h"
#include "xfer/io/safetensors.h"
#include "xfer/core/sha256.h"
#include "xfer/data/idx.h"
#include "xfer/data/image_folder.h"

namespace xfer {
namespace {

using xfer::testing::RunResult;
using xfer::testing::run_xfer;
using xfer::testing::TempDir;
namespace fs = std::filesystem;

// Exactly one line on stderr, starting with "xfer: error:" and mentioning `needle`.
::testing::AssertionResult one_error_line(const RunResult& r, const std::string& needle) {
  if (r.err.rfind("xfer: error: ", 0) != 0) {
    return ::testing::AssertionFailure() << "stderr does not start with 'xfer: error: ': " << r.err;
  }
  if (r.err.find('\n') != r.err.size() - 1) {
    return ::testing::AssertionFailure() << "stderr is not exactly one line: " << r.err;
  }
  if (r.err.find(needle) == std::string::npos) {
    return ::testing::AssertionFailure() << "stderr does not mention '" << needle << "': " << r.err;
  }
  return ::testing::AssertionSuccess();
}

// Nothing named like the output (final or temporary) exists in the folder.
::testing::AssertionResult no_output(const std::string& dir, const std::string& name) {
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().filename().string().rfind(name, 0) == 0) {
      return ::testing::AssertionFailure() << "left behind: " << e.path();
    }
  }
  return ::testing::AssertionSuccess();
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    spec_ = xfer::testing::write_synthetic_idx(tmp_.path(), 60, 3, 10, 10, 3);
  }
  std::string train_args(const std::string& data, const std::string& arch = "mlp") {
    return "--quiet train --data '" + data + "' --arch " + arch +
           " --arch-options '{\"hidden\":[8]}' --epochs 1 --batch-size 16 --out '" + out() + "'";
  }
  std::string out() const { return tmp_.file("model"); }
  TempDir tmp_;
  std::string spec_;
};

TEST_F(CliTest, HelpAndVersion) {
  auto h = run_xfer("--help");
  EXPECT_EQ(h.exit_code, 0);
  auto listed = [&](const std::string& cmd) { return h.out.find("\n  " + cmd + " ") != std::string::npos; };
  for (const char* cmd : {"data", "train", "finetune", "attack", "transfer", "audit", "study", "report", "launch", "eval",
                          "predict"})
    EXPECT_TRUE(listed(cmd)) << cmd;
  auto v = run_xfer("--version");
  EXPECT_EQ(v.exit_code, 0);
  EXPECT_NE(v.out.find("xfer 0."), std::string::npos) << v.out;
  EXPECT_NE(v.out.find("LibTorch"), std::string::npos) << v.out;
}

TEST_F(CliTest, UsageErrorsExitTwo) {
  auto r = run_xfer("frobnicate");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(one_error_line(r, "frobnicate"));
  r = run_xfer("train --data x");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(one_error_line(r, "--arch"));
  r = run_xfer("train --data '" + spec_ + "' --arch nonesuch --out '" + out() + "'");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(one_error_line(r, "nonesuch"));
  EXPECT_TRUE(no_output(tmp_.path(), "model"));
  r = run_xfer("train --data '" + spec_ + "' --arch mlp --epochs 0 --out '" + out() + "'");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(one_error_line(r, "--epochs"));
  r = run_xfer("data info 'fashion-mnist:classes=3-1'");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(one_error_line(r, "classes"));
  r = run_xfer("data info 'fashion-mnist:valid'");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(one_error_line(r, "valid"));
}

TEST_F(CliTest, TrainThenEvalRoundTrip) {
  auto t = run_xfer(train_args(spec_));
  ASSERT_EQ(t.exit_code, 0) << t.err;
  EXPECT_TRUE(fs::exists(out() + "/config.json"));
  EXPECT_TRUE(fs::exists(out() + "/model.safetensors"));
  EXPECT_TRUE(fs::exists(out() + "/card.json"));
  auto e = run_xfer("eval --model '" + out() + "' --data '" + spec_ + "' --json '" +
                    tmp_.file("eval.json") + "'");
  ASSERT_EQ(e.exit_code, 0) << e.err;
  EXPECT_NE(e.out.find("accuracy:"), std::string::npos);
  auto j = read_json(tmp_.file("eval.json"));
  EXPECT_EQ(j["evaluation"]["n"], 60);
  EXPECT_EQ(j["model"]["id"], read_json(out() + "/card.json")["id"]);
  // A second train into the same folder is refused, and the first is untouched.
  auto before = sha256_file(out() + "/model.safetensors");
  auto again = run_xfer(train_args(spec_));
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_TRUE(one_error_line(again, "already exists"));
  EXPECT_EQ(sha256_file(out() + "/model.safetensors"), before);
}

TEST_F(CliTest, DataInfoPrintsCounts) {
  auto r = run_xfer("data info '" + spec_ + ":classes=0,2'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("samples:  40"), std::string::npos) << r.out;
  auto j = run_xfer("data info --json '" + spec_ + "'");
  ASSERT_EQ(j.exit_code, 0);
  EXPECT_EQ(Json::parse(j.out)["samples"], 60);
}

// --- The bad inputs of the foundation issue: exit 1, one line naming the file, no output. ---

TEST_F(CliTest, TruncatedGzip) {
  std::ifstream in(tmp_.file("images.gz"), std::ios::binary);
  std::string gz((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::ofstream(tmp_.file("trunc.gz"), std::ios::binary) << gz.substr(0, gz.size() / 2);
  auto r = run_xfer(train_args("idx:" + tmp_.file("trunc.gz") + "," + tmp_.file("labels.gz")));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(one_error_line(r, "trunc.gz"));
  EXPECT_TRUE(no_output(tmp_.path(), "model"));
}

TEST_F(CliTest, CorruptGzip) {
  std::ifstream in(tmp_.file("images.gz"), std::ios::binary);
  std::string gz((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (size_t i = 20; i < gz.size() - 8; i += 7) gz[i] = static_cast<char>(gz[i] ^ 0x5a);
  std::ofstream(tmp_.file("corrupt.gz"), std::ios::binary) << gz;
  auto r = run_xfer(train_args("idx:" + tmp_.file("corrupt.gz") + "," + tmp_.file("labels.gz")));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(one_error_line(r, "corrupt.gz"));
  EXPECT_TRUE(no_output(tmp_.path(), "model"));
}

TEST_F(CliTest, WrongIdxMagic) {
  std::string raw(16 + 4, '\0');
  raw[2] = 0x0d;  // float element type: not uint8
  raw[3] = 1;
  std::ofstream(tmp_.file("magic.idx"), std::ios::binary) << raw;
  auto r = run_xfer(train_args("idx:" + tmp_.file("images.gz") + "," + tmp_.file("magic.idx")));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(one_error_line(r, "magic.idx"));
  EXPECT_TRUE(no_output(tmp_.path(), "model"));
}

TEST_F(CliTest, LabelImageCountMismatch) {
  data::write_idx(tmp_.file("few-labels.gz"), torch::zeros({59}, torch::kUInt8));
  auto r = run_xfer(train_args("idx:" + tmp_.file("images.gz") + "," + tmp_.file("few-labels.gz")));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(one_error_line(r, "few-labels.gz"));
  EXPECT_TRUE(no_output(tmp_.path(), "model"));
}

TEST_F(CliTest, MissingAndEmptyFolder) {
  auto r = run_xfer(train_args("folder:" + tmp_.file("nope")));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(one_error_line(r, "nope"));
  fs::create_directory(tmp_.file("empty"));
  r = run_xfer(train_args("folder:" + tmp_.file("empty")));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(one_error_line(r, "empty"));
  EXPECT_TRUE(no_output(tmp_.path(), "model"));
}

TEST_F(CliTest, UnreadableImage) {
  fs::create_directories(tmp_.file("imgs/cat"));
  std::ofstream(tmp_.file("imgs/cat/broken.png"), std::ios::binary) << "\x89PNG\r\n\x1a\nnot really";
  auto r = run_xfer(train_args("folder:" + tmp_.file("imgs")));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(one_error_line(r, "broken.png"));
  EXPECT_TRUE(no_output(tmp_.path(), "model"));
}

TEST_F(CliTest, ImageSizeResizesFoldersOfMixedSizes) {
  fs::create_directories(tmp_.file("mixed/a"));
  fs::create_directories(tmp_.file("mixed/b"));
  data::write_png(tmp_.file("mixed/a/1.png"), torch::rand({1, 10, 10}));
  data::write_png(tmp_.file("mixed/b/2.png"), torch::rand({1, 12, 12}));
  auto r = run_xfer("data info 'folder:" + tmp_.file("mixed") + "'");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(one_error_line(r, "mixed"));
  r = run_xfer("--image-size 8 data info 'folder:" + tmp_.file("mixed") + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("1x8x8"), std::string::npos) << r.out;
  r = run_xfer("--image-size 8 data info '" + spec_ + "'");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(one_error_line(r, "--image-size"));
}

TEST_F(CliTest, SpecAskingForMissingClassOrTooManyShots) {
  auto r = run_xfer(train_args(spec_ + ":classes=0,5"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(one_error_line(r, "5"));
  r = run_xfer(train_args(spec_ + ":shots=21"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(one_error_line(r, "21"));
  EXPECT_TRUE(no_output(tmp_.path(), "model"));
}

// A model directory whose card matches its (corrupt) weights, so the
// safetensors parser is what must refuse them.
void write_model_with_weights(const std::string& dir, const std::string& weights) {
  fs::create_directories(dir);
  std::ofstream(dir + "/model.safetensors", std::ios::binary) << weights;
  write_json(dir + "/config.json", Json{{"arch", "mlp"},
                                        {"arch_options", {{"hidden", {8}}}},
                                        {"num_classes", 3},
                                        {"input_shape", {1, 10, 10}}});
  write_json(dir + "/card.json", Json{{"id", sha256_hex(weights)}, {"parent", nullptr}});
}

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}

TEST_F(CliTest, SafetensorsOffsetPastEnd) {
  std::string header = R"({"fc.weight":{"dtype":"F32","shape":[2],"data_offsets":[0,4000]}})";
  write_model_with_weights(tmp_.file("badoffset"), le64(header.size()) + header + std::string(8, '\0'));
  auto r = run_xfer("eval --model '" + tmp_.file("badoffset") + "' --data '" + spec_ + "' --json '" +
                    tmp_.file("e.json") + "'");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(one_error_line(r, "model.safetensors"));
  EXPECT_TRUE(one_error_line(r, "past the end"));
  EXPECT_FALSE(fs::exists(tmp_.file("e.json")));
}

TEST_F(CliTest, SafetensorsHeaderOverLimit) {
  write_model_with_weights(tmp_.file("bighead"), le64(200'000'000) + "{}");
  auto r = run_xfer("eval --model '" + tmp_.file("bighead") + "' --data '" + spec_ + "'");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(one_error_line(r, "model.safetensors"));
  EXPECT_TRUE(one_error_line(r, "limit"));
}

TEST_F(CliTest, TamperedWeightsAreRefused) {
  ASSERT_EQ(run_xfer(train_args(spec_)).exit_code, 0);
  {
    std::fstream f(out() + "/model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-1, std::ios::end);
    f.put('\x7f');
  }
  auto r = run_xfer("eval --model '" + out() + "' --data '" + spec_ + "'");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(one_error_line(r, "sha256"));
}

}  // namespace
}  // namespace xfer

namespace xfer {
namespace {

// The README's end-to-end path on real data, at a tenth of the size: 1000
// training images per class, 2 epochs, evaluated on the full test split.
TEST(CliSlowTest, SlowFashionMnistCnnEndToEnd) {
  if (!xfer::testing::have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist not installed";
  TempDir tmp;
  auto t = run_xfer("--quiet train --data fashion-mnist:train:shots=1000:seed=1 --arch cnn --epochs 2 "
                    "--out '" + tmp.file("m") + "'");
  ASSERT_EQ(t.exit_code, 0) << t.err;
  auto e = run_xfer("eval --model '" + tmp.file("m") + "' --data fashion-mnist:test --json '" +
                    tmp.file("e.json") + "'");
  ASSERT_EQ(e.exit_code, 0) << e.err;
  auto j = read_json(tmp.file("e.json"));
  EXPECT_EQ(j["evaluation"]["n"], 10000);
  EXPECT_GT(j["evaluation"]["accuracy"].get<double>(), 0.83) << e.out;
}

}  // namespace
}  // namespace xfer

namespace xfer {
namespace {

class CliPredictTest : public ::testing::Test {
 protected:
  void SetUp() override {
    spec_ = xfer::testing::write_synthetic_idx(tmp_.path(), 30, 3, 10, 10, 4);
    auto t = run_xfer("--quiet train --data '" + spec_ + "' --arch mlp --arch-options "
                      "'{\"hidden\":[8]}' --epochs 1 --out '" + tmp_.file("m") + "'");
    ASSERT_EQ(t.exit_code, 0) << t.err;
    io::TensorFile in;
    in.add("images", torch::rand({4, 1, 10, 10}));
    io::write_safetensors(tmp_.file("in.safetensors"), in);
  }
  TempDir tmp_;
  std::string spec_;
};

TEST_F(CliPredictTest, ModelDirectoryAndImportedWeightsAgree) {
  auto a = run_xfer("predict --model '" + tmp_.file("m") + "' --input '" + tmp_.file("in.safetensors") +
                    "' --out '" + tmp_.file("a.safetensors") + "'");
  ASSERT_EQ(a.exit_code, 0) << a.err;
  auto cfg = read_json(tmp_.file("m/config.json"));
  std::string mean = std::to_string(cfg["mean"][0].get<double>());
  std::string stdv = std::to_string(cfg["std"][0].get<double>());
  auto b = run_xfer("predict --weights '" + tmp_.file("m/model.safetensors") +
                    "' --arch mlp --arch-options '{\"hidden\":[8]}' --mean " + mean + " --std " + stdv +
                    " --weights-sha256 " + sha256_file(tmp_.file("m/model.safetensors")) + " --input '" +
                    tmp_.file("in.safetensors") + "' --out '" + tmp_.file("b.safetensors") + "'");
  ASSERT_EQ(b.exit_code, 0) << b.err;
  auto fa = io::read_safetensors(tmp_.file("a.safetensors"));
  auto fb = io::read_safetensors(tmp_.file("b.safetensors"));
  EXPECT_EQ(fa.at("logits").sizes(), (std::vector<int64_t>{4, 3}));
  // mean/std pass through decimal text (6 digits), hence the tolerance.
  EXPECT_TENSOR_CLOSE(fa.at("logits"), fb.at("logits"), 1e-3);
  EXPECT_TENSOR_EQ(fa.at("predictions"), fb.at("predictions"));
}

TEST_F(CliPredictTest, BadSourcesGiveOneLineAndNoOutput) {
  const std::string io_args =
      " --input '" + tmp_.file("in.safetensors") + "' --out '" + tmp_.file("o.safetensors") + "'";
  auto r = run_xfer("predict --weights '" + tmp_.file("m/model.safetensors") + "' --arch mlp" +
                    " --weights-sha256 " + std::string(64, 'a') + io_args);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(one_error_line(r, "sha256"));
  r = run_xfer("predict --weights '" + tmp_.file("m/model.safetensors") + "' --arch mlp" + io_args);
  // Default hidden widths: a model far larger than the file, refused before it is built.
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(one_error_line(r, "weights do not match the model: --arch mlp"));
  r = run_xfer("predict --weights '" + tmp_.file("m/model.safetensors") + "' --arch cnn" + io_args);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(one_error_line(r, "more than the file holds"));
  // Within the file's size, the strict load names what differs.
  r = run_xfer("predict --weights '" + tmp_.file("m/model.safetensors") +
               "' --arch mlp --arch-options '{\"hidden\":[4]}'" + io_args);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(one_error_line(r, "shape mismatch"));
  write_file_atomic(tmp_.file("junk.pt"), "PK\x03\x04 definitely not a torchscript archive");
  r = run_xfer("predict --torchscript '" + tmp_.file("junk.pt") + "'" + io_args);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(one_error_line(r, "junk.pt"));
  r = run_xfer("predict --model '" + tmp_.file("m") + "' --torchscript '" + tmp_.file("junk.pt") + "'" +
               io_args);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(one_error_line(r, "exactly one"));
  EXPECT_FALSE(fs::exists(tmp_.file("o.safetensors")));
}

TEST_F(CliPredictTest, HelpWarnsAboutTorchScript) {
  auto h = run_xfer("predict --help");
  EXPECT_EQ(h.exit_code, 0);
  EXPECT_NE(h.out.find("runs code written by its author"), std::string::npos) << h.out;
  EXPECT_NE(h.out.find("never loads pickle"), std::string::npos) << h.out;
}

}  // namespace
}  // namespace xfer

namespace xfer {
namespace {

TEST(CliTorchScriptTest, EvalAndPredictOnATorchScriptFile) {
  TempDir tmp;
  std::string cmd = "/usr/bin/python3 '" + xfer::testing::source_dir() + "/tests/python/make_torchscript_golden.py' '" +
                    tmp.path() + "' >/dev/null 2>&1";
  if (std::system(cmd.c_str()) != 0) GTEST_SKIP() << "python3-torch not available";
  std::string spec = xfer::testing::write_synthetic_idx(tmp.path(), 20, 10, 28, 28, 2);
  auto e = run_xfer("eval --torchscript '" + tmp.file("classifier.pt") + "' --data '" + spec +
                    "' --json '" + tmp.file("e.json") + "'");
  ASSERT_EQ(e.exit_code, 0) << e.err;
  EXPECT_EQ(read_json(tmp.file("e.json"))["evaluation"]["n"], 20);
  io::TensorFile golden = io::read_safetensors(tmp.file("io.safetensors"));
  io::TensorFile in;
  in.add("images", golden.at("input"));
  io::write_safetensors(tmp.file("in.safetensors"), in);
  auto p = run_xfer("predict --torchscript '" + tmp.file("classifier.pt") + "' --input '" +
                    tmp.file("in.safetensors") + "' --out '" + tmp.file("p.safetensors") + "'");
  ASSERT_EQ(p.exit_code, 0) << p.err;
  EXPECT_TENSOR_CLOSE(io::read_safetensors(tmp.file("p.safetensors")).at("logits"), golden.at("logits"),
                      1e-5);
  auto b = run_xfer("predict --torchscript '" + tmp.file("backbone.pt") +
                    "' --torchscript-mode backbone --num-classes 3 --input '" + tmp.file("in.safetensors") +
                    "' --out '" + tmp.file("b.safetensors") + "'");
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_EQ(io::read_safetensors(tmp.file("b.safetensors")).at("logits").size(1), 3);
}


// xfer finetune: dry run, bad combinations, and resume after SIGKILL.
class CliFinetuneTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new TempDir();
    fs::create_directories(tmp_->file("src"));
    fs::create_directories(tmp_->file("dst"));
    src_ = xfer::testing::write_synthetic_idx(tmp_->file("src"), 120, 4, 12, 12, 1);
    dst_ = xfer::testing::write_synthetic_idx(tmp_->file("dst"), 240, 3, 12, 12, 2);
    auto r = run_xfer("--quiet train --data '" + src_ +
                      "' --arch cnn --arch-options '{\"widths\":[8,16],\"hidden\":24}' --epochs 1 "
                      "--val-fraction 0 --out '" + tmp_->file("base") + "'");
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  static void TearDownTestSuite() { delete tmp_; }
  std::string args(const std::string& strategy, const std::string& out) const {
    return "--threads 1 --quiet finetune --from '" + tmp_->file("base") + "' --data '" + dst_ +
           "' --strategy " + strategy + " --epochs 4 --batch-size 8 --crop-padding 1" +
           (out.empty() ? std::string() : " --out '" + out + "'");
  }
  static TempDir* tmp_;
  static std::string src_, dst_;
  TempDir dir_;
};
TempDir* CliFinetuneTest::tmp_ = nullptr;
std::string CliFinetuneTest::src_, CliFinetuneTest::dst_;

TEST_F(CliFinetuneTest, DryRunPrintsGroupsAndWritesNothing) {
  auto r = run_xfer(args("partial:1", dir_.file("m")) + " --dry-run");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* s : {"group", "trainable", "stages.1/no-decay", "neck", "head", "eval", "train"}) {
    EXPECT_NE(r.out.find(s), std::string::npos) << s << " in\n" << r.out;
  }
  EXPECT_TRUE(no_output(dir_.path(), "m"));
}

TEST_F(CliFinetuneTest, LrFindPrintsTheCurveAndASuggestionAndWritesNoModel) {
  auto r = run_xfer(args("lp-ft --probe-solver lbfgs --ft-lr-scale 0.5", "") +
                    " --lr-find --lr-find-steps 25 --lr-find-range 1e-6,1 --lr-find-json '" + dir_.file("c.json") + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* s : {"lr-find: ", "suggested lr", "phase 'fine-tune' trains at --lr x 0.5"}) {
    EXPECT_NE(r.out.find(s), std::string::npos) << s << " in\n" << r.out;
  }
  EXPECT_TRUE(no_output(dir_.path(), "m"));
  auto j = read_json(dir_.file("c.json"));
  EXPECT_EQ(j["options"]["steps"], 25);
  EXPECT_GT(j["suggested_lr"].get<double>(), 0);
  // xfer train takes it too, without --out.
  auto t = run_xfer("--threads 1 --quiet train --data '" + dst_ +
                    "' --arch cnn --arch-options '{\"widths\":[8],\"hidden\":16}' --batch-size 16 --lr-find "
                    "--lr-find-steps 15");
  ASSERT_EQ(t.exit_code, 0) << t.err;
  EXPECT_NE(t.out.find("suggested lr"), std::string::npos) << t.out;
}

TEST_F(CliFinetuneTest, BadCombinationsAreUsageErrors) {
  struct Case {
    std::string extra, needle;
  };
  for (const auto& c : std::vector<Case>{{"lp-ft --lp-epochs 4", "--lp-epochs must be in [1, 3]"},
                                         {"wild", "unknown strategy 'wild'"},
                                         {"lora:0", "lora:R needs R"},
                                         {"l2-sp:-1", "ALPHA >= 0"},
                                         {"partial:9", "backbone stages"},
                                         {"full --bn-mode sometimes", "--bn-mode"},
                                         {"full --layer-decay 2", "--layer-decay"},
                                         {"full --resume '" + dir_.file("none") + "'", "no such checkpoint"},
                                         {"full --no-checkpoint --checkpoint-every 3", "--no-checkpoint"},
                                         {"linear-probe --lp-epochs 2", "--lp-epochs"},
                                         {"full --head keep", "--head keep"},
                                         {"full --probe-solver lbfgs", "linear-probe and lp-ft"},
                                         {"linear-probe --probe-solver sgd", "--probe-solver"},
                                         {"linear-probe --probe-l2 0.1", "--probe-solver lbfgs"},
                                         {"linear-probe --probe-solver lbfgs --head-type cosine --probe-l2 0.1",
                                          "--probe-l2 applies to a linear head"},
                                         {"linear-probe --probe-solver lbfgs --probe-iters 0", "--probe-iters"},
                                         {"linear-probe --probe-solver lbfgs --probe-l2 -1", "--probe-l2"},
                                         {"full --lr-find-steps 20", "need --lr-find"},
                                         {"full --lr-find --lr-find-range 1e-3", "expected START,END"},
                                         {"full --lr-find --lr-find-range 1,0.1", "0 < START < END"},
                                         {"full --lr-find --lr-find-steps 1", "--lr-find-steps"},
                                         {"full --lr-find --dry-run", "--lr-find trains nothing to keep"},
                                         {"linear-probe --probe-solver lbfgs --lr-find", "no learning rate to find"},
                                         {"full --lr-find", "drop --out"},
                                         {"full --val-fraction 0.2 --val-data '" + dst_ + "'", "alternatives"},
                                         {"full --ft-lr-scale 0.5", "--ft-lr-scale only applies to --strategy lp-ft"}}) {
    auto r = run_xfer(args(c.extra, dir_.file("m")));
    EXPECT_EQ(r.exit_code, 2) << c.extra << ": " << r.err;
    EXPECT_TRUE(one_error_line(r, c.needle)) << c.extra;
    EXPECT_TRUE(no_output(dir_.path(), "m")) << c.extra;
  }
  // lora on a TorchScript source has no layers to adapt.
  auto r = run_xfer("--quiet finetune --torchscript '" + dir_.file("x.pt") +
                    "' --mean 0.5 --std 0.5 --data '" + dst_ + "' --strategy lora:4 --out '" + dir_.file("m") + "'");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(one_error_line(r, "TorchScript"));
}

TEST_F(CliFinetuneTest, ResumeOfADifferentRecipeIsRefused) {
  auto r = run_xfer(args("full", dir_.file("m")) + " --keep-checkpoint");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  fs::remove_all(dir_.file("m"));
  r = run_xfer(args("full", dir_.file("m")) + " --lr 0.01 --resume '" + dir_.file("m.ckpt") + "'");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(one_error_line(r, "different recipe: lr 0.01"));
  EXPECT_FALSE(fs::exists(dir_.file("m")));
  // Without --resume, the stale checkpoint is named.
  r = run_xfer(args("full", dir_.file("m")));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(one_error_line(r, "--resume"));
}

// Runs xfer with the arguments and SIGKILLs it after `delay_ms` (if still
// running); returns whether it was killed.
bool run_and_kill(const std::string& args, int delay_ms) {
  const auto t0 = std::chrono::steady_clock::now();
  return xfer::testing::run_xfer_until(
      args, [&] { return std::chrono::steady_clock::now() - t0 >= std::chrono::milliseconds(delay_ms); });
}

// Ten SIGKILLs at random moments (five per strategy, counting only runs that
// were still going): every file left is complete, and a rerun (a resume when
// a checkpoint exists) ends with the same weights as an uninterrupted run.
TEST_F(CliFinetuneTest, SigkillAtRandomMomentsThenResumeGivesTheSameWeights) {
  for (const char* strategy : {"full", "lp-ft"}) {
    const std::string ref = dir_.file(std::string("ref-") + strategy);
    auto t0 = std::chrono::steady_clock::now();
    auto r = run_xfer(args(strategy, ref));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const int total_ms = static_cast<int>(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    const std::string expected = read_json(ref + "/card.json")["id"];
    std::mt19937 rng(42);
    int kills = 0;
    for (int trial = 0; kills < 5 && trial < 40; ++trial) {
      const std::string out = dir_.file(std::string("kill-") + strategy + std::to_string(trial));
      const int delay = 20 + static_cast<int>(rng() % std::max(total_ms, 100));
      if (!run_and_kill(args(strategy, out) + " --checkpoint-every 3", delay)) continue;
      ++kills;
      EXPECT_TRUE(xfer::testing::files_complete(dir_.path())) << strategy << " killed after " << delay << " ms";
      if (fs::exists(out)) EXPECT_EQ(read_json(out + "/card.json")["id"], expected);
      std::string again = args(strategy, out) + " --checkpoint-every 3";
      if (fs::exists(out + ".ckpt/checkpoint.safetensors")) again += " --resume '" + out + ".ckpt'";
      else fs::remove_all(out + ".ckpt");
      if (fs::exists(out) && again.find("--resume") == std::string::npos) continue;
      r = run_xfer(again);
      ASSERT_EQ(r.exit_code, 0) << "killed after " << delay << " ms: " << r.err;
      EXPECT_EQ(read_json(out + "/card.json")["id"], expected)
          << strategy << " killed after " << delay << " of " << total_ms << " ms";
      EXPECT_FALSE(fs::exists(out + ".ckpt"));
    }
    EXPECT_EQ(kills, 5) << strategy << ": runs ended before the kill";
  }
}

TEST_F(CliTest, AttackListsAttacksAndWritesASet) {
  auto l = run_xfer("attack --list");
  ASSERT_EQ(l.exit_code, 0) << l.err;
  for (const char* a : {"fgsm", "bim", "pgd", "mi-fgsm", "ni-fgsm", "vmi-fgsm", "vni-fgsm", "feature", "di",
                        "ti", "si", "admix", "--eps", "--momentum", "--ti-kernel"}) {
    EXPECT_NE(l.out.find(a), std::string::npos) << a;
  }
  auto t = run_xfer("--quiet train --data '" + spec_ + "' --arch cnn --arch-options '{\"widths\":[4,8]}' " +
                    "--epochs 1 --batch-size 16 --out '" + out() + "'");
  ASSERT_EQ(t.exit_code, 0) << t.err;
  const std::string adv = tmp_.file("adv");
  auto r = run_xfer("--quiet attack --surrogate '" + out() + "' --data '" + spec_ +
                    "' --attack mi-fgsm+di+ti --eps 8/255 --steps 3 --out '" + adv + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("white-box success"), std::string::npos) << r.out;
  auto info = read_json(adv + "/attack.json");
  EXPECT_DOUBLE_EQ(info["options"]["eps"].get<double>(), 8.0 / 255.0);
  EXPECT_EQ(info["options"]["steps"], 3);
  EXPECT_TRUE(fs::exists(adv + "/preview.png"));
  // pgd starts at a random point unless told otherwise, either way round.
  for (const char* flag : {"", " --no-random-start", " --random-start=false"}) {
    const std::string p = tmp_.file("pgd");
    auto g = run_xfer("--quiet attack --surrogate '" + out() + "' --data '" + spec_ +
                      "' --attack pgd --steps 2 --limit 6 --force --out '" + p + "'" + flag);
    ASSERT_EQ(g.exit_code, 0) << flag << ": " << g.err;
    EXPECT_EQ(read_json(p + "/attack.json")["options"]["random_start"].get<bool>(), *flag == '\0') << flag;
  }
  for (const auto& [flags, needle] : std::vector<std::pair<std::string, std::string>>{
           {"--eps 0", "--eps"}, {"--eps abc", "--eps"}, {"--steps 0", "--steps"},
           {"--attack pgd+fgsm", "more than one"}, {"--target sideways", "--target"},
           {"--attack fgsm --random-start", "fgsm fixes random_start"}}) {
    auto bad = run_xfer("--quiet attack --surrogate '" + out() + "' --data '" + spec_ + "' " + flags +
                        " --out '" + tmp_.file("bad") + "'");
    EXPECT_EQ(bad.exit_code, 2) << flags << ": " << bad.err;
    EXPECT_TRUE(one_error_line(bad, needle)) << flags;
    EXPECT_TRUE(no_output(tmp_.path(), "bad")) << flags;
  }
}

}  // namespace
TEST_F(CliTest, TransferAndAuditRunAndRefuseBadFlags) {
  auto t = run_xfer("--quiet train --data '" + spec_ + "' --arch cnn --arch-options '{\"widths\":[4,8]}' " +
                    "--epochs 1 --batch-size 16 --out '" + out() + "'");
  ASSERT_EQ(t.exit_code, 0) << t.err;
  auto f = run_xfer("--quiet finetune --from '" + out() + "' --data '" + spec_ +
                    "' --strategy linear-probe --epochs 1 --batch-size 16 --no-checkpoint --out '" +
                    tmp_.file("child") + "'");
  ASSERT_EQ(f.exit_code, 0) << f.err;
  const std::string m = tmp_.file("matrix");
  auto r = run_xfer("--quiet transfer --sources '" + out() + "' --targets '" + out() + "," + tmp_.file("child") +
                    "' --data '" + spec_ + "' --attack fgsm,pgd --eps 0.05,8/255 --steps 2 --out '" + m + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("fgsm, eps 0.0500"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("crafted 4 adversarial sets"), std::string::npos) << r.out;
  for (const char* file : {"matrix.json", "matrix.csv", "heatmap.svg"}) EXPECT_TRUE(fs::exists(m + "/" + file));
  const std::string a = tmp_.file("audit");
  auto au = run_xfer("--quiet audit --target '" + tmp_.file("child") + "' --proxies '" + out() + "' --data '" +
                     spec_ + "' --attack fgsm --steps 2 --out '" + a + "'");
  ASSERT_EQ(au.exit_code, 0) << au.err;
  EXPECT_NE(au.out.find("Most dangerous proxy"), std::string::npos) << au.out;
  EXPECT_NE(au.out.find("(ancestor)"), std::string::npos) << au.out;
  for (const auto& [args, needle] : std::vector<std::pair<std::string, std::string>>{
           {"transfer --sources '" + out() + "' --targets '" + out() + "' --data '" + spec_ + "' --eps 0.1,abc",
            "--eps"},
           {"transfer --sources '" + out() + "' --targets '" + out() + "' --data '" + spec_ + "' --attack pgd,",
            "attack"},
           {"transfer --sources '" + out() + "+' --targets '" + out() + "' --data '" + spec_ + "'", "A+B"},
           {"audit --target '" + out() + "' --data '" + spec_ + "'", "--proxies"},
           {"audit --target '" + out() + "' --proxies '" + out() + "' --data '" + spec_ + "' --steps 0",
            "--steps"}}) {
    auto bad = run_xfer("--quiet " + args + " --out '" + tmp_.file("bad") + "'");
    EXPECT_EQ(bad.exit_code, 2) << args << ": " << bad.err;
    EXPECT_TRUE(one_error_line(bad, needle)) << args << ": " << bad.err;
    EXPECT_TRUE(no_output(tmp_.path(), "bad")) << args;
  }
}

}  // namespace xfer

namespace xfer {
namespace {

// One entry of the bad-input catalogue (docs/bad-inputs.md).
struct BadInput {
  std::string id;      ///< the row's name in docs/bad-inputs.md
  std::string what;    ///< the input, in words
  std::string args;    ///< the xfer command line
  int code;            ///< expected exit code: 2 usage, 1 bad data/file
  std::string needle;  ///< the one error line must mention it
  std::string prefix;  ///< shell set-up run before xfer (e.g. a file-size limit)
};

// Runs xfer after a shell prefix (run_xfer has no place for one).
class CliCatalogueTest : public CliTest {};

// Every case: the expected exit code, exactly one "xfer: error:" line naming
// the culprit, and nothing named result* left behind (no partial output).
// XFER_CATALOGUE_MD=FILE writes the table of docs/bad-inputs.md from the run.
TEST_F(CliCatalogueTest, EveryBadInputGivesOneLineAndNoPartialOutput) {
  const std::string t = tmp_.path();
  auto q = [](const std::string& s) { return "'" + s + "'"; };
  ASSERT_EQ(run_xfer(train_args(spec_)).exit_code, 0);
  const std::string model = out(), data = q(spec_), images = tmp_.file("images.gz"), labels = tmp_.file("labels.gz");
  ASSERT_EQ(run_xfer("--quiet train --data " + data + " --arch mlp --arch-options '{\"hidden\":[8]}' --epochs 1 "
                     "--batch-size 16 --objective simclr --proj-dim 4 --out " + q(tmp_.file("encoder")))
                .exit_code,
            0);
  const std::string res = tmp_.file("result");
  const std::string o = " --out " + q(res);
  auto read = [](const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  auto copy_model = [&](const std::string& name) {
    fs::copy(model, tmp_.file(name), fs::copy_options::recursive);
    return tmp_.file(name);
  };
  // Data files.
  const std::string gz = read(images);
  std::ofstream(tmp_.file("trunc.gz"), std::ios::binary) << gz.substr(0, gz.size() / 2);
  std::string bad = gz;
  for (size_t i = 20; i < bad.size() - 8; i += 7) bad[i] = static_cast<char>(bad[i] ^ 0x5a);
  std::ofstream(tmp_.file("corrupt.gz"), std::ios::binary) << bad;
  {
    std::string raw(16 + 4, '\0');
    raw[2] = 0x0d;
    raw[3] = 1;
    std::ofstream(tmp_.file("magic.idx"), std::ios::binary) << raw;
    // uint8, 3 dims, 100000 x 1000 x 1000 images (100 GB) in a 16-byte file.
    std::string huge = std::string("\0\0\x08\x03", 4) + std::string("\x00\x01\x86\xa0", 4) +
                       std::string("\x00\x00\x03\xe8", 4) + std::string("\x00\x00\x03\xe8", 4);
    std::ofstream(tmp_.file("huge.idx"), std::ios::binary) << huge;
    std::ofstream(tmp_.file("empty.idx"), std::ios::binary);
  }
  data::write_idx(tmp_.file("few-labels.gz"), torch::zeros({59}, torch::kUInt8));
  fs::create_directories(tmp_.file("imgs/cat"));
  std::ofstream(tmp_.file("imgs/cat/broken.png"), std::ios::binary) << "\x89PNG\r\n\x1a\nnot really";
  fs::create_directories(tmp_.file("jpgs/cat"));
  std::ofstream(tmp_.file("jpgs/cat/broken.jpg"), std::ios::binary) << "\xff\xd8\xff\xe0 truncated";
  fs::create_directories(tmp_.file("emptydir"));
  // Weights and model directories.
  std::string header = R"({"fc.weight":{"dtype":"F32","shape":[2],"data_offsets":[0,4000]}})";
  write_model_with_weights(tmp_.file("badoffset"), le64(header.size()) + header + std::string(8, '\0'));
  write_model_with_weights(tmp_.file("bighead"), le64(200'000'000) + "{}");
  write_model_with_weights(tmp_.file("notjson"), le64(5) + "abcde");
  std::string dtype = R"({"fc.weight":{"dtype":"Q7","shape":[2],"data_offsets":[0,8]}})";
  write_model_with_weights(tmp_.file("baddtype"), le64(dtype.size()) + dtype + std::string(8, '\0'));
  std::string overflow = R"({"fc.weight":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}})";
  write_model_with_weights(tmp_.file("overflow"), le64(overflow.size()) + overflow + std::string(8, '\0'));
  const std::string tampered = copy_model("tampered");
  {
    std::fstream f(tampered + "/model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-1, std::ios::end);
    f.put('\x7f');
  }
  const std::string noconfig = copy_model("noconfig");
  fs::remove(noconfig + "/config.json");
  const std::string badconfig = copy_model("badconfig");
  std::ofstream(badconfig + "/config.json") << "{\"arch\": \"mlp\", ";
  const std::string zeroclasses = copy_model("zeroclasses");
  {
    auto c = read_json(zeroclasses + "/config.json");
    c["num_classes"] = 0;
    write_json(zeroclasses + "/config.json", c);
  }
  const std::string wrongarch = copy_model("wrongarch");
  {
    auto c = read_json(wrongarch + "/config.json");
    c["arch_options"] = {{"hidden", {7}}};  // smaller than the weights: the strict load refuses it
    write_json(wrongarch + "/config.json", c);
  }
  const std::string hugeconfig = copy_model("hugeconfig");
  {
    auto c = read_json(hugeconfig + "/config.json");
    c["arch_options"] = {{"hidden", {int64_t(1) << 31}}};  // 6.7 TB of weights
    write_json(hugeconfig + "/config.json", c);
  }
  const std::string badhead = copy_model("badhead");
  {
    auto c = read_json(badhead + "/config.json");
    c["head"] = {{"kind", "arcface"}, {"scale", 10}};
    write_json(badhead + "/config.json", c);
  }
  const std::string noid = copy_model("noid");
  {
    auto c = read_json(noid + "/card.json");
    c.erase("id");
    write_json(noid + "/card.json", c);
  }
  std::ofstream(tmp_.file("garbage.pt"), std::ios::binary) << "PK\x03\x04 not a zip at all";
  std::ofstream(tmp_.file("study.json")) << "{\"preset\": ";
  std::ofstream(tmp_.file("study-quick.json")) << "{\"preset\": \"quick\"}";
  std::ofstream(tmp_.file("study-seeds.json")) << "{\"preset\": \"quick\", \"seeds\": [0, 1, 0]}";
  std::ofstream(tmp_.file("afile")) << "x";
  fs::create_directories(tmp_.file("existing"));
  const std::string attack = "--quiet attack --surrogate " + q(model) + " --data " + data + o;
  const std::string train = "--quiet train --data " + data + " --arch mlp --epochs 1" + o;
  const std::string finetune = "--quiet finetune --from " + q(model) + " --data " + data + " --epochs 1" + o;
  std::vector<BadInput> cases = {
      // Data files and SPECs.
      {"idx-truncated-gzip", "IDX images cut in half (gzip stream ends early)",
       "--quiet train --data " + q("idx:" + tmp_.file("trunc.gz") + "," + labels) + " --arch mlp" + o, 1, "trunc.gz"},
      {"idx-corrupt-gzip", "IDX gzip with flipped bytes (CRC/inflate error)",
       "--quiet train --data " + q("idx:" + tmp_.file("corrupt.gz") + "," + labels) + " --arch mlp" + o, 1, "corrupt.gz"},
      {"idx-bad-magic", "IDX file whose magic says float elements",
       "--quiet train --data " + q("idx:" + images + "," + tmp_.file("magic.idx")) + " --arch mlp" + o, 1, "magic.idx"},
      {"idx-huge-dims", "IDX header claiming 100 GB of images in a 16-byte file",
       "--quiet train --data " + q("idx:" + tmp_.file("huge.idx") + "," + labels) + " --arch mlp" + o, 1, "huge.idx"},
      {"idx-empty-file", "empty IDX file", "--quiet train --data " + q("idx:" + tmp_.file("empty.idx") + "," + labels) +
       " --arch mlp" + o, 1, "empty.idx"},
      {"idx-count-mismatch", "59 labels for 60 images",
       "--quiet train --data " + q("idx:" + images + "," + tmp_.file("few-labels.gz")) + " --arch mlp" + o, 1, "few-labels.gz"},
      {"idx-missing-file", "IDX path that does not exist",
       "--quiet train --data " + q("idx:" + tmp_.file("nope.gz") + "," + labels) + " --arch mlp" + o, 1, "nope.gz"},
      {"folder-missing", "image folder that does not exist",
       "--quiet train --data " + q("folder:" + tmp_.file("nodir")) + " --arch mlp" + o, 1, "nodir"},
      {"folder-empty", "image folder without class folders",
       "--quiet train --data " + q("folder:" + tmp_.file("emptydir")) + " --arch mlp" + o, 1, "emptydir"},
      {"png-corrupt", "PNG with a valid signature and garbage after it",
       "--quiet train --data " + q("folder:" + tmp_.file("imgs")) + " --arch mlp" + o, 1, "broken.png"},
      {"jpeg-truncated", "JPEG cut after its first marker",
       "--quiet train --data " + q("folder:" + tmp_.file("jpgs")) + " --arch mlp" + o, 1, "broken.jpg"},
      {"spec-unknown-source", "SPEC naming no known dataset", "--quiet train --data nosuchdata:train --arch mlp" + o, 2,
       "nosuchdata"},
      {"spec-missing-class", "SPEC asking for a class the data lacks",
       "--quiet train --data " + q(spec_ + ":classes=0,5") + " --arch mlp" + o, 1, "5"},
      {"spec-empty-class-list", "SPEC with an empty class list",
       "--quiet train --data " + q(spec_ + ":classes=") + " --arch mlp" + o, 2, "classes"},
      {"spec-too-many-shots", "more shots than a class has (20 per class)",
       "--quiet train --data " + q(spec_ + ":shots=21") + " --arch mlp" + o, 1, "21"},
      {"spec-bad-shots", "shots that are not a number", "--quiet train --data " + q(spec_ + ":shots=ten") + " --arch mlp" + o,
       2, "ten"},
      {"spec-zero-shots", "zero shots per class", "--quiet train --data " + q(spec_ + ":shots=0") + " --arch mlp" + o, 2,
       "shots"},
      {"spec-exclude-no-seeds", "exclude= without the seeds of the draws to remove",
       "--quiet train --data " + q(spec_ + ":exclude=5") + " --arch mlp" + o, 2, "exclude=K@SEEDS"},
      {"spec-exclude-leaves-too-few", "an exclusion leaving fewer samples than the shots asked for",
       "--quiet train --data " + q(spec_ + ":exclude=10@0:shots=11") + " --arch mlp" + o, 1, "fewer than the 11 shots"},
      // Weights, model directories, TorchScript.
      {"safetensors-offset-past-end", "tensor data offsets beyond the file",
       "--quiet eval --model " + q(tmp_.file("badoffset")) + " --data " + data + " --json " + q(res + ".json"), 1,
       "past the end"},
      {"safetensors-header-over-limit", "header length of 200 MB",
       "--quiet eval --model " + q(tmp_.file("bighead")) + " --data " + data + " --json " + q(res + ".json"), 1, "limit"},
      {"safetensors-header-not-json", "header that is not JSON",
       "--quiet eval --model " + q(tmp_.file("notjson")) + " --data " + data + " --json " + q(res + ".json"), 1,
       "model.safetensors"},
      {"safetensors-unknown-dtype", "dtype Q7",
       "--quiet eval --model " + q(tmp_.file("baddtype")) + " --data " + data + " --json " + q(res + ".json"), 1, "Q7"},
      {"safetensors-shape-overflow", "shape whose element count overflows 64 bits",
       "--quiet eval --model " + q(tmp_.file("overflow")) + " --data " + data + " --json " + q(res + ".json"), 1,
       "model.safetensors"},
      {"card-hash-mismatch", "weights changed after the card was written (sha256 differs)",
       "--quiet eval --model " + q(tampered) + " --data " + data + " --json " + q(res + ".json"), 1, "sha256"},
      {"model-dir-no-config", "model directory without config.json",
       "--quiet eval --model " + q(noconfig) + " --data " + data + " --json " + q(res + ".json"), 1, "config.json"},
      {"config-truncated-json", "config.json cut mid-object",
       "--quiet eval --model " + q(badconfig) + " --data " + data + " --json " + q(res + ".json"), 1, "config.json"},
      {"config-zero-classes", "config.json with num_classes 0",
       "--quiet eval --model " + q(zeroclasses) + " --data " + data + " --json " + q(res + ".json"), 1, "num_classes"},
      {"config-unknown-head", "config.json with head kind arcface",
       "--quiet eval --model " + q(badhead) + " --data " + data + " --json " + q(res + ".json"), 1, "head.kind"},
      {"config-weights-mismatch", "config.json describing other layer sizes than the weights",
       "--quiet eval --model " + q(wrongarch) + " --data " + data + " --json " + q(res + ".json"), 1, "model.safetensors"},
      {"config-larger-than-weights", "config.json describing 2^31 hidden units (refused before building)",
       "--quiet eval --model " + q(hugeconfig) + " --data " + data + " --json " + q(res + ".json"), 1,
       "values but model.safetensors holds"},
      {"card-without-id", "card.json without its id",
       "--quiet eval --model " + q(noid) + " --data " + data + " --json " + q(res + ".json"), 1, "card.json"},
      {"weights-wrong-arch", "--weights file of another architecture",
       "--quiet eval --weights " + q(model + "/model.safetensors") + " --arch cnn --data " + data +
           " --json " + q(res + ".json"),
       1, "model.safetensors"},
      {"torchscript-garbage", "--torchscript file that is not a TorchScript archive",
       "--quiet eval --torchscript " + q(tmp_.file("garbage.pt")) + " --data " + data + " --json " +
           q(res + ".json"),
       1, "garbage.pt"},
      {"embedding-as-classifier", "a self-supervised encoder given to eval",
       "--quiet eval --model " + q(tmp_.file("encoder")) + " --data " + data + " --json " + q(res + ".json"), 2,
       "xfer finetune --from"},
      // Configs and options.
      {"study-config-truncated", "study --config JSON cut mid-object",
       "--quiet study --config " + q(tmp_.file("study.json")) + o, 1, "study.json"},
      {"study-preset-conflict", "study --preset full with a --config of preset quick",
       "--quiet study --config " + q(tmp_.file("study-quick.json")) + " --preset full" + o, 2,
       "names preset \"quick\""},
      {"study-seed-repeated", "study config listing a seed twice",
       "--quiet study --config " + q(tmp_.file("study-seeds.json")) + o, 2, "seeds lists 0 twice"},
      {"arch-options-not-json", "--arch-options that is not JSON", train + " --arch-options '{hidden'", 2, "--arch-options"},
      {"arch-options-unknown-key", "--arch-options with a key the architecture lacks",
       train + " --arch-options '{\"bogus\":1}'", 2, "bogus"},
      {"arch-unknown", "unknown --arch", "--quiet train --data " + data + " --arch nosucharch" + o, 2, "nosucharch"},
      {"epochs-zero", "--epochs 0", "--quiet train --data " + data + " --arch mlp --epochs 0" + o, 2, "--epochs"},
      {"batch-size-zero", "--batch-size 0", train + " --batch-size 0", 2, "--batch-size"},
      {"lr-negative", "--lr -1", train + " --lr -1", 2, "--lr"},
      {"lr-nan", "--lr nan", train + " --lr nan", 2, "--lr"},
      {"val-fraction-over-one", "--val-fraction 1.5", train + " --val-fraction 1.5", 2, "--val-fraction"},
      {"simclr-with-adv-train", "--objective simclr with --adv-train", train + " --objective simclr --adv-train pgd:0.1", 2,
       "--adv-train"},
      {"simclr-zero-temperature", "--temperature 0", train + " --objective simclr --temperature 0", 2, "--temperature"},
      {"threads-negative", "--threads -2 (0 means one per core)", "--threads -2 " + train, 2, "--threads"},
      {"eps-nan", "--eps nan", attack + " --eps nan", 2, "eps"},
      {"eps-negative", "--eps -0.1", attack + " --eps -0.1", 2, "eps"},
      {"eps-over-one", "--eps 2 (images are in [0, 1])", attack + " --eps 2", 2, "eps"},
      {"steps-zero", "--steps 0", attack + " --steps 0", 2, "steps"},
      {"norm-unknown", "--norm l3", attack + " --norm l3", 2, "l3"},
      {"target-out-of-range", "--target label:99 for 3 classes", attack + " --target label:99", 2, "99"},
      {"attack-unknown", "--attack nosuch", attack + " --attack nosuch", 2, "nosuch"},
      {"fgsm-steps", "--attack fgsm --steps 10 (one step by definition; bim iterates)",
       attack + " --attack fgsm --steps 10", 2, "bim"},
      {"strategy-unknown", "--strategy nosuch", finetune + " --strategy nosuch", 2, "nosuch"},
      {"strategy-lora-rank-zero", "--strategy lora:0", finetune + " --strategy lora:0", 2, "lora"},
      {"finetune-shots-zero", "--shots 0", finetune + " --strategy full --shots 0", 2, "shots"},
      {"finetune-shots-over-class", "--shots 21 with 20 images per class", finetune + " --strategy full --shots 21", 1,
       "21"},
      {"head-type-unknown", "--head-type arcface", finetune + " --strategy full --head-type arcface", 2,
       "--head-type"},
      {"head-type-bad-scale", "--head-type cosine:0", train + " --head-type cosine:0", 2, "--head-type"},
      {"head-type-with-keep", "--head-type cosine with --head keep",
       finetune + " --strategy full --head keep --head-type cosine", 2, "--head-type"},
      {"probe-solver-with-full", "--probe-solver lbfgs with --strategy full",
       finetune + " --strategy full --probe-solver lbfgs", 2, "--probe-solver"},
      {"probe-l2-on-cosine", "--probe-l2 0.1 for an L-BFGS cosine head",
       finetune + " --strategy linear-probe --probe-solver lbfgs --head-type cosine --probe-l2 0.1", 2, "--probe-l2"},
      {"head-keep-class-mismatch", "--head keep onto 2 classes",
       "--quiet finetune --from " + q(model) + " --data " + q(spec_ + ":classes=0,1") + " --strategy full --head keep" + o,
       2, "--head keep"},
      {"resume-missing", "--resume of a directory that does not exist", train + " --resume " + q(tmp_.file("nockpt")), 2,
       "--resume"},
      {"resume-not-a-checkpoint", "--resume of a model directory (it holds no checkpoint)",
       finetune + " --resume " + q(model), 2, "holds no xfer checkpoint"},
      {"checkpoint-dir-in-out", "--checkpoint-dir inside --out", train + " --checkpoint-dir " + q(res + "/ckpt"), 2,
       "--checkpoint-dir"},
      {"dist-timeout-zero", "--dist-timeout 0", "--dist-timeout 0 " + train, 2, "--dist-timeout"},
      {"unknown-command", "a command xfer does not have", "frobnicate", 2, "frobnicate"},
      {"unknown-global-option", "an option xfer does not have, before the command", "--bogus train", 2,
       "unknown option '--bogus' before the command"},
      // Outputs.
      {"out-exists", "--out naming an existing directory (no --force)",
       "--quiet train --data " + data + " --arch mlp --epochs 1 --out " + q(tmp_.file("existing")), 1, "--force"},
      {"out-under-a-file", "--out whose parent is a regular file",
       "--quiet train --data " + data + " --arch mlp --epochs 1 --out " + q(tmp_.file("afile") + "/result"), 1, "afile"},
      {"disk-full", "writing past a 64 KB file-size limit (ulimit -f; EFBIG as on a full disk)",
       "--quiet train --data " + data + " --arch mlp --arch-options '{\"hidden\":[512]}' --epochs 1 --no-checkpoint" + o,
       1, "result", "ulimit -f 128; trap '' XFSZ"},
  };
  std::ostringstream md;
  std::set<std::string> ids;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.id);
    EXPECT_TRUE(ids.insert(c.id).second) << "duplicate id";
    const auto r = run_xfer(c.args, "", c.prefix);
    EXPECT_EQ(r.exit_code, c.code) << c.args << "\n" << r.err;
    EXPECT_TRUE(one_error_line(r, c.needle)) << c.args;
    EXPECT_TRUE(no_output(t, "result")) << c.args;
    fs::remove_all(res);  // a failed case must not spoil the next ones
    // The line for the docs: the temporary folder shown as ".", '|' escaped for markdown.
    const std::string raw = r.err.substr(0, r.err.find('\n'));
    std::string line;
    for (size_t i = 0; i < raw.size();) {
      if (raw.compare(i, t.size(), t) == 0) {
        line += ".";
        i += t.size();
      } else {
        if (raw[i] == '|') line += '\\';
        line += raw[i++];
      }
    }
    md << "| `" << c.id << "` | " << c.what << " | " << r.exit_code << " | `" << line << "` |\n";
  }
  EXPECT_GE(cases.size(), 40u);
  EXPECT_TRUE(fs::exists(model + "/card.json"));  // the good inputs were not harmed
  // The documented catalogue lists exactly these cases.
  const std::string doc = read(xfer::testing::source_dir() + "/docs/bad-inputs.md");
  for (const auto& c : cases) EXPECT_NE(doc.find("| `" + c.id + "` |"), std::string::npos) << c.id << " not in docs";
  if (const char* path = std::getenv("XFER_CATALOGUE_MD")) std::ofstream(path) << md.str();
}

}  // namespace
}  // namespace xfer
