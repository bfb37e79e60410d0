#pragma once
/// \file
/// Files: whole-file reads, atomic writes (temporary name, then rename) and
/// staged output directories that appear only when complete.

#include <string>

namespace xfer {

/// Reads a whole file. Throws xfer::Error naming the path if it cannot.
std::string read_file(const std::string& path);

/// Writes bytes to path atomically: a temporary file in the same folder,
/// fsync, then rename over path. On failure nothing is left at path or beside it.
void write_file_atomic(const std::string& path, const std::string& bytes);

/// Whether overwriting an existing output is allowed.
enum class Overwrite { kNo, kYes };

/// Fails early (before any work) when an output path cannot be created:
/// it exists and overwrite is kNo, or its parent folder is missing.
void check_output_path(const std::string& path, Overwrite overwrite);

/// Fails early when an output file cannot be written: its parent folder is
/// missing or not writable, or the path is a directory.
void check_output_path_file(const std::string& path);

/// An output directory built under a temporary name beside its final path and
/// renamed into place by commit(). If destroyed before commit() (an exception),
/// the temporary directory is removed, so a failed command leaves no output.
class StagedDir {
 public:
  /// Throws if final_path exists (unless overwrite is kYes) or its parent is not writable.
  explicit StagedDir(std::string final_path, Overwrite overwrite = Overwrite::kNo);
  ~StagedDir();
  StagedDir(const StagedDir&) = delete;
  StagedDir& operator=(const StagedDir&) = delete;

  /// The temporary directory to write into.
  const std::string& path() const { return tmp_path_; }
  /// Path of a file inside the temporary directory.
  std::string file(const std::string& name) const;
  /// Renames the temporary directory to the final path (replacing an old one if allowed).
  void commit();

 private:
  std::string final_path_;
  std::string tmp_path_;
  Overwrite overwrite_;
  bool committed_ = false;
};

/// An exclusive advisory lock (flock) on DIR/.lock, held while the object
/// lives, so two long-running jobs never write one output folder at once. The
/// kernel drops it when the process dies, even by SIGKILL: a later run is not
/// blocked by a stale lock. Throws xfer::Error naming the folder if another
/// process holds it.
class DirLock {
 public:
  explicit DirLock(const std::string& dir);
  ~DirLock();
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;

 private:
  int fd_ = -1;
};

/// Removes what killed writers left in dir: entries whose names carry the
/// temporary suffix of StagedDir / write_file_atomic (".tmp-"). Call it only
/// while holding the folder's DirLock. Returns how many were removed.
int remove_stale_staging(const std::string& dir);

}  // namespace xfer
