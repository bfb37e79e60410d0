#pragma once
/// \file
/// The model directory (DESIGN.md): config.json, model.safetensors, card.json.

#include <optional>
#include <string>
#include <vector>

#include "xfer/core/fs.h"
#include "xfer/core/json.h"
#include "xfer/io/safetensors.h"
#include "xfer/models/classifier.h"
#include "xfer/models/lora.h"
#include "xfer/models/registry.h"

namespace xfer::io {

/// config.json: everything needed to rebuild the module.
struct ModelConfig {
  std::string arch;
  Json arch_options = Json::object();
  int64_t num_classes = 0;
  std::vector<int64_t> input_shape;  ///< C, H, W
  std::vector<double> mean, std;     ///< normalisation inside the model
  std::vector<std::string> class_names;
  /// "classifier": the head's outputs are class logits. "embedding": a
  /// self-supervised encoder whose head is a projection (num_classes is its
  /// width, there are no class names); it is a parent for `xfer finetune` and a
  /// surrogate for feature-space attacks, and require_classifier refuses it elsewhere.
  std::string task = "classifier";
  /// Unmerged LoRA adapters (config "adapters": {"lora": {rank, alpha, ..., targets}});
  /// empty targets = none. build_model adds them before the weights load.
  models::LoraOptions lora;
  std::vector<std::string> lora_targets;
  /// The head's form (config "head": {"kind": "cosine", "scale": S}; absent = linear).
  models::HeadOptions head;

  Json to_json() const;
  /// Parses and validates; `what` names the file in errors.
  static ModelConfig from_json(const Json& j, const std::string& what);
};

/// card.json: the lineage record the audit reads.
struct ModelCard {
  std::string id;  ///< sha256 of model.safetensors
  struct Parent {
    std::string id, path;
  };
  std::optional<Parent> parent;
  Json recipe = Json::object();   ///< strategy, epochs, lr, shots, seed, ...
  Json data = Json::object();     ///< spec, sha256 of the samples used, counts
  Json metrics = Json::object();  ///< e.g. val_accuracy, train curves
  std::string xfer_version;
  std::string created;  ///< UTC ISO 8601

  Json to_json() const;
  static ModelCard from_json(const Json& j, const std::string& what);
};

/// A loaded model directory.
struct LoadedModel {
  models::Classifier model;
  ModelConfig config;
  ModelCard card;
  std::string path;
};

/// Throws xfer::UsageError unless `m` is a classifier (config task
/// "classifier"): an embedding model has no class logits for `what` to use.
void require_classifier(const LoadedModel& m, const std::string& what);

/// State dict of a module (parameters and buffers, torch key names) as tensors.
TensorFile state_dict(const torch::nn::Module& m);

/// Result of loading weights into a module.
struct LoadReport {
  std::vector<std::string> missing, unexpected, shape_mismatch;
  bool ok() const { return missing.empty() && unexpected.empty() && shape_mismatch.empty(); }
  std::string summary() const;
};
/// Copies tensors into the module's parameters and buffers by name; with
/// strict = true, throws (naming `what`) unless every key matches in shape.
LoadReport load_state_dict(torch::nn::Module& m, const TensorFile& file, bool strict,
                           const std::string& what);

/// Builds the module a config describes (random weights). Arch "torchscript"
/// (a fine-tuned TorchScript model) loads arch_options.file from `dir` and
/// checks its sha256 against arch_options.sha256.
models::Classifier build_model(const ModelConfig& config, const std::string& dir = "");

/// What a model built from `config` would hold (models::model_size, LoRA
/// adapters aside), counted without building it; std::nullopt for TorchScript
/// and for architectures registered without a counter.
std::optional<models::ModelSize> config_model_size(const ModelConfig& config);

/// A count of tensor values for messages: exact up to 2^53, then 3 digits.
std::string format_count(double values);

/// Writes a model directory atomically (staged, renamed into place). Fills
/// card.id with the sha256 of model.safetensors, card.xfer_version and
/// card.created; returns the card written.
ModelCard save_model_dir(const std::string& dir, models::ClassifierImpl& model,
                         const ModelConfig& config, ModelCard card,
                         Overwrite overwrite = Overwrite::kNo,
                         const std::vector<std::pair<std::string, std::string>>& extra_files = {});

/// Loads a model directory: parses config and card, checks the card's id
/// against the sha256 of model.safetensors, builds and loads strictly.
LoadedModel load_model_dir(const std::string& dir);

}  // namespace xfer::io
