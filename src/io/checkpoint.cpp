#include "xfer/io/checkpoint.h"

#include <filesystem>

#include "xfer/core/error.h"
#include "xfer/core/fs.h"

namespace fs = std::filesystem;

namespace xfer::io {
namespace {
constexpr const char* kKey = "xfer_checkpoint";
// 2: model snapshots stored by parameter and buffer name (1 stored them by position).
constexpr const char* kFormat = "xfer-checkpoint/2";
}  // namespace

std::string checkpoint_file(const std::string& dir) {
  return (fs::path(dir) / "checkpoint.safetensors").string();
}

bool has_checkpoint(const std::string& dir) {
  std::error_code ec;
  return fs::is_regular_file(checkpoint_file(dir), ec);
}

void write_checkpoint(const std::string& dir, const Checkpoint& checkpoint) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  XFER_CHECK(!ec && fs::is_directory(dir), dir, ": cannot create the checkpoint directory (",
             ec.message(), ")");
  TensorFile file = checkpoint.tensors;
  Json state = checkpoint.state;
  state["format"] = kFormat;
  file.metadata[kKey] = state.dump();
  write_file_atomic(checkpoint_file(dir), serialize_safetensors(file));
}

Checkpoint read_checkpoint(const std::string& dir) {
  const std::string path = checkpoint_file(dir);
  XFER_CHECK(has_checkpoint(dir), dir, ": no checkpoint (", path, " is missing)");
  Checkpoint c;
  c.tensors = read_safetensors(path);
  auto it = c.tensors.metadata.find(kKey);
  XFER_CHECK(it != c.tensors.metadata.end(), path, ": not an xfer checkpoint (no '", kKey,
             "' metadata)");
  try {
    c.state = Json::parse(it->second);
  } catch (const nlohmann::json::exception&) {
    throw Error(str_cat(path, ": checkpoint state is not valid JSON"));
  }
  // (value("format", "") would throw json's own error on a non-string format)
  XFER_CHECK(c.state.is_object() && c.state.contains("format") && c.state["format"].is_string() &&
                 c.state["format"].get<std::string>() == kFormat,
             path, ": unsupported checkpoint format (expected ", kFormat, ")");
  c.tensors.metadata.erase(kKey);
  return c;
}

}  // namespace xfer::io
