#pragma once
/// \file
/// A TorchScript module (torch.jit.script / torch.jit.trace export) used as an
/// xfer classifier: either the whole classifier (its output are the logits) or
/// a backbone under a new linear head. Its parameters are registered with this
/// module (aliased, not copied), so optimisers train them and gradients flow
/// through the scripted code. Loading a TorchScript file runs code written by
/// its author: load only files you trust.

#include <string>

#include <torch/script.h>

#include "xfer/models/classifier.h"

namespace xfer::models {

class TorchScriptClassifierImpl : public ClassifierImpl {
 public:
  /// mode "classifier": logits = module(x); mode "backbone": features =
  /// flatten(module(x)), head = Linear(width, num_classes). The output width
  /// is found by one forward pass on zeros of `input_shape` (C,H,W).
  TorchScriptClassifierImpl(torch::jit::Module module, std::string mode,
                            std::vector<int64_t> input_shape, int64_t num_classes);
  torch::Tensor forward_features(torch::Tensor x) override;
  int64_t num_features() const override { return num_features_; }
  const std::string& mode() const { return mode_; }
  torch::jit::Module& module() { return module_; }
  /// Propagates train/eval to the scripted module (dropout, BatchNorm),
  /// keeping pinned BatchNorm layers in eval mode.
  void train(bool on = true) override;
  /// The scripted module's top-level children with parameters, in order
  /// (its direct parameters join the first); parameter prefixes "ts__<child>".
  std::vector<ParamStage> backbone_stages() const override;
  /// Scripted submodules whose type is a BatchNorm, as "ts__a__b".
  std::vector<std::string> batch_norm_layers() const override;
  bool layer_is_training(const std::string& name) const override;

 private:
  torch::jit::Module module_;
  std::string mode_;
  int64_t num_features_ = 0;
};
TORCH_MODULE(TorchScriptClassifier);

/// torch::jit::load with errors as xfer::Error naming the file. The file is
/// read once: the archive is loaded from the very bytes that were hashed, so a
/// file replaced between a hash check and the load cannot slip in. A non-empty
/// `expected_sha256` is checked before any of the archive's code is loaded;
/// `sha256`, when given, receives the digest of the bytes loaded.
torch::jit::Module load_torchscript(const std::string& path,
                                    const std::string& expected_sha256 = "",
                                    std::string* sha256 = nullptr);

}  // namespace xfer::models
