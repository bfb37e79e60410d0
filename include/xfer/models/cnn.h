#pragma once
/// \file
/// A small VGG-style convolutional network for 28x28-class inputs.

#include "xfer/models/classifier.h"
#include "xfer/models/registry.h"

namespace xfer::models {

struct CnnOptions {
  CnnOptions(int64_t in_channels, int64_t image_size, int64_t num_classes)
      : in_channels_(in_channels), image_size_(image_size), num_classes_(num_classes) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, image_size);
  TORCH_ARG(int64_t, num_classes);
  /// Channels of each stage; a stage is `convs` x conv3x3-bn-relu then 2x2 max-pool.
  TORCH_ARG(std::vector<int64_t>, widths) = {32, 64};
  TORCH_ARG(int64_t, convs) = 1;
  TORCH_ARG(int64_t, hidden) = 128;  ///< width of the feature layer before the head
  TORCH_ARG(double, dropout) = 0.25;
};

/// Stages of conv-bn-relu blocks with max-pooling, flatten, a hidden
/// Linear+ReLU (the feature layer), dropout, then the head. The classic
/// Fashion-MNIST design: flattening keeps spatial layout, which global pooling
/// loses, and costs far less compute than deeper stages (measured in bench/).
class CnnImpl : public ClassifierImpl {
 public:
  explicit CnnImpl(const CnnOptions& options);
  torch::Tensor forward_features(torch::Tensor x) override;
  int64_t num_features() const override { return num_features_; }
  /// The convolutional stages (for intermediate-feature attacks and freezing).
  torch::nn::ModuleList stages() const { return stages_; }

 private:
  torch::nn::ModuleList stages_{nullptr};
  torch::nn::Sequential neck_{nullptr};
  int64_t num_features_;
};
TORCH_MODULE(Cnn);

/// Factory for the registry ("cnn"); arch options: widths, convs, hidden, dropout.
Classifier make_cnn(const ModelOptions& options);
/// Its state-dict size without building it (see model_size).
ModelSize cnn_size(const ModelOptions& options);

}  // namespace xfer::models
