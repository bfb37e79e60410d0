#include "xfer/core/progress.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>

#include "xfer/core/error.h"

namespace xfer {
namespace {
std::atomic<bool> g_quiet{false};
}

void set_quiet(bool q) { g_quiet = q; }
bool quiet() { return g_quiet; }

Progress::Progress(std::string label, int64_t total)
    : label_(std::move(label)),
      total_(total),
      enabled_(!g_quiet && ::isatty(STDERR_FILENO) == 1),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_ - std::chrono::seconds(1)) {}

Progress::~Progress() {
  if (!finished_ && enabled_ && current_ > 0) {
    // Leave the terminal on a fresh line if an exception unwound us.
    std::fputc('\n', stderr);
  }
}

void Progress::advance(int64_t n, const std::string& status) {
  current_ += n;
  if (!status.empty()) status_ = status;
  if (!enabled_) return;
  auto now = std::chrono::steady_clock::now();
  if (now - last_draw_ >= std::chrono::milliseconds(100) || current_ >= total_) {
    last_draw_ = now;
    draw(false);
  }
}

void Progress::done() {
  if (finished_) return;
  finished_ = true;
  if (!enabled_) return;
  draw(true);
  std::fputc('\n', stderr);
}

void Progress::draw(bool) {
  constexpr int kWidth = 30;
  double frac = total_ > 0 ? std::min(1.0, double(current_) / double(total_)) : 1.0;
  int filled = static_cast<int>(frac * kWidth);
  std::string bar(filled, '#');
  bar.append(kWidth - filled, '.');
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  double eta = frac > 0 ? secs / frac - secs : 0;
  std::fprintf(stderr, "\r\033[K%s [%s] %lld/%lld %.0fs<%.0fs %s", label_.c_str(), bar.c_str(),
               static_cast<long long>(current_), static_cast<long long>(total_), secs, eta,
               status_.c_str());
  std::fflush(stderr);
}

}  // namespace xfer
