#include "xfer/core/json.h"

#include <ctime>

#include "xfer/core/fs.h"

namespace xfer {

Json read_json(const std::string& path) {
  std::string text = read_file(path);
  try {
    return Json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    // e.byte is the position; keep the message to one line.
    throw Error(str_cat(path, ": invalid JSON at byte ", e.byte));
  } catch (const nlohmann::json::exception& e) {  // e.g. a number too large for a double
    throw Error(str_cat(path, ": invalid JSON (", e.what(), ")"));
  }
}

void write_json(const std::string& path, const Json& j) { write_file_atomic(path, j.dump(2) + "\n"); }

std::string utc_timestamp() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace xfer
