#include "xfer/core/progress.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "support/support.h"

namespace xfer {
namespace {

class ProgressTest : public ::testing::Test {
 protected:
  void SetUp() override { saved_quiet_ = quiet(); }
  void TearDown() override { set_quiet(saved_quiet_); }
  bool saved_quiet_ = false;
};

TEST_F(ProgressTest, SetQuietToggles) {
  set_quiet(true);
  EXPECT_TRUE(quiet());
  set_quiet(false);
  EXPECT_FALSE(quiet());
}

TEST_F(ProgressTest, QuietDisables) {
  set_quiet(true);
  Progress p("quiet", 10);
  EXPECT_FALSE(p.enabled());
  p.advance(5, "status");
  p.done();
}

TEST_F(ProgressTest, EnabledOnlyWhenStderrIsATerminalAndNotQuiet) {
  set_quiet(false);
  Progress p("bar", 3);
  EXPECT_EQ(p.enabled(), ::isatty(STDERR_FILENO) == 1);
  set_quiet(true);
  Progress q("bar", 3);
  EXPECT_FALSE(q.enabled());
}

TEST_F(ProgressTest, DisabledWithoutTerminalDoesNotWrite) {
  // Redirect stderr to a pipe-less file: not a terminal, like under ctest.
  testing::TempDir dir;
  const std::string path = dir.file("stderr.txt");
  std::fflush(stderr);
  int saved = ::dup(STDERR_FILENO);
  ASSERT_GE(saved, 0);
  FILE* f = std::fopen(path.c_str(), "w");
  ASSERT_NE(f, nullptr);
  ::dup2(::fileno(f), STDERR_FILENO);
  set_quiet(false);
  bool enabled;
  {
    Progress p("epoch 1", 100);
    enabled = p.enabled();
    for (int i = 0; i < 150; ++i) p.advance(1, "loss 0.5");  // past the total
    p.advance(0);
    p.done();
    p.done();  // twice is harmless
  }
  {
    Progress p("unfinished", 10);
    p.advance(3);  // destroyed without done()
  }
  {
    Progress p("zero total", 0);
    p.advance(1);
    p.done();
  }
  std::fflush(stderr);
  ::dup2(saved, STDERR_FILENO);
  ::close(saved);
  std::fclose(f);
  EXPECT_FALSE(enabled);
  std::ifstream in(path);
  std::string written((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(written, "") << "a disabled progress bar wrote to stderr";
}

}  // namespace
}  // namespace xfer
