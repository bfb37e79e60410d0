#pragma once
/// \file
/// Residual networks. `resnet` is a small CIFAR-style ResNet for 28x28 inputs
/// (3x3 stem, no max-pool, three stages of BasicBlocks) with torchvision's
/// module names (conv1, bn1, layer1.., fc) so code that walks torchvision
/// resnets walks it too.

#include "xfer/models/classifier.h"
#include "xfer/models/registry.h"

namespace xfer::models {

/// torchvision's BasicBlock: conv3x3-bn-relu-conv3x3-bn + shortcut (1x1 conv-bn
/// "downsample" when the shape changes).
class BasicBlockImpl : public torch::nn::Module {
 public:
  BasicBlockImpl(int64_t in_planes, int64_t planes, int64_t stride);
  torch::Tensor forward(torch::Tensor x);

 private:
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr};
  torch::nn::BatchNorm2d bn1_{nullptr}, bn2_{nullptr};
  torch::nn::Sequential downsample_{nullptr};
};
TORCH_MODULE(BasicBlock);

struct SmallResNetOptions {
  SmallResNetOptions(int64_t in_channels, int64_t num_classes)
      : in_channels_(in_channels), num_classes_(num_classes) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, num_classes);
  TORCH_ARG(std::vector<int64_t>, widths) = {32, 64, 128};  ///< one stage each
  TORCH_ARG(std::vector<int64_t>, blocks) = {1, 1, 1};      ///< blocks per stage
};

class SmallResNetImpl : public ClassifierImpl {
 public:
  explicit SmallResNetImpl(const SmallResNetOptions& options);
  torch::Tensor forward_features(torch::Tensor x) override;
  int64_t num_features() const override { return num_features_; }
  std::string head_name() const override { return "fc"; }
  /// Number of residual stages (layer1..layerN).
  int64_t num_stages() const { return static_cast<int64_t>(layers_.size()); }

 private:
  torch::nn::Conv2d conv1_{nullptr};
  torch::nn::BatchNorm2d bn1_{nullptr};
  std::vector<torch::nn::Sequential> layers_;
  int64_t num_features_;
};
TORCH_MODULE(SmallResNet);

/// Factory for the registry ("resnet"); arch options: widths, blocks.
Classifier make_small_resnet(const ModelOptions& options);

}  // namespace xfer::models
