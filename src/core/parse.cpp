#include "xfer/core/parse.h"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <stdexcept>

#include "xfer/core/error.h"

namespace xfer {

namespace {
// stod/stoll skip leading blanks and take a '+': " 8" or "+5" is not what a
// flag value should look like.
bool starts_cleanly(const std::string& text) {
  return !text.empty() && !std::isspace(static_cast<unsigned char>(text[0])) && text[0] != '+';
}
}  // namespace

int64_t parse_integer(const std::string& text, const std::string& what) {
  size_t pos = 0;
  long long v = 0;
  XFER_CHECK_USAGE(starts_cleanly(text), what, ": '", text, "' is not an integer");
  try {
    v = std::stoll(text, &pos);
  } catch (const std::exception&) {
    pos = 0;
  }
  XFER_CHECK_USAGE(pos == text.size() && !text.empty(), what, ": '", text, "' is not an integer");
  return static_cast<int64_t>(v);
}

double parse_number(const std::string& text, const std::string& what) {
  XFER_CHECK_USAGE(starts_cleanly(text), what, ": '", text, "' is not a number");
  // strtod, not stod: stod throws on underflow, refusing 1e-310 as "not a number".
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  const auto pos = static_cast<size_t>(end - text.c_str());
  XFER_CHECK_USAGE(pos == text.size() && std::isfinite(v), what, ": '", text, "' is not a number");
  return v;
}

double parse_fraction(const std::string& text, const std::string& what) {
  const auto slash = text.find('/');
  const std::string hint = str_cat(what, " (write 0.03 or 8/255)");
  if (slash == std::string::npos) return parse_number(text, hint);
  const double num = parse_number(text.substr(0, slash), hint);
  const double den = parse_number(text.substr(slash + 1), hint);
  XFER_CHECK_USAGE(den != 0, what, ": '", text, "' divides by zero");
  XFER_CHECK_USAGE(std::isfinite(num / den), what, ": '", text, "' is too large");
  return num / den;
}

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    const auto p = text.find(sep, start);
    out.push_back(text.substr(start, p == std::string::npos ? std::string::npos : p - start));
    if (p == std::string::npos) break;
    start = p + 1;
  }
  return out;
}

std::vector<double> parse_fraction_list(const std::string& text, const std::string& what) {
  std::vector<double> out;
  for (const auto& part : split(text, ',')) {
    XFER_CHECK_USAGE(!part.empty(), what, ": empty value in '", text, "'");
    out.push_back(parse_fraction(part, what));
  }
  return out;
}

bool is_utf8(const std::string& text) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  for (size_t i = 0; i < n;) {
    const unsigned c = p[i];
    size_t len = 0;
    unsigned lo = 0x80, hi = 0xbf;  // the range of the second byte
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xc2 && c <= 0xdf) {
      len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
      len = 3;
      if (c == 0xe0) lo = 0xa0;  // overlong
      if (c == 0xed) hi = 0x9f;  // surrogates
    } else if (c >= 0xf0 && c <= 0xf4) {
      len = 4;
      if (c == 0xf0) lo = 0x90;  // overlong
      if (c == 0xf4) hi = 0x8f;  // past U+10FFFF
    } else {
      return false;
    }
    if (i + len > n || p[i + 1] < lo || p[i + 1] > hi) return false;
    for (size_t k = 2; k < len; ++k) {
      if (p[i + k] < 0x80 || p[i + k] > 0xbf) return false;
    }
    i += len;
  }
  return true;
}

}  // namespace xfer
