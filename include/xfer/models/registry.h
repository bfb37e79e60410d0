#pragma once
/// \file
/// Model registry: name -> factory(options).

#include <functional>
#include <string>
#include <vector>

#include "xfer/core/json.h"
#include "xfer/models/classifier.h"

namespace xfer::models {

/// What every factory gets: input shape, class count, and architecture-specific
/// options (JSON, so they round-trip through config.json unchanged).
struct ModelOptions {
  int64_t in_channels = 1;
  int64_t image_size = 28;
  int64_t num_classes = 10;
  Json arch_options = Json::object();
};

using Factory = std::function<Classifier(const ModelOptions&)>;

/// Registers a factory (the built-in ones are registered on first use).
void register_model(const std::string& name, Factory factory, std::string description);
/// Builds a model; throws xfer::UsageError listing the known names when unknown.
Classifier create_model(const std::string& name, const ModelOptions& options);
/// Registered names, sorted.
std::vector<std::string> model_names();
/// One-line description of a registered model.
std::string model_description(const std::string& name);

/// Throws xfer::UsageError when arch options hold a key not in `known`.
void check_arch_options(const std::string& arch, const Json& options,
                        const std::vector<std::string>& known);

}  // namespace xfer::models
