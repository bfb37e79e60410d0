#pragma once
/// \file
/// Errors: the library throws xfer::Error; only the CLI's main prints and exits.

#include <sstream>
#include <stdexcept>
#include <string>

namespace xfer {

/// Kind of failure, mapped to the CLI's exit code (usage -> 2, everything else -> 1).
enum class ErrorKind { kRuntime, kUsage };

/// The one exception type of the library. what() is a single line that names the
/// file, flag or value at fault and what was expected.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message, ErrorKind kind = ErrorKind::kRuntime)
      : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const noexcept { return kind_; }

 private:
  ErrorKind kind_;
};

/// Thrown for bad command-line usage (unknown flag value, missing argument).
class UsageError : public Error {
 public:
  explicit UsageError(const std::string& message) : Error(message, ErrorKind::kUsage) {}
};

namespace detail {
inline void format_into(std::ostringstream&) {}
template <typename T, typename... Rest>
void format_into(std::ostringstream& os, const T& first, const Rest&... rest) {
  os << first;
  format_into(os, rest...);
}
}  // namespace detail

/// Concatenates the arguments with operator<< into one string.
template <typename... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream os;
  detail::format_into(os, args...);
  return os.str();
}

}  // namespace xfer

/// Throws xfer::Error with the streamed message when cond is false.
#define XFER_CHECK(cond, ...)                              \
  do {                                                     \
    if (!(cond)) throw ::xfer::Error(::xfer::str_cat(__VA_ARGS__)); \
  } while (0)

/// Throws xfer::UsageError with the streamed message when cond is false.
#define XFER_CHECK_USAGE(cond, ...)                             \
  do {                                                          \
    if (!(cond)) throw ::xfer::UsageError(::xfer::str_cat(__VA_ARGS__)); \
  } while (0)
