#pragma once
/// \file
/// Fine-tuning strategies and the one freeze policy that carries them out:
/// which parameters train, which BatchNorm layers stay in eval mode, and the
/// learning rate and weight decay of each parameter group (layer-wise decayed
/// rates from the head down, no decay on biases and norm weights). Works on
/// native models and TorchScript models alike (through param_stages()).

#include <cstdint>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "xfer/core/json.h"
#include "xfer/models/classifier.h"

namespace xfer::train {

/// A strategy as written on the command line (DESIGN.md).
struct Strategy {
  enum class Kind { kScratch, kLinearProbe, kFull, kPartial, kLpFt, kLora, kL2Sp };
  Kind kind = Kind::kFull;
  int64_t stages = 0;  ///< partial:N
  int64_t rank = 0;    ///< lora:R
  double alpha = 0;    ///< l2-sp:ALPHA
  /// Parses linear-probe | full | partial:N | lp-ft | lora:R | l2-sp:ALPHA
  /// (and scratch); throws xfer::UsageError naming --strategy.
  static Strategy parse(const std::string& text);
  std::string str() const;
};

struct FreezeOptions {
  /// Backbone stages that train, counted from the head down; -1 = all, 0 = none.
  TORCH_ARG(int64_t, trainable_stages) = -1;
  /// Only LoRA adapters (and the head) train; every base weight is frozen.
  TORCH_ARG(bool, adapters_only) = false;
  /// BatchNorm mode: "auto" (a BatchNorm whose parameters are frozen stays in
  /// eval mode), "eval" (every BatchNorm in eval mode), "train" (none pinned:
  /// frozen layers still update running statistics).
  TORCH_ARG(std::string, bn_mode) = "auto";
  /// The group of backbone stage i (of n, the head being stage n) gets
  /// lr * layer_decay^(n - i): 1 = one rate for all.
  TORCH_ARG(double, layer_decay) = 1.0;
  /// Multiplies the head's learning rate.
  TORCH_ARG(double, head_lr_scale) = 1.0;
  /// Weight decay of conv/linear weights (biases and norm weights get none).
  TORCH_ARG(double, weight_decay) = 0.05;

 public:
  /// Throws xfer::UsageError on bad values.
  void validate() const;
};

/// One optimizer parameter group, as --dry-run prints it.
struct GroupPlan {
  std::string name;  ///< "<stage>" or "<stage>/no-decay"
  bool head = false;  ///< the group belongs to the last stage (the head)
  std::vector<std::string> params;
  std::vector<torch::Tensor> tensors;  ///< trainable tensors only
  int64_t parameters = 0, trainable = 0;
  double lr_scale = 1, weight_decay = 0;
  std::string bn;  ///< "train", "eval", "mixed" or "-" (no BatchNorm in the group)
};

struct FreezePlan {
  std::vector<GroupPlan> groups;
  std::vector<std::string> bn_eval;  ///< BatchNorm layers pinned to eval mode
  int64_t parameters = 0, trainable = 0;
  /// A table: group, tensors, parameters, trainable, lr, weight decay, BN mode.
  std::string text(double base_lr) const;
  Json to_json(double base_lr) const;
};

/// Whether a parameter takes weight decay: tensors of two or more dimensions,
/// except a ViT's cls_token, dist_token and pos_embed (timm's no_weight_decay:
/// decay would pull the pre-trained position embedding towards zero); the
/// names match native and TorchScript (ts__..._pos_embed) parameters.
bool takes_weight_decay(const std::string& name, const torch::Tensor& p);

/// Computes the plan (does not change the model).
FreezePlan plan_freeze(models::ClassifierImpl& model, const FreezeOptions& options);
/// Applies the plan: requires_grad on every parameter, BatchNorm layers pinned.
FreezePlan apply_freeze(models::ClassifierImpl& model, const FreezeOptions& options);

}  // namespace xfer::train
