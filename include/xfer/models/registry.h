#pragma once
/// \file
/// Model registry: name -> factory(options).

#include <functional>
#include <optional>
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

/// How many values (parameter and buffer elements, LoRA adapters aside) a
/// model holds, counted from its options without building it. Doubles, so that
/// absurd options (a width of 2^40) cannot overflow: the count is for bounding
/// a model against the weights meant to fill it before any memory is taken.
struct ModelSize {
  double total = 0;  ///< every tensor of the state dict
  double head = 0;   ///< of which the classifier head's weight and bias
};
using SizeFn = std::function<ModelSize(const ModelOptions&)>;

/// Registers a factory (the built-in ones are registered on first use), and
/// optionally its size counter (see model_size).
void register_model(const std::string& name, Factory factory, std::string description,
                    SizeFn size = {});
/// Builds a model; throws xfer::UsageError listing the known names when unknown.
Classifier create_model(const std::string& name, const ModelOptions& options);
/// The state-dict size of `create_model(name, options)` without building it;
/// std::nullopt when the architecture registered no counter. Throws like
/// create_model on an unknown name or unknown arch options.
std::optional<ModelSize> model_size(const std::string& name, const ModelOptions& options);
/// Registered names, sorted.
std::vector<std::string> model_names();
/// One-line description of a registered model.
std::string model_description(const std::string& name);

/// Throws xfer::UsageError when arch options hold a key not in `known`.
void check_arch_options(const std::string& arch, const Json& options,
                        const std::vector<std::string>& known);

}  // namespace xfer::models
