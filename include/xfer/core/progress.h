#pragma once
/// \file
/// A progress bar on stderr, drawn only when stderr is a terminal and not quiet.

#include <chrono>
#include <cstdint>
#include <string>

namespace xfer {

/// Global quiet switch (the CLI's --quiet).
void set_quiet(bool quiet);
bool quiet();

/// Progress over `total` units. Draws at most ~10 times a second; silent when
/// stderr is not a terminal or when quiet() is set.
class Progress {
 public:
  Progress(std::string label, int64_t total);
  ~Progress();
  /// Advances by n units, with an optional short status (e.g. "loss 0.41").
  void advance(int64_t n = 1, const std::string& status = "");
  /// Finishes the line.
  void done();
  /// Whether this bar draws at all.
  bool enabled() const { return enabled_; }

 private:
  void draw(bool final);
  std::string label_;
  int64_t total_;
  int64_t current_ = 0;
  std::string status_;
  bool enabled_;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace xfer
