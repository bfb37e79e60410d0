#pragma once
/// \file
/// JSON helpers over nlohmann::json with errors that name the file and field.

#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "xfer/core/error.h"

namespace xfer {

using Json = nlohmann::json;

/// Parses a JSON file. Throws xfer::Error naming the file on I/O or syntax errors.
Json read_json(const std::string& path);
/// Writes JSON (indented, trailing newline) atomically.
void write_json(const std::string& path, const Json& j);

namespace detail {
// nlohmann converts 3.7 to 3 and 1e60 or 2^63 to whatever the cast gives
// (undefined behaviour for the float): integral fields take integers in range.
template <typename T>
constexpr bool kJsonInt = std::is_integral_v<T> && !std::is_same_v<T, bool>;
template <typename T>
struct IsVector : std::false_type {};
template <typename T>
struct IsVector<std::vector<T>> : std::true_type {
  using Elem = T;
};
// A number that is not an integer, or one out of T's range; other types are
// left to nlohmann's type error.
template <typename T>
bool json_integer_fits(const Json& v) {
  if (!v.is_number()) return true;
  if (!v.is_number_integer()) return false;
  if (v.is_number_unsigned()) return v.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<T>::max());
  const auto x = v.get<int64_t>();
  if constexpr (std::is_signed_v<T>) {
    return x >= static_cast<int64_t>(std::numeric_limits<T>::min()) &&
           x <= static_cast<int64_t>(std::numeric_limits<T>::max());
  } else {
    return x >= 0 && static_cast<uint64_t>(x) <= static_cast<uint64_t>(std::numeric_limits<T>::max());
  }
}
// nullptr when v suits T, else what T needs.
template <typename T>
const char* json_integral_problem(const Json& v) {
  if constexpr (kJsonInt<T>) {
    return json_integer_fits<T>(v) ? nullptr : "an integer in range";
  } else if constexpr (IsVector<T>::value) {
    if constexpr (kJsonInt<typename IsVector<T>::Elem>) {
      if (v.is_array()) {  // otherwise the type error is nlohmann's to report
        for (const Json& e : v) {
          if (!json_integer_fits<typename IsVector<T>::Elem>(e)) return "a list of integers in range";
        }
      }
    }
  }
  return nullptr;
}
}  // namespace detail

/// Typed field access: throws xfer::Error "<where>: field 'key' ..." when the
/// field is missing or has the wrong type. Integral fields (and lists of them)
/// must hold JSON integers within the type's range: 3.7 or 1e60 is an error,
/// not a silent truncation.
template <typename T>
T json_get(const Json& j, const std::string& key, const std::string& where) {
  if (!j.is_object() || !j.contains(key)) {
    throw Error(str_cat(where, ": missing field '", key, "'"));
  }
  if (const char* want = detail::json_integral_problem<T>(j.at(key))) {
    throw Error(str_cat(where, ": field '", key, "' must be ", want, ", got ", j.at(key).dump()));
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
