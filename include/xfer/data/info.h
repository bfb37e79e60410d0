#pragma once
/// \file
/// A summary of a dataset, as `xfer data info` prints it.

#include <string>

#include "xfer/core/json.h"
#include "xfer/data/dataset.h"

namespace xfer::data {

/// Counts per class (with names), shape, value range, mean/std and content hash.
Json describe(const Dataset& ds);
/// The same as readable text (several lines).
std::string describe_text(const Json& info);

}  // namespace xfer::data
