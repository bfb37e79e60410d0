#pragma once
/// \file
/// Residual networks. `resnet` is a small CIFAR-style ResNet for 28x28 inputs
/// (3x3 stem, no max-pool, three stages of BasicBlocks) with torchvision's
/// module names (conv1, bn1, layer1.., fc) so code that walks torchvision
/// resnets walks it too. `resnet18`, `resnet34` and `resnet50` are
/// torchvision's ResNets (v1.5: the stride of a Bottleneck sits on its 3x3
/// conv) with torchvision's module structure and state-dict keys, so
/// torchvision weights load strictly.

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

/// torchvision's Bottleneck (expansion 4): conv1x1-bn-relu, conv3x3(stride)-bn-relu,
/// conv1x1 (planes * 4)-bn, + shortcut ("downsample": 1x1 conv-bn when the shape changes).
class BottleneckImpl : public torch::nn::Module {
 public:
  static constexpr int64_t kExpansion = 4;
  BottleneckImpl(int64_t in_planes, int64_t planes, int64_t stride);
  torch::Tensor forward(torch::Tensor x);

 private:
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr}, conv3_{nullptr};
  torch::nn::BatchNorm2d bn1_{nullptr}, bn2_{nullptr}, bn3_{nullptr};
  torch::nn::Sequential downsample_{nullptr};
};
TORCH_MODULE(Bottleneck);

struct SmallResNetOptions {
  SmallResNetOptions(int64_t in_channels, int64_t num_classes)
      : in_channels_(in_channels), num_classes_(num_classes) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, num_classes);
  TORCH_ARG(std::vector<int64_t>, widths) = {32, 64, 128};  ///< one stage each
  TORCH_ARG(std::vector<int64_t>, blocks) = {1, 1, 1};      ///< blocks per stage
  /// The features: the global-average-pooled output of the last N stages.
  /// N = 1 (default): the last stage's, as torchvision. N > 1: each stage's
  /// pooled vector L2-normalised, then concatenated (a Head2Toe-like read-out,
  /// Evci et al. 2022: earlier stages keep detail the last one pools away;
  /// the normalisation stops the widest stage from dominating). Adds no
  /// parameters, so weights load as for N = 1; the head's width changes.
  TORCH_ARG(int64_t, pool_stages) = 1;
};

class SmallResNetImpl : public ClassifierImpl {
 public:
  explicit SmallResNetImpl(const SmallResNetOptions& options);
  torch::Tensor forward_features(torch::Tensor x) override;
  int64_t num_features() const override { return num_features_; }
  std::string head_name() const override { return "fc"; }
  /// stem (conv1, bn1), layer1..layerN.
  std::vector<ParamStage> backbone_stages() const override;
  /// Number of residual stages (layer1..layerN).
  int64_t num_stages() const { return static_cast<int64_t>(layers_.size()); }

 private:
  torch::nn::Conv2d conv1_{nullptr};
  torch::nn::BatchNorm2d bn1_{nullptr};
  std::vector<torch::nn::Sequential> layers_;
  int64_t num_features_;
  int64_t pool_stages_;
};
TORCH_MODULE(SmallResNet);

/// Factory for the registry ("resnet"); arch options: widths, blocks, pool_stages.
Classifier make_small_resnet(const ModelOptions& options);
/// Its state-dict size without building it (see model_size).
ModelSize small_resnet_size(const ModelOptions& options);

struct ResNetOptions {
  ResNetOptions(int64_t in_channels, int64_t num_classes)
      : in_channels_(in_channels), num_classes_(num_classes) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, num_classes);
  /// Blocks in layer1..layer4: {2,2,2,2} resnet18, {3,4,6,3} resnet34/50.
  TORCH_ARG(std::vector<int64_t>, layers) = {2, 2, 2, 2};
  /// Bottleneck blocks (resnet50) instead of BasicBlocks.
  TORCH_ARG(bool, bottleneck) = false;
  /// Replaces the 7x7 stride-2 stem and the max-pool by one 3x3 stride-1 conv
  /// (for 28x28 / 32x32 inputs). Changes the shape of conv1.weight.
  TORCH_ARG(bool, small_input) = false;
};

/// torchvision.models.ResNet: conv1-bn1-relu-maxpool, layer1..layer4 (widths
/// 64, 128, 256, 512 x expansion), global average pool, fc. Module names and
/// state-dict keys are torchvision's (relu and maxpool are registered too; they
/// hold no tensors).
class ResNetImpl : public ClassifierImpl {
 public:
  explicit ResNetImpl(const ResNetOptions& options);
  torch::Tensor forward_features(torch::Tensor x) override;
  int64_t num_features() const override { return num_features_; }
  std::string head_name() const override { return "fc"; }
  /// stem (conv1, bn1), layer1..layer4.
  std::vector<ParamStage> backbone_stages() const override;
  /// Number of residual stages (layer1..layer4).
  int64_t num_stages() const { return static_cast<int64_t>(layers_.size()); }
  /// Stage i (0-based), i.e. torchvision's layer{i+1}.
  torch::nn::Sequential stage(int64_t i) const { return layers_.at(static_cast<size_t>(i)); }
  const ResNetOptions& options() const { return options_; }

 private:
  ResNetOptions options_;
  torch::nn::Conv2d conv1_{nullptr};
  torch::nn::BatchNorm2d bn1_{nullptr};
  torch::nn::MaxPool2d maxpool_{nullptr};
  std::vector<torch::nn::Sequential> layers_;
  int64_t num_features_;
};
TORCH_MODULE(ResNet);

/// Factories for the registry ("resnet18", "resnet34", "resnet50"); arch option:
/// small_input (bool, default false).
Classifier make_resnet18(const ModelOptions& options);
Classifier make_resnet34(const ModelOptions& options);
Classifier make_resnet50(const ModelOptions& options);
/// Their state-dict sizes without building them (see model_size).
ModelSize resnet18_size(const ModelOptions& options);
ModelSize resnet34_size(const ModelOptions& options);
ModelSize resnet50_size(const ModelOptions& options);

}  // namespace xfer::models
