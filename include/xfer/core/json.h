#pragma once
/// \file
/// JSON helpers over nlohmann::json with errors that name the file and field.

#include <string>

#include <nlohmann/json.hpp>

#include "xfer/core/error.h"

namespace xfer {

using Json = nlohmann::json;

/// Parses a JSON file. Throws xfer::Error naming the file on I/O or syntax errors.
Json read_json(const std::string& path);
/// Writes JSON (indented, trailing newline) atomically.
void write_json(const std::string& path, const Json& j);

/// Typed field access: throws xfer::Error "<where>: field 'key' ..." when the
/// field is missing or has the wrong type.
template <typename T>
T json_get(const Json& j, const std::string& key, const std::string& where) {
  if (!j.is_object() || !j.contains(key)) {
    throw Error(str_cat(where, ": missing field '", key, "'"));
  }
  try {
    return j.at(key).get<T>();
  } catch (const nlohmann::json::exception&) {
    throw Error(str_cat(where, ": field '", key, "' has the wrong type (", j.at(key).type_name(), ")"));
  }
}

/// Like json_get, with a default when the field is absent or null.
template <typename T>
T json_get_or(const Json& j, const std::string& key, const T& fallback, const std::string& where) {
  if (!j.is_object() || !j.contains(key) || j.at(key).is_null()) return fallback;
  return json_get<T>(j, key, where);
}

/// Current UTC time as ISO 8601 ("2026-11-27T02:20:06Z").
std::string utc_timestamp();

}  // namespace xfer
