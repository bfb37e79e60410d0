#include "xfer/core/fs.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <vector>

#include "xfer/core/error.h"

namespace fs = std::filesystem;

namespace xfer {
namespace {

std::string unique_suffix() {
  static std::atomic<uint64_t> counter{0};
  std::random_device rd;
  return str_cat(".tmp-", getpid(), "-", rd() % 100000, "-", counter++);
}

std::string parent_of(const std::string& path) {
  auto p = fs::path(path).parent_path();
  return p.empty() ? std::string(".") : p.string();
}

}  // namespace

std::string read_file(const std::string& path) {
  std::error_code ec;
  XFER_CHECK(fs::exists(path, ec), path, ": no such file");
  XFER_CHECK(!fs::is_directory(path, ec), path, ": is a directory, expected a file");
  std::ifstream in(path, std::ios::binary);
  XFER_CHECK(in, path, ": cannot open for reading (", std::strerror(errno), ")");
  std::string bytes;
  in.seekg(0, std::ios::end);
  auto size = in.tellg();
  XFER_CHECK(size >= 0, path, ": cannot determine size");
  bytes.resize(static_cast<size_t>(size));
  in.seekg(0);
  in.read(bytes.data(), size);
  XFER_CHECK(in.gcount() == size, path, ": short read");
  return bytes;
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  std::string tmp = path + unique_suffix();
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  XFER_CHECK(fd >= 0, path, ": cannot create (", std::strerror(errno), ")");
  const char* p = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      throw Error(str_cat(path, ": write failed (", std::strerror(err), ")"));
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  // Both calls always run: a failed fsync must not leak the descriptor.
  const int synced = ::fsync(fd);
  const int sync_err = errno;
  const int closed = ::close(fd);
  if (synced != 0 || closed != 0) {
    int err = synced != 0 ? sync_err : errno;
    ::unlink(tmp.c_str());
    throw Error(str_cat(path, ": write failed (", std::strerror(err), ")"));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    throw Error(str_cat(path, ": cannot rename into place (", std::strerror(err), ")"));
  }
}

void check_output_path(const std::string& path_in, Overwrite overwrite) {
  XFER_CHECK(!path_in.empty(), "output path is empty");
  std::string path = path_in;
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  std::error_code ec;
  if (fs::exists(path, ec)) {
    XFER_CHECK(overwrite == Overwrite::kYes, path,
               ": already exists (choose another output or pass --force)");
    XFER_CHECK(fs::is_directory(path, ec), path, ": exists and is not a directory");
  }
  std::string parent = parent_of(path);
  XFER_CHECK(fs::is_directory(parent, ec), path, ": parent folder ", parent,
             fs::exists(parent, ec) ? " is not a folder" : " does not exist");
  XFER_CHECK(::access(parent.c_str(), W_OK) == 0, path, ": parent folder ", parent,
             " is not writable");
}

void check_output_path_file(const std::string& path) {
  XFER_CHECK(!path.empty(), "output path is empty");
  std::error_code ec;
  XFER_CHECK(!fs::is_directory(path, ec), path, ": is a directory, expected a file path");
  std::string parent = parent_of(path);
  XFER_CHECK(fs::is_directory(parent, ec), path, ": parent folder ", parent,
             fs::exists(parent, ec) ? " is not a folder" : " does not exist");
  XFER_CHECK(::access(parent.c_str(), W_OK) == 0, path, ": parent folder ", parent,
             " is not writable");
}

StagedDir::StagedDir(std::string final_path, Overwrite overwrite)
    : final_path_(std::move(final_path)), overwrite_(overwrite) {
  check_output_path(final_path_, overwrite_);
  while (final_path_.size() > 1 && final_path_.back() == '/') final_path_.pop_back();
  tmp_path_ = final_path_ + unique_suffix();
  XFER_CHECK(::mkdir(tmp_path_.c_str(), 0755) == 0, final_path_, ": cannot create (",
             std::strerror(errno), ")");
}

StagedDir::~StagedDir() {
  if (!committed_) {
    std::error_code ec;
    fs::remove_all(tmp_path_, ec);
  }
}

std::string StagedDir::file(const std::string& name) const { return tmp_path_ + "/" + name; }

void StagedDir::commit() {
  XFER_CHECK(!committed_, final_path_, ": already committed");
  std::error_code ec;
  std::string old;
  // Without --force the output must still be absent: another run may have
  // committed it since check_output_path, and its output is not ours to replace.
  XFER_CHECK(overwrite_ == Overwrite::kYes || !fs::exists(final_path_, ec), final_path_,
             ": was created by another process while this one ran (choose another output or pass "
             "--force)");
  if (fs::exists(final_path_, ec)) {
    // Move the old directory aside first, so a crash never leaves neither.
    old = final_path_ + unique_suffix() + ".old";
    XFER_CHECK(::rename(final_path_.c_str(), old.c_str()) == 0, final_path_,
               ": cannot replace (", std::strerror(errno), ")");
  }
  if (::rename(tmp_path_.c_str(), final_path_.c_str()) != 0) {
    int err = errno;
    if (!old.empty()) ::rename(old.c_str(), final_path_.c_str());
    throw Error(str_cat(final_path_, ": cannot rename into place (", std::strerror(err), ")"));
  }
  committed_ = true;
  if (!old.empty()) fs::remove_all(old, ec);
  // Persist the rename.
  int dfd = ::open(parent_of(final_path_).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

DirLock::DirLock(const std::string& dir) {
  const std::string path = (fs::path(dir) / ".lock").string();
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  XFER_CHECK(fd_ >= 0, path, ": cannot open (", std::strerror(errno), ")");
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(fd_);
    fd_ = -1;
    XFER_CHECK(err != EWOULDBLOCK, dir, ": in use by another xfer process (", path, " is locked)");
    throw Error(str_cat(path, ": cannot lock (", std::strerror(err), ")"));
  }
}

DirLock::~DirLock() {
  if (fd_ >= 0) ::close(fd_);  // closing releases the flock
}

int remove_stale_staging(const std::string& dir) {
  std::error_code ec;
  int removed = 0;
  if (!fs::is_directory(dir, ec)) return 0;
  std::vector<fs::path> stale;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.path().filename().string().find(".tmp-") != std::string::npos) stale.push_back(e.path());
  }
  for (const auto& p : stale) {
    fs::remove_all(p, ec);
    XFER_CHECK(!ec, p.string(), ": cannot remove a stale temporary entry (", ec.message(), ")");
    ++removed;
  }
  return removed;
}

}  // namespace xfer
