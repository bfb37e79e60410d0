#pragma once
/// \file
/// Taking in weights trained elsewhere: safetensors state dicts (torchvision,
/// timm, DDP or torch.compile checkpoints) and TorchScript exports, with a
/// report of what matched. Also the one place that turns a "model source"
/// (model directory | weights + arch | TorchScript file) into a model.

#include <string>
#include <vector>

#include "xfer/data/dataset.h"
#include "xfer/io/model_dir.h"

namespace xfer::io {

struct ImportOptions {
  /// Every key must match (after the head rule below).
  TORCH_ARG(bool, strict) = true;
  /// Accept a file without head weights (the head stays freshly initialised).
  TORCH_ARG(bool, allow_missing_head) = false;
  /// Leave the file's head out whatever its shape (the caller replaces the
  /// head: fine-tuning with a new head, whose features may be wider than the
  /// head the file was trained with, e.g. resnet pool_stages).
  TORCH_ARG(bool, drop_head) = false;
  /// Refuse the file unless its sha256 equals this (empty = no check).
  TORCH_ARG(std::string, expected_sha256) = "";
};

struct ImportReport {
  std::string sha256;
  LoadReport load;
  std::vector<std::string> stripped_prefixes;  ///< e.g. "module."
  bool head_dropped = false;  ///< the file's head had another class count, or drop_head
  bool input_conv_adapted = false;
  std::string input_conv_key;  ///< the adapted tensor
  std::string summary() const;
};

/// Removes DataParallel ("module.") and torch.compile ("_orig_mod.") prefixes
/// from every key; returns the prefixes removed.
std::vector<std::string> strip_prefixes(TensorFile& file);

/// timm's adapt_input_conv: a first-conv weight [O, C', k, k] for C channels:
/// C == 1 sums over C'; otherwise repeats the C' channels and rescales by C'/C.
torch::Tensor adapt_input_conv(const torch::Tensor& weight, int64_t in_channels);

/// Loads a safetensors file into the model with the rules above: prefixes
/// stripped, the head dropped when its class count differs (allowed as
/// missing), the first convolution adapted when the channel count differs.
/// Throws xfer::Error naming the file and the keys/shapes on mismatch.
ImportReport import_weights(models::ClassifierImpl& model, const std::string& path,
                            const ImportOptions& options = {});

/// Where a model comes from (exactly one of dir, weights, torchscript).
struct ModelSource {
  std::string dir;          ///< model directory
  std::string weights;      ///< safetensors state dict (needs arch)
  std::string arch;
  std::string arch_options = "{}";
  int64_t num_classes = 0;  ///< 0 = from the file's head
  std::vector<int64_t> input_shape;  ///< C,H,W for weights/torchscript sources
  std::vector<double> mean, std;     ///< normalisation for weights/torchscript sources
  std::string weights_sha256;
  std::string torchscript;  ///< TorchScript archive (.pt)
  std::string torchscript_mode = "classifier";  ///< classifier | backbone
  /// The caller replaces the head (finetune --head new): a weights file's head
  /// is not loaded whatever its shape, and need not exist.
  bool replace_head = false;
  /// Throws xfer::UsageError unless exactly one source is given, with what it
  /// needs. input_shape_from_data: a weights/TorchScript source may leave
  /// input_shape empty (the caller fills it from the data before loading).
  void validate(bool input_shape_from_data = false) const;
};

/// Loads any model source into a LoadedModel (config/card synthesised for
/// weights and TorchScript sources; card.id = sha256 of the file).
LoadedModel load_model_source(const ModelSource& source, ImportReport* report = nullptr);

/// Throws xfer::Error naming the model and `spec` when the data's image shape
/// differs from the model's, or (check_classes) the data has more classes
/// than the model predicts.
void check_model_for_data(const LoadedModel& model, const data::Dataset& data, const std::string& spec,
                          bool check_classes = true);

/// Whether the model's class k is the data's class k for every data class:
/// false for a model that is no classifier (a self-supervised embedding) or
/// has fewer classes than the data; else true when either side has no class
/// names (TorchScript, unnamed data); false e.g. for a base pre-trained on
/// classes 0-4 against data of classes 5-9 (relabelled 0-4), whose
/// label-based attacks and accuracy mean nothing.
bool label_space_matches(const LoadedModel& model, const data::Dataset& data);

}  // namespace xfer::io
