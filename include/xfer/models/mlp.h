#pragma once
/// \file
/// A multi-layer perceptron over flattened images.

#include "xfer/models/classifier.h"
#include "xfer/models/registry.h"

namespace xfer::models {

struct MlpOptions {
  MlpOptions(int64_t in_features, int64_t num_classes)
      : in_features_(in_features), num_classes_(num_classes) {}
  TORCH_ARG(int64_t, in_features);
  TORCH_ARG(int64_t, num_classes);
  TORCH_ARG(std::vector<int64_t>, hidden) = {512, 256};
  TORCH_ARG(double, dropout) = 0.1;
};

/// Flatten -> [Linear -> ReLU -> Dropout] x len(hidden) -> head.
class MlpImpl : public ClassifierImpl {
 public:
  explicit MlpImpl(const MlpOptions& options);
  torch::Tensor forward_features(torch::Tensor x) override;
  int64_t num_features() const override { return num_features_; }

 private:
  torch::nn::Sequential body_{nullptr};
  int64_t num_features_;
};
TORCH_MODULE(Mlp);

/// Factory for the registry ("mlp"); arch options: hidden (list), dropout.
Classifier make_mlp(const ModelOptions& options);
/// Its state-dict size without building it (see model_size).
ModelSize mlp_size(const ModelOptions& options);

}  // namespace xfer::models
