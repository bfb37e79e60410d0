// Replays every fuzz corpus and every saved finding (fuzz/regressions) through
// the fuzz targets in the ordinary (gcc) build, so a fixed crash stays fixed
// without clang or libFuzzer. Also checks that the targets themselves can fail.
#include "targets.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "support/support.h"
#include "xfer/core/error.h"

namespace fs = std::filesystem;

namespace {

std::string read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

std::vector<fs::path> inputs(const std::string& kind, const std::string& target) {
  std::vector<fs::path> out;
  const fs::path dir = fs::path(xfer::testing::source_dir()) / "fuzz" / kind / target;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.is_regular_file()) out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

void run(const xfer::fuzz::Target& t, const std::string& bytes) {
  xfer::fuzz::run_one(t, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

// Calls the target function itself (not run_one): xfer::Error reaches the caller.
void call_target(const std::string& target, const fs::path& file) {
  const std::string bytes = read_bytes(file);
  xfer::fuzz::find_target(target).fn(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

class FuzzTargetsTest : public xfer::testing::SeededTest {};

TEST_F(FuzzTargetsTest, EveryTargetHasASeedCorpus) {
  ASSERT_EQ(xfer::fuzz::targets().size(), 7u);
  for (const auto& t : xfer::fuzz::targets()) {
    EXPECT_GE(inputs("corpus", t.name).size(), 4u) << t.name << ": run fuzz/make_corpus.py";
  }
  EXPECT_THROW(xfer::fuzz::find_target("nosuch"), std::invalid_argument);
}

TEST_F(FuzzTargetsTest, CorporaAndRegressionsRunWithoutFindings) {
  for (const auto& t : xfer::fuzz::targets()) {
    for (const char* kind : {"corpus", "regressions"}) {
      for (const auto& p : inputs(kind, t.name)) {
        const std::string bytes = read_bytes(p);
        EXPECT_NO_THROW(run(t, bytes)) << p;
      }
    }
  }
}

// The valid seeds really are accepted (a target that refused everything would
// fuzz nothing), and a broken input is refused with xfer::Error, not accepted.
TEST_F(FuzzTargetsTest, ValidSeedsPassAndBrokenOnesAreRefused) {
  const fs::path corpus = fs::path(xfer::testing::source_dir()) / "fuzz" / "corpus";
  for (const auto& [target, seed] :
       std::vector<std::pair<std::string, std::string>>{{"idx", "images-raw"},
                                                        {"idx", "labels-gz"},
                                                        {"idx", "images-deflated"},
                                                        {"safetensors", "mixed"},
                                                        {"model_dir", "valid"},
                                                        {"model_dir", "embedding"},
                                                        {"study_config", "full"},
                                                        {"data_spec", "spec2"},
                                                        {"eps", "eps2"},
                                                        {"image", "png-rgb-as-gray"}}) {
    EXPECT_NO_THROW(call_target(target, corpus / target / seed)) << target << "/" << seed;
  }
  for (const auto& [target, seed] :
       std::vector<std::pair<std::string, std::string>>{{"idx", "truncated"},
                                                        {"safetensors", "bad-offsets"},
                                                        {"model_dir", "wrong-sha"},
                                                        {"model_dir", "lora"},
                                                        {"study_config", "unknown-key"},
                                                        {"data_spec", "spec7"},
                                                        {"eps", "eps6"},
                                                        {"image", "png-truncated"},
                                                        {"image", "png-huge-header"},
                                                        // PNG and JPEG only (STBI_ONLY_*)
                                                        {"image", "bmp"}}) {
    EXPECT_THROW(call_target(target, corpus / target / seed), xfer::Error) << target << "/" << seed;
  }
}

// Found by fuzz/run image: a JPEG whose Huffman table lists more than 256
// codes made stb_image write past its table; xfer now refuses it first. The
// second file puts 0xff fill bytes before the start marker, which stb_image
// skips and the first check did not (found in review).
TEST_F(FuzzTargetsTest, JpegWithAnOversizedHuffmanTableIsRefused) {
  for (const char* name : {"jpeg-dht-over-256-codes", "jpeg-dht-over-256-codes-after-fill-bytes"}) {
    const fs::path file = fs::path(xfer::testing::source_dir()) / "fuzz" / "regressions" / "image" / name;
    ASSERT_FALSE(read_bytes(file).empty()) << name;
    try {
      call_target("image", file);
      FAIL() << name << ": accepted";
    } catch (const xfer::Error& e) {
      EXPECT_NE(std::string(e.what()).find("Huffman table"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
