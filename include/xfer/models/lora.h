#pragma once
/// \file
/// LoRA (Hu et al. 2021): a frozen weight W0 plus a trainable low-rank update,
/// W = W0 + (alpha / r) * B A, with A random and B zero so a fresh adapter
/// leaves the model's function unchanged. Linear layers adapt their [out, in]
/// weight; Conv2d layers their weight viewed as [out, in * kh * kw] (PEFT's
/// merged form of its conv adapter). Adapters live in a module registered as
/// "lora" on the classifier (keys lora.<layer with "__" for ".">.A / .B), and
/// the adapted weights are recomputed before each forward pass.

#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "xfer/core/json.h"
#include "xfer/models/classifier.h"

namespace xfer::models {

struct LoraOptions {
  TORCH_ARG(int64_t, rank) = 8;
  /// Scaling numerator: the update is scaled by alpha / rank; 0 means alpha = rank.
  TORCH_ARG(double, alpha) = 0.0;
  TORCH_ARG(bool, linear) = true;  ///< adapt Linear layers
  TORCH_ARG(bool, conv) = true;    ///< adapt Conv2d layers (groups = 1)

 public:
  double scale() const { return (alpha() > 0 ? alpha() : double(rank())) / double(rank()); }
  /// Throws xfer::UsageError on a rank < 1 or a negative/NaN alpha.
  void validate() const;
  Json to_json() const;
  static LoraOptions from_json(const Json& j, const std::string& what);
};

class LoraAdaptersImpl : public torch::nn::Module {
 public:
  struct Layer {
    std::string target;  ///< e.g. "layer1.0.conv1"
    std::shared_ptr<torch::nn::Module> module;
    torch::Tensor base, a, b;  ///< base = the layer's registered weight (W0)
  };
  explicit LoraAdaptersImpl(LoraOptions options);
  /// Adds an adapter to a Linear or Conv2d module (A ~ kaiming-uniform, B = 0).
  void add(const std::string& target, std::shared_ptr<torch::nn::Module> module);
  /// Sets each adapted layer's weight to W0 + scale * B A (differentiable).
  void refresh();
  /// W0 += scale * B A in place, and each layer's weight is W0 again.
  void merge();
  const std::vector<Layer>& layers() const { return layers_; }
  const LoraOptions& options() const { return options_; }
  std::vector<std::string> targets() const;

 private:
  LoraOptions options_;
  std::vector<Layer> layers_;
};
TORCH_MODULE(LoraAdapters);

/// Layers of the backbone LoRA can adapt (the head is excluded: it is trained
/// in full, as PEFT's modules_to_save).
std::vector<std::string> lora_eligible(const ClassifierImpl& model, const LoraOptions& options);

/// Adds adapters to `targets` (empty = every eligible layer). Throws
/// xfer::Error naming the model when no layer is eligible, or when a target
/// is not an eligible layer, or when the model already has adapters.
LoraAdapters add_lora(ClassifierImpl& model, const LoraOptions& options,
                      std::vector<std::string> targets = {});

/// Folds the adapters into plain weights and removes them; the model's
/// function is unchanged (up to float rounding). No-op without adapters.
void merge_lora(ClassifierImpl& model);

}  // namespace xfer::models
