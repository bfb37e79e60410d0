#include "xfer/core/fs.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "support/errors.h"
#include "support/support.h"
#include "xfer/core/error.h"

namespace fs = std::filesystem;

namespace xfer {
namespace {

using xfer::testing::expect_error_containing;

std::set<std::string> list_dir(const std::string& dir) {
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.insert(e.path().filename().string());
  return names;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_raw(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}


std::string binary_payload() {
  std::string s;
  for (int i = 0; i < 1000; ++i) s.push_back(static_cast<char>(i * 37 % 256));
  s += std::string(3, '\0');
  return s;
}

TEST(FsTest, WriteFileAtomicWritesExactBytes) {
  testing::TempDir dir;
  const std::string path = dir.file("out.bin");
  const std::string bytes = binary_payload();
  write_file_atomic(path, bytes);
  EXPECT_EQ(slurp(path), bytes);
  EXPECT_EQ(fs::file_size(path), bytes.size());
  EXPECT_EQ(list_dir(dir.path()), std::set<std::string>{"out.bin"});
}

TEST(FsTest, WriteFileAtomicEmptyContent) {
  testing::TempDir dir;
  write_file_atomic(dir.file("empty"), "");
  EXPECT_TRUE(fs::is_regular_file(dir.file("empty")));
  EXPECT_EQ(fs::file_size(dir.file("empty")), 0u);
}

TEST(FsTest, WriteFileAtomicReplacesExistingAndLeavesNoTempFiles) {
  testing::TempDir dir;
  const std::string path = dir.file("data.txt");
  write_raw(path, std::string(5000, 'x'));  // longer than the new content
  write_raw(dir.file("neighbour.txt"), "keep me");
  write_file_atomic(path, "short");
  EXPECT_EQ(slurp(path), "short");
  write_file_atomic(path, "second");
  EXPECT_EQ(slurp(path), "second");
  EXPECT_EQ(slurp(dir.file("neighbour.txt")), "keep me");
  EXPECT_EQ(list_dir(dir.path()), (std::set<std::string>{"data.txt", "neighbour.txt"}));
}

TEST(FsTest, WriteFileAtomicMissingFolderThrowsNamingPath) {
  testing::TempDir dir;
  const std::string path = dir.file("no/such/folder/file.bin");
  expect_error_containing([&] { write_file_atomic(path, "abc"); }, {path});
  EXPECT_FALSE(fs::exists(path));
  EXPECT_TRUE(list_dir(dir.path()).empty());
}

TEST(FsTest, WriteFileAtomicOntoDirectoryFailsAndLeavesNoTemp) {
  testing::TempDir dir;
  fs::create_directory(dir.file("sub"));
  write_raw(dir.file("sub/inner"), "x");
  const std::string path = dir.file("sub");
  expect_error_containing([&] { write_file_atomic(path, "abc"); }, {path});
  EXPECT_TRUE(fs::is_directory(path));
  EXPECT_EQ(slurp(dir.file("sub/inner")), "x");
  EXPECT_EQ(list_dir(dir.path()), std::set<std::string>{"sub"});
}

TEST(FsTest, ReadFileRoundTrip) {
  testing::TempDir dir;
  const std::string bytes = binary_payload();
  write_raw(dir.file("a.bin"), bytes);
  EXPECT_EQ(read_file(dir.file("a.bin")), bytes);
  write_raw(dir.file("empty"), "");
  EXPECT_EQ(read_file(dir.file("empty")), "");
  write_file_atomic(dir.file("b.bin"), bytes);
  EXPECT_EQ(read_file(dir.file("b.bin")), bytes);
}

TEST(FsTest, ReadFileMissingThrowsNamingPath) {
  testing::TempDir dir;
  const std::string path = dir.file("missing.txt");
  expect_error_containing([&] { read_file(path); }, {path, "no such file"});
}

TEST(FsTest, ReadFileDirectoryThrows) {
  testing::TempDir dir;
  expect_error_containing([&] { read_file(dir.path()); }, {dir.path(), "directory"});
}

TEST(FsTest, ReadFileUnreadableThrows) {
  if (::geteuid() == 0) GTEST_SKIP() << "root can read files without permission";
  testing::TempDir dir;
  const std::string path = dir.file("secret");
  write_raw(path, "x");
  ::chmod(path.c_str(), 0);
  expect_error_containing([&] { read_file(path); }, {path});
}

TEST(FsTest, CheckOutputPathAcceptsNewPathInExistingFolder) {
  testing::TempDir dir;
  EXPECT_NO_THROW(check_output_path(dir.file("new_out"), Overwrite::kNo));
  EXPECT_NO_THROW(check_output_path(dir.file("new_out/"), Overwrite::kNo));
  EXPECT_FALSE(fs::exists(dir.file("new_out")));  // a check creates nothing
}

TEST(FsTest, CheckOutputPathExistingNeedsOverwrite) {
  testing::TempDir dir;
  fs::create_directory(dir.file("out"));
  expect_error_containing([&] { check_output_path(dir.file("out"), Overwrite::kNo); },
                          {dir.file("out"), "already exists"});
  expect_error_containing([&] { check_output_path(dir.file("out/"), Overwrite::kNo); },
                          {"already exists"});
  EXPECT_NO_THROW(check_output_path(dir.file("out"), Overwrite::kYes));
}

TEST(FsTest, CheckOutputPathExistingFileIsNotADirectory) {
  testing::TempDir dir;
  write_raw(dir.file("file"), "x");
  expect_error_containing([&] { check_output_path(dir.file("file"), Overwrite::kYes); },
                          {dir.file("file"), "not a directory"});
  expect_error_containing([&] { check_output_path(dir.file("file"), Overwrite::kNo); },
                          {"already exists"});
}

TEST(FsTest, CheckOutputPathMissingParentThrows) {
  testing::TempDir dir;
  const std::string path = dir.file("missing/out");
  expect_error_containing([&] { check_output_path(path, Overwrite::kYes); },
                          {path, "parent folder", dir.file("missing"), "does not exist"});
}

TEST(FsTest, CheckOutputPathEmptyThrows) {
  EXPECT_THROW(check_output_path("", Overwrite::kYes), Error);
}

TEST(FsTest, CheckOutputPathUnwritableParentThrows) {
  if (::geteuid() == 0) GTEST_SKIP() << "root bypasses permissions";
  testing::TempDir dir;
  fs::create_directory(dir.file("ro"));
  ::chmod(dir.file("ro").c_str(), 0555);
  expect_error_containing([&] { check_output_path(dir.file("ro/out"), Overwrite::kNo); },
                          {"not writable"});
  expect_error_containing([&] { check_output_path_file(dir.file("ro/out.bin")); },
                          {"not writable"});
  ::chmod(dir.file("ro").c_str(), 0755);
}

TEST(FsTest, CheckOutputPathFile) {
  testing::TempDir dir;
  EXPECT_NO_THROW(check_output_path_file(dir.file("out.json")));
  write_raw(dir.file("exists.json"), "{}");
  EXPECT_NO_THROW(check_output_path_file(dir.file("exists.json")));
  EXPECT_EQ(slurp(dir.file("exists.json")), "{}");  // a check does not touch the file
  fs::create_directory(dir.file("adir"));
  expect_error_containing([&] { check_output_path_file(dir.file("adir")); },
                          {dir.file("adir"), "is a directory"});
  const std::string missing = dir.file("nope/out.json");
  expect_error_containing([&] { check_output_path_file(missing); },
                          {missing, "parent folder", "does not exist"});
  EXPECT_THROW(check_output_path_file(""), Error);
}

TEST(FsTest, StagedDirCommitRenamesIntoPlace) {
  testing::TempDir dir;
  const std::string final_path = dir.file("model");
  {
    StagedDir staged(final_path);
    EXPECT_NE(staged.path(), final_path);
    EXPECT_TRUE(fs::is_directory(staged.path()));
    EXPECT_EQ(fs::path(staged.path()).parent_path(), fs::path(dir.path()));
    EXPECT_EQ(staged.file("a.txt"), staged.path() + "/a.txt");
    EXPECT_FALSE(fs::exists(final_path)) << "final path appeared before commit";
    write_file_atomic(staged.file("a.txt"), "hello");
    write_file_atomic(staged.file("b.txt"), "world");
    staged.commit();
    EXPECT_TRUE(fs::is_directory(final_path));
    EXPECT_FALSE(fs::exists(staged.path()));
    EXPECT_THROW(staged.commit(), Error);  // only once
  }
  // Destruction after commit keeps the output.
  EXPECT_EQ(list_dir(dir.path()), std::set<std::string>{"model"});
  EXPECT_EQ(list_dir(final_path), (std::set<std::string>{"a.txt", "b.txt"}));
  EXPECT_EQ(slurp(final_path + "/a.txt"), "hello");
  EXPECT_EQ(slurp(final_path + "/b.txt"), "world");
}

TEST(FsTest, StagedDirWithoutCommitLeavesNothing) {
  testing::TempDir dir;
  write_raw(dir.file("other"), "x");
  const auto before = list_dir(dir.path());
  {
    StagedDir staged(dir.file("out"));
    write_file_atomic(staged.file("w.bin"), std::string(100, 'w'));
    fs::create_directory(staged.file("nested"));
    write_file_atomic(staged.file("nested/n.txt"), "n");
    EXPECT_NE(list_dir(dir.path()), before);  // the staging folder exists meanwhile
  }
  EXPECT_EQ(list_dir(dir.path()), before);
}

TEST(FsTest, StagedDirCleansUpWhenExceptionUnwinds) {
  testing::TempDir dir;
  const auto before = list_dir(dir.path());
  try {
    StagedDir staged(dir.file("out"));
    write_file_atomic(staged.file("partial"), "p");
    throw Error("simulated failure");
  } catch (const Error&) {
  }
  EXPECT_EQ(list_dir(dir.path()), before);
  EXPECT_FALSE(fs::exists(dir.file("out")));
}

TEST(FsTest, StagedDirExistingTargetWithoutOverwriteThrows) {
  testing::TempDir dir;
  fs::create_directory(dir.file("out"));
  write_raw(dir.file("out/old.txt"), "old");
  const auto before = list_dir(dir.path());
  expect_error_containing([&] { StagedDir staged(dir.file("out")); },
                          {dir.file("out"), "already exists"});
  expect_error_containing([&] { StagedDir staged(dir.file("out"), Overwrite::kNo); },
                          {"already exists"});
  EXPECT_EQ(list_dir(dir.path()), before);
  EXPECT_EQ(slurp(dir.file("out/old.txt")), "old");
}

// Another run committing the same output while this one ran: without
// overwrite, this commit fails and leaves the other's output as it is.
TEST(FsTest, StagedDirCommitWithoutOverwriteDoesNotReplaceAnOutputThatAppeared) {
  testing::TempDir dir;
  {
    StagedDir mine(dir.file("out"), Overwrite::kNo);
    write_raw(mine.file("mine.txt"), "mine");
    fs::create_directory(dir.file("out"));
    write_raw(dir.file("out/theirs.txt"), "theirs");
    expect_error_containing([&] { mine.commit(); }, {dir.file("out"), "another process"});
  }
  EXPECT_EQ(slurp(dir.file("out/theirs.txt")), "theirs");
  EXPECT_FALSE(fs::exists(dir.file("out/mine.txt")));
  EXPECT_EQ(list_dir(dir.path()), (std::set<std::string>{"out"}));
}

TEST(FsTest, StagedDirOverwriteReplacesOldContents) {
  testing::TempDir dir;
  const std::string final_path = dir.file("out");
  fs::create_directory(final_path);
  write_raw(final_path + "/old.txt", "old");
  {
    StagedDir staged(final_path, Overwrite::kYes);
    write_file_atomic(staged.file("new.txt"), "new");
    // The old output stays intact until commit.
    EXPECT_EQ(slurp(final_path + "/old.txt"), "old");
    staged.commit();
  }
  EXPECT_EQ(list_dir(final_path), std::set<std::string>{"new.txt"});
  EXPECT_EQ(slurp(final_path + "/new.txt"), "new");
  EXPECT_EQ(list_dir(dir.path()), std::set<std::string>{"out"});  // no ".old" left behind
}

TEST(FsTest, StagedDirOverwriteWithoutCommitKeepsOldContents) {
  testing::TempDir dir;
  const std::string final_path = dir.file("out");
  fs::create_directory(final_path);
  write_raw(final_path + "/old.txt", "old");
  {
    StagedDir staged(final_path, Overwrite::kYes);
    write_file_atomic(staged.file("new.txt"), "new");
  }
  EXPECT_EQ(list_dir(dir.path()), std::set<std::string>{"out"});
  EXPECT_EQ(list_dir(final_path), std::set<std::string>{"old.txt"});
}

TEST(FsTest, StagedDirTrailingSlashAndMissingParent) {
  testing::TempDir dir;
  {
    StagedDir staged(dir.file("slash/"));
    write_file_atomic(staged.file("f"), "f");
    staged.commit();
  }
  EXPECT_EQ(slurp(dir.file("slash/f")), "f");
  EXPECT_EQ(list_dir(dir.path()), std::set<std::string>{"slash"});
  expect_error_containing([&] { StagedDir staged(dir.file("a/b")); }, {"does not exist"});
  EXPECT_FALSE(fs::exists(dir.file("a")));
}

TEST(FsTest, StagedDirFinalPathIsAFileThrows) {
  testing::TempDir dir;
  write_raw(dir.file("file"), "x");
  EXPECT_THROW(StagedDir staged(dir.file("file"), Overwrite::kYes), Error);
  EXPECT_EQ(slurp(dir.file("file")), "x");
  EXPECT_EQ(list_dir(dir.path()), std::set<std::string>{"file"});
}

TEST(FsTest, DirLockExcludesASecondHolderUntilReleased) {
  xfer::testing::TempDir dir;
  {
    DirLock first(dir.path());
    // flock conflicts between open file descriptions, even within one process.
    expect_error_containing([&] { DirLock second(dir.path()); }, {dir.path(), "in use by another xfer process"});
  }
  DirLock again(dir.path());  // released by the first one's destructor
  EXPECT_TRUE(fs::exists(dir.file(".lock")));
  expect_error_containing([] { DirLock l("/nonexistent/xfer-lock-dir"); }, {"/nonexistent/xfer-lock-dir", "cannot open"});
}

TEST(FsTest, RemoveStaleStagingRemovesOnlyTemporaries) {
  xfer::testing::TempDir dir;
  fs::create_directories(dir.file("model.tmp-123-4-5/sub"));
  std::ofstream(dir.file("results.json.tmp-9-8-7")) << "{";
  fs::create_directories(dir.file("model"));
  std::ofstream(dir.file("results.json")) << "{}";
  EXPECT_EQ(remove_stale_staging(dir.path()), 2);
  EXPECT_EQ(list_dir(dir.path()), (std::set<std::string>{"model", "results.json"}));
  EXPECT_EQ(remove_stale_staging(dir.path()), 0);
  EXPECT_EQ(remove_stale_staging(dir.file("missing")), 0);
}

}  // namespace
}  // namespace xfer
