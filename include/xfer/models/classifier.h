#pragma once
/// \file
/// The common shape of every xfer model: backbone (features of known width) +
/// head (a linear classifier), with input normalisation inside the model so
/// callers (training, attacks) always pass images in [0,1]. Follows timm's
/// forward_features / forward_head / reset_classifier split.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace xfer::models {

class LoraAdaptersImpl;

/// A unit of the network that freezing (partial:N) and layer-wise learning
/// rates treat as one: a name and the parameter-name prefixes it owns.
struct ParamStage {
  std::string name;
  std::vector<std::string> prefixes;
};

/// The form of a classifier's head.
/// - "linear": logits = W f + b.
/// - "cosine" (Gidaris & Komodakis 2018; Baseline++ of Chen et al. 2019):
///   logits_c = scale * cos(f, w_c) + b_c, with features and class weights L2
///   normalised, so a class is a direction in feature space. With a handful
///   of labels a linear head on raw features spends its few examples fitting
///   feature norms; the cosine head cannot, and transfers better from
///   self-supervised features (docs/finetune.md has the measurements).
struct HeadOptions {
  TORCH_ARG(std::string, kind) = "linear";  ///< linear | cosine
  TORCH_ARG(double, scale) = 10.0;          ///< cosine: the logit scale (inverse temperature)

 public:
  /// Parses --head-type: "linear", "cosine" or "cosine:SCALE". Throws
  /// xfer::UsageError naming --head-type.
  static HeadOptions parse(const std::string& text);
  /// The --head-type form ("linear", "cosine:10").
  std::string str() const;
  /// Throws xfer::UsageError on an unknown kind or a scale outside (0, 1000].
  void validate() const;
  bool operator==(const HeadOptions& o) const { return kind_ == o.kind_ && scale_ == o.scale_; }
};

/// Base of all classifiers. Subclasses register their own modules with the key
/// names of their reference implementation (torchvision for resnets), and must
/// register the head as a module whose name is head_name().
class ClassifierImpl : public torch::nn::Module {
 public:
  /// logits = forward_head(forward_features(normalize(x))), x in [0,1].
  torch::Tensor forward(torch::Tensor x);
  /// Pooled backbone features [B, num_features()] of a [0,1] input.
  torch::Tensor features(torch::Tensor x);

  /// Backbone on an already normalised input.
  virtual torch::Tensor forward_features(torch::Tensor x) = 0;
  /// Head on features (identity when the model has no head: a TorchScript
  /// module used as a whole classifier).
  virtual torch::Tensor forward_head(torch::Tensor f);
  /// Width of the feature vector.
  virtual int64_t num_features() const = 0;
  /// Name of the head module in the state dict ("fc" for resnets, "head" otherwise).
  virtual std::string head_name() const { return "head"; }

  torch::nn::Linear& head() { return head_; }
  bool has_head() const { return !head_.is_empty(); }
  int64_t num_classes() const;
  /// Replaces (or adds) the head: a fresh Linear(num_features, num_classes).
  void reset_classifier(int64_t num_classes);
  /// How forward_head uses the head's weights (the parameters are the same
  /// Linear either way, so weights files do not change form). A cosine head
  /// needs a head; validated.
  void set_head_options(const HeadOptions& options);
  const HeadOptions& head_options() const { return head_options_; }

  /// Input normalisation (per-channel); empty = none.
  void set_normalization(std::vector<double> mean, std::vector<double> std);
  const std::vector<double>& mean() const { return mean_; }
  const std::vector<double>& std() const { return std_; }
  torch::Tensor normalize(const torch::Tensor& x) const;

  /// Whether a parameter name belongs to the head.
  bool is_head_parameter(const std::string& name) const;

  /// Backbone stages from input to output (stem first), head excluded. The
  /// default takes the top-level children in registration order, expanding
  /// ModuleList/Sequential containers one level; direct parameters join the
  /// first stage. Models override it where a stage spans several children.
  virtual std::vector<ParamStage> backbone_stages() const;
  /// backbone_stages() then the head (a stage named "head"; for a model
  /// without a head, its last backbone stage is renamed "head").
  std::vector<ParamStage> param_stages() const;
  /// Index in `stages` of the stage owning a parameter (LoRA adapters belong
  /// to the stage of the layer they adapt); -1 when none does.
  static int64_t stage_of(const std::vector<ParamStage>& stages, const std::string& name);

  /// BatchNorm layers, named as in parameter names (without ".weight").
  virtual std::vector<std::string> batch_norm_layers() const;
  /// BatchNorm layers that stay in eval mode whatever train() says: a frozen
  /// BatchNorm must not update its running statistics when a parent module
  /// calls train() (the LibTorch default would). Held on train() of this
  /// model and again before each forward pass, so a train() called on one of
  /// its stages or on a module that wraps it does not unpin them either.
  void pin_eval(std::vector<std::string> layers);
  const std::vector<std::string>& pinned_eval() const { return pinned_eval_; }
  /// Whether the named BatchNorm layer is in training mode now.
  virtual bool layer_is_training(const std::string& name) const;
  /// Module::train, then pinned layers back to eval.
  void train(bool on = true) override;

  /// LoRA adapters when added (models/lora.h), else null.
  std::shared_ptr<LoraAdaptersImpl> lora() const { return lora_; }
  void set_lora(std::shared_ptr<LoraAdaptersImpl> lora) { lora_ = std::move(lora); }

 protected:
  /// Creates and registers the head under head_name().
  void init_head(int64_t num_features, int64_t num_classes);
  torch::nn::Linear head_{nullptr};
  /// Recomputes adapted weights before a forward pass (LoRA).
  void before_forward();

 private:
  std::vector<double> mean_, std_;
  HeadOptions head_options_;
  std::vector<std::string> pinned_eval_;
  std::vector<std::shared_ptr<torch::nn::Module>> pinned_modules_;  ///< the native ones among them
  std::shared_ptr<LoraAdaptersImpl> lora_;
};

/// Shared pointer to any classifier; what the registry returns.
using Classifier = std::shared_ptr<ClassifierImpl>;

/// Counts parameters (all, or only those with requires_grad).
int64_t count_parameters(const torch::nn::Module& m, bool trainable_only = false);

}  // namespace xfer::models
